"""Bad input that only a Prefect server can tell: one stderr line naming it and what to do, non-zero exit.

The cases run at once through `python -m flows`, against the session's server (no
temporary server of their own, so nothing else reaches stderr).
"""

from __future__ import annotations

import os
import socket

import pytest

from tests.cli import one_line_failures

pytestmark = pytest.mark.integration


def _closed_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def test_unknown_settings_block_and_unreachable_snowflake_are_one_line(prefect_server, tmp_path):
    from prefect.settings import PREFECT_API_URL

    from blocks.settings import DicomPipelineSettings

    source, lake = tmp_path / "incoming", tmp_path / "lake"
    (lake / "tables").mkdir(parents=True)
    source.mkdir()
    port = _closed_port()
    DicomPipelineSettings(
        source=str(source), lake=str(lake), warehouse=str(tmp_path / "w.duckdb"), dbt_target="snowflake",
        snowflake_host="127.0.0.1", snowflake_port=port, snowflake_protocol="http", deid_secret="cli-errors",
    ).save("cli-errors-snowflake", overwrite=True)
    cases = {
        ("ingest", "--settings-block", "no-such-block", "--source", str(source)):
            (2, ["'no-such-block'", "cli-errors-snowflake", "blocks register"]),
        ("warehouse", "--settings-block", "cli-errors-snowflake"): (1, [f"127.0.0.1:{port}", "unreachable"]),
        ("ingest", "--settings-block", "cli-errors-snowflake"): (1, [f"127.0.0.1:{port}", "unreachable"]),
    }
    env = os.environ | {"PREFECT_API_URL": PREFECT_API_URL.value(), "DICOM_ETL_DEID_SECRET": "x"}
    env.pop("DICOM_ETL_SETTINGS_BLOCK", None)
    failures = one_line_failures(cases, env)
    assert not failures, "\n\n".join(failures)
    assert not list(lake.glob("manifest/*")), "nothing was ingested before Snowflake was found unreachable"
