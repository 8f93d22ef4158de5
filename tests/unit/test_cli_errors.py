"""Bad input to `python -m flows`: one line on stderr naming the input and what to do, a non-zero exit.

Every case runs the real command line in a subprocess, all of them at once; none needs a
Prefect server (the checks run before one would be started), so the whole batch takes
the time of its slowest Python start.
"""

from __future__ import annotations

import os
from pathlib import Path

from tests.cli import one_line_failures


def _unwritable(tmp_path: Path) -> str:
    """A folder this process cannot write into: read-only for a user; /sys refuses even root."""
    if os.geteuid() == 0:
        return "/sys/dicom-etl-test-lake"
    folder = tmp_path / "read-only"
    folder.mkdir()
    folder.chmod(0o500)
    return str(folder / "lake")


def test_each_bad_input_is_one_line_and_a_non_zero_exit(tmp_path):
    a_file = tmp_path / "a-file"
    a_file.write_text("not a folder")
    source = tmp_path / "incoming"
    source.mkdir()
    src = ["--source", str(source)]
    cases = {
        # argv: (exit code, words the line must hold)
        ("ingest", *src, "--lake", _unwritable(tmp_path)): (2, ["lake", "--lake"]),
        ("ingest", *src, "--lake", str(a_file / "lake")): (2, [str(a_file / "lake"), "a file is in the way", "--lake"]),
        ("ingest", *src, "--since", "yesterday"): (2, ["--since", "'yesterday'", "2024-05-01"]),
        ("ingest", *src, "--since", "2024-13-01"): (2, ["--since", "'2024-13-01'", "month"]),
        ("ingest", *src, "--date", "2024/05/01"): (2, ["--date", "'2024/05/01'", "YYYY-MM-DD"]),
        ("ingest", *src, "--batch-size", "-5"): (2, ["--batch-size", "'-5'", "1 or more"]),
        ("ingest", *src, "--batch-size", "0"): (2, ["--batch-size", "'0'"]),
        ("ingest", "--source", str(source) + "/{date:%Y-%m-%d}"): (2, ["{date}", "--date"]),
        ("errors", "--lake", str(tmp_path / "no-lake")): (2, [str(tmp_path / "no-lake"), "--lake"]),
        ("requeue", "--lake", str(tmp_path / "no-lake")): (2, [str(tmp_path / "no-lake"), "--lake"]),
        ("warehouse", "--lake", str(tmp_path / "no-lake")): (2, [str(tmp_path / "no-lake"), "--lake"]),
        ("errors", "--lake", str(tmp_path), "--reason", "nope"): (2, ["'nope'", "pixel_decode"]),
        ("synth", "--out", str(a_file / "out")): (2, [str(a_file / "out"), "--out"]),
        ("demo", "--data-dir", str(a_file / "demo")): (2, [str(a_file / "demo"), "--data-dir"]),
    }
    env = os.environ | {"DICOM_ETL_DEID_SECRET": "x", "PREFECT_API_URL": "http://127.0.0.1:9/api"}
    env.pop("DICOM_ETL_SETTINGS_BLOCK", None)
    failures = one_line_failures(cases, env)
    assert not failures, "\n\n".join(failures)
