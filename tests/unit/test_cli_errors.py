"""Bad input to `python -m flows`: one line on stderr naming the input and what to do, a non-zero exit.

Every case runs the command line's ``main`` in this process, as ``python -m flows`` calls
it; none needs a Prefect server (the checks run before one would be asked anything). Two
cases also run as real processes, at once: a usage error argparse exits on, and an error
raised after Prefect was imported (its exit-time workers must not add lines to stderr).
"""

from __future__ import annotations

import os
from pathlib import Path

import pytest

from tests.cli import one_line_failure, one_line_failures, run_main


def _unwritable(tmp_path: Path) -> str:
    """A folder this process cannot write into: read-only for a user; /sys refuses even root."""
    if os.geteuid() == 0:
        return "/sys/dicom-etl-test-lake"
    folder = tmp_path / "read-only"
    folder.mkdir()
    folder.chmod(0o500)
    return str(folder / "lake")


@pytest.fixture
def bad_inputs(tmp_path, monkeypatch) -> dict:
    """argv: (exit code, words the one stderr line must hold); the environment a user without a server has."""
    monkeypatch.setenv("DICOM_ETL_DEID_SECRET", "x")
    monkeypatch.setenv("PREFECT_API_URL", "http://127.0.0.1:9/api")
    monkeypatch.delenv("DICOM_ETL_SETTINGS_BLOCK", raising=False)
    a_file = tmp_path / "a-file"
    a_file.write_text("not a folder")
    source = tmp_path / "incoming"
    source.mkdir()
    src = ["--source", str(source)]
    return {
        ("ingest", *src, "--lake", _unwritable(tmp_path)): (2, ["lake", "--lake"]),
        ("ingest", *src, "--lake", str(a_file / "lake")): (2, [str(a_file / "lake"), "a file is in the way", "--lake"]),
        ("ingest", "--source", str(tmp_path / "missing"), "--no-dbt"): (2, [str(tmp_path / "missing"), "does not exist", "--source"]),
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


def test_each_bad_input_is_one_line_and_a_non_zero_exit(bad_inputs, capsys):
    failures = []
    for argv, (code, words) in bad_inputs.items():
        failure = one_line_failure(argv, code, words, run_main(argv, capsys))
        if failure:
            failures.append(failure)
    assert not failures, "\n\n".join(failures)


def test_a_real_process_prints_the_one_line_and_exits_with_its_code(bad_inputs):
    cases = {argv: want for argv, want in bad_inputs.items() if argv[-2:] == ("--batch-size", "-5") or "--no-dbt" in argv}
    assert len(cases) == 2
    failures = one_line_failures(cases, dict(os.environ))
    assert not failures, "\n\n".join(failures)
