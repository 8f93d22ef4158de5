"""Two pytest-xdist workers (``-n 2`` in pyproject.toml) on one Prefect server.

The suite's time is mostly waiting: on flow runs in other processes, on process workers
polling, on dbt. One worker left a core idle half the time; two share it.

- **One Prefect server per session.** The controller starts it (``prefect server start``
  on a free port, its own PREFECT_HOME) before the workers exist, and stops it at the end.
  The workers find it in ``DICOM_ETL_TEST_PREFECT_API_URL`` and wait for it only when a test
  needs it: its 20-30 s start runs beside the first tests. A selection of unit tests
  (``-m unit``, ``tests/unit``) starts no server. ``-n 0`` runs in one process on Prefect's
  test harness, as before.
- **Modules that must not run at the same time run in the same worker**, one after the
  other (:data:`TOGETHER`). Every other module is a unit of its own.
- **The longest first** (:data:`SECONDS`): a worker that finishes early takes the next
  longest module, so the two end close together.

Each worker has its own moto (tests name their buckets and queues without a worker
prefix) and the Snowflake module its fakesnow.
"""

from __future__ import annotations

import os
import shutil
import tempfile
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]

#: Modules that run in one worker, one after the other.
TOGETHER = {
    # the deployment module's automations react to the arrival events the bridge and the
    # watcher send; it deletes them when it ends
    "tests/e2e/test_deployments.py": "deployments",
    "tests/integration/test_bridge.py": "deployments",
    "tests/integration/test_cli_signals.py": "deployments",
    # readers of the session's DuckDB build (`duckdb_built`, seven dbt runs): built once
    "tests/integration/test_dbt_duckdb.py": "duckdb-build",
    "tests/integration/test_dbt_phi_scan.py": "duckdb-build",
    "tests/integration/test_deid_export.py": "duckdb-build",
}

#: Seconds each unit took in one process (`--durations`, 2026-12-04), handed out longest
#: first. Units not listed (a few seconds each) come after these, in collection order.
SECONDS = {
    "deployments": 200,
    "tests/integration/test_snowflake.py": 115,
    "tests/e2e/test_crash_resume.py": 95,
    "duckdb-build": 80,
    "tests/integration/test_s3_ingest.py": 80,
    "tests/integration/test_dbt_runs.py": 40,
    "tests/e2e/test_resilience.py": 30,
    "tests/e2e/test_ingest_flow.py": 30,
    "tests/integration/test_dask.py": 26,
    "tests/integration/test_source_keys.py": 20,
    "tests/integration/test_large_files.py": 15,
}


def unit_of(nodeid: str) -> str:
    """The scheduling unit of a test: its module, or the group its module runs in."""
    module = nodeid.split("::", 1)[0]
    return TOGETHER.get(module, module)


def _is_worker() -> bool:
    return "PYTEST_XDIST_WORKER" in os.environ


def _needs_server(config: pytest.Config) -> bool:
    """False for a run of unit tests only (``-m unit``, paths under tests/unit)."""
    if (config.getoption("markexpr", "") or "").strip() == "unit":
        return False
    unit = (ROOT / "tests" / "unit").resolve()
    paths = [Path(arg.split("::", 1)[0]).resolve() for arg in config.args]
    return not paths or not all(p == unit or unit in p.parents for p in paths)


def pytest_configure(config: pytest.Config) -> None:
    if _is_worker() or not getattr(config.option, "numprocesses", None):
        return
    if os.environ.get("DICOM_ETL_TEST_PREFECT_API_URL") or not _needs_server(config):
        return
    from flows.cli import spawn_server

    home = Path(tempfile.mkdtemp(prefix="dicom-etl-test-prefect-"))
    log = open(home / "server.log", "w")  # noqa: SIM115 - closed in pytest_unconfigure
    proc, api = spawn_server(home, log, PREFECT_UI_ENABLED="false")
    config.stash[_SERVER] = (proc, log, home)
    # the workers, started after this hook, inherit these
    os.environ["DICOM_ETL_TEST_PREFECT_API_URL"] = api
    os.environ["DICOM_ETL_TEST_PREFECT_SERVER_LOG"] = str(home / "server.log")


def pytest_unconfigure(config: pytest.Config) -> None:
    server = config.stash.get(_SERVER, None)
    if server is None:
        return
    from tests.cli import stop

    proc, log, home = server
    stop(proc, log)
    shutil.rmtree(home, ignore_errors=True)
    os.environ.pop("DICOM_ETL_TEST_PREFECT_API_URL", None)
    os.environ.pop("DICOM_ETL_TEST_PREFECT_SERVER_LOG", None)


_SERVER = pytest.StashKey[tuple]()


def wait_for_server(url: str, timeout: float = 300) -> None:
    """Until the Prefect API at ``url`` answers its health check (fails the test with its log if not)."""
    from flows.cli import wait_for_api

    if wait_for_api(url, timeout):
        return
    log = os.environ.get("DICOM_ETL_TEST_PREFECT_SERVER_LOG")
    tail = Path(log).read_text()[-3000:] if log and Path(log).exists() else ""
    pytest.fail(f"the Prefect server at {url} did not answer within {timeout:.0f} s\n{tail}")


@pytest.hookimpl(trylast=True)
def pytest_collection_modifyitems(items: list[pytest.Item]) -> None:
    """In a worker: each unit's tests together, the longest units first (a stable sort)."""
    if not _is_worker():
        return
    first = {}
    for i, item in enumerate(items):
        first.setdefault(unit_of(item.nodeid), i)
    items.sort(key=lambda item: (-SECONDS.get(unit_of(item.nodeid), 0), first[unit_of(item.nodeid)]))


def pytest_xdist_make_scheduler(config: pytest.Config, log):  # noqa: ANN001, ANN201 - xdist's Producer and scheduler
    """Whole units to a worker, in the order the workers collected them (longest first)."""
    from xdist.scheduler import LoadScopeScheduling

    class ByUnit(LoadScopeScheduling):
        def _split_scope(self, nodeid: str) -> str:
            return unit_of(nodeid)

    config.option.loadscopereorder = False
    return ByUnit(config, log)
