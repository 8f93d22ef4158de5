"""ingest-dicom when the machine fails under it: a full disk, a Prefect API that drops out.

Real failures, not mocks: the lake sits on a small tmpfs that really runs out of space
(mounting one needs root or CAP_SYS_ADMIN, which CI has; elsewhere the test is skipped,
never faked), and the Prefect API is reached through a proxy that really resets its TCP
connections for a while.
"""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path
from urllib.parse import urlparse

import polars as pl
import pytest
from PIL import Image

from tests.integration.fault_proxy import TcpFaultProxy
from tests.runs import flow_run_into, task_runs

pytestmark = pytest.mark.e2e
ROOT = Path(__file__).resolve().parents[2]


def _disk_usage(root: Path) -> int:
    return sum(-(-p.stat().st_size // 4096) * 4096 for p in root.rglob("*") if p.is_file())


@pytest.fixture
def small_disk(tmp_path):
    """A real tmpfs mounted on a folder, and a function to resize it (bytes)."""
    mount = tmp_path / "disk"
    mount.mkdir()
    done = subprocess.run(["mount", "-t", "tmpfs", "-o", "size=64k", "tmpfs", str(mount)], capture_output=True, text=True)
    if done.returncode:
        pytest.skip(f"cannot mount a tmpfs ({done.stderr.strip()}): this test fills a real disk and needs root")

    def resize(size: int) -> None:
        subprocess.run(["mount", "-o", f"remount,size={size}", str(mount)], check=True)

    yield mount, resize
    subprocess.run(["umount", "--lazy", str(mount)], check=False)


def _lake_rows(lake: Path) -> pl.DataFrame:
    return pl.read_parquet(lake / "tables" / "images" / "**" / "*.parquet").select("source_key", "SOPInstanceUID").sort("source_key")


def test_a_full_disk_fails_the_run_clearly_and_a_rerun_with_space_completes(
    prefect_server, synthetic_dir, small_disk, tmp_path, monkeypatch
):
    from flows.ingest import ingest_dicom
    from tasks.lake.manifest import read_local_manifest

    disk, resize = small_disk
    monkeypatch.setenv("DICOM_ETL_DEID_SECRET", "disk-secret")
    args = {"source": str(synthetic_dir), "batch_size": 6, "run_dbt": False}
    clean = tmp_path / "clean"
    ingest_dicom(lake=str(clean), **args)
    resize(_disk_usage(clean) // 2)  # room for about half the lake

    lake = disk / "lake"
    state = ingest_dicom(lake=str(lake), **args, return_state=True)
    assert state.is_failed()
    assert "disk is full" in state.message and str(lake) in state.message, state.message
    failed = [t for t in task_runs(state.state_details.flow_run_id) if t.state and t.state.is_failed()]
    assert failed and all(t.run_count == 1 for t in failed)  # a full disk is not retried with backoff
    # nothing half-written: no temporaries left, every file under a real name is whole
    assert not [p for p in lake.rglob("*") if p.name.endswith(".partial")]
    for path in (lake / "tables").rglob("*.parquet"):
        pl.read_parquet(path)
    for path in (lake / "previews").rglob("*.jpg"):
        Image.open(path).verify()
    for path in (lake / "raw").rglob("*"):
        if path.is_file():
            assert path.read_bytes() == (synthetic_dir / path.relative_to(lake / "raw")).read_bytes()
    # a batch cut short is not in the manifest; what the manifest holds has its rows
    recorded = set(read_local_manifest(lake)["key"])
    assert recorded < set(_lake_rows(clean)["source_key"])
    if recorded:
        assert recorded <= set(_lake_rows(lake)["source_key"])

    resize(_disk_usage(clean) * 4)
    again = ingest_dicom(lake=str(lake), **args)
    assert again["files"] == len(_lake_rows(clean)) - len(recorded)
    assert _lake_rows(lake).equals(_lake_rows(clean))  # the same rows, none doubled
    assert set(read_local_manifest(lake)["key"]) == set(_lake_rows(clean)["source_key"])


def test_a_disk_full_before_any_extraction_names_the_disk_not_a_pending_task(prefect_server, synthetic_dir, small_disk, monkeypatch):
    """Staging fails on every batch, so no extraction ever runs: the run's failure is the
    disk's, not the "Run is in PENDING state" of an extraction that never started."""
    from flows.ingest import ingest_dicom

    disk, _ = small_disk  # 64 kB: room for the lake's skeleton, not for a batch's raw copies
    monkeypatch.setenv("DICOM_ETL_DEID_SECRET", "disk-secret")
    lake = disk / "lake"
    state = ingest_dicom(source=str(synthetic_dir), lake=str(lake), batch_size=6, run_dbt=False, return_state=True)
    assert state.is_failed()
    assert "disk is full" in state.message and str(lake) in state.message, state.message


# --- the Prefect API drops out mid-run ----------------------------------------------------
# An ingest of the synthetic set sends ~37 kB to the API; the outages start after 15 kB.


@pytest.fixture
def api_proxy(prefect_server):
    """A TCP proxy in front of the session's Prefect server, and the API URL through it."""
    from prefect.settings import PREFECT_API_URL

    api = urlparse(PREFECT_API_URL.value())
    with TcpFaultProxy((api.hostname, api.port)) as proxy:
        yield proxy, f"{proxy.url}{api.path}"


def _ingest(api_url: str, source: Path, lake: Path, **env: str) -> subprocess.CompletedProcess:
    """``python -m flows ingest`` in its own process, reporting to ``api_url``."""
    cmd = [sys.executable, "-m", "flows", "ingest", "--source", str(source), "--lake", str(lake),
           "--batch-size", "6", "--no-dbt"]
    env = {**os.environ, "PREFECT_API_URL": api_url, "DICOM_ETL_DEID_SECRET": "api-secret", "PYTHONPATH": str(ROOT), **env}
    return subprocess.run(cmd, cwd=ROOT, env=env, capture_output=True, text=True, timeout=300)


def _complete_lake(lake: Path, source: Path) -> None:
    """Every source file once in images and in the manifest, each preview whole."""
    from tasks.lake.manifest import read_local_manifest

    keys = {p.relative_to(source).as_posix() for p in source.rglob("*") if p.is_file()}
    images = _lake_rows(lake)["source_key"]
    assert images.n_unique() == images.len() and set(images) == keys  # nothing lost, nothing doubled
    assert set(read_local_manifest(lake)["key"]) == keys
    previews = pl.read_parquet(lake / "tables" / "previews" / "**" / "*.parquet")
    assert previews["SOPInstanceUID"].n_unique() == previews.height == len(keys)
    assert not [p for p in lake.rglob("*") if p.name.endswith(".partial")]


def test_a_prefect_api_blip_mid_run_is_absorbed_by_the_client(api_proxy, synthetic_dir, tmp_path):
    """3 s of reset connections: Prefect's client retries (PREFECT_CLIENT_MAX_RETRIES, 2-4-8... s) carry the run."""
    proxy, api_url = api_proxy
    proxy.outage(3, after_bytes=15_000)
    run = _ingest(api_url, synthetic_dir, tmp_path / "lake")
    assert run.returncode == 0, run.stderr[-3000:]
    assert proxy.resets > 0
    _complete_lake(tmp_path / "lake", synthetic_dir)
    flow_run = flow_run_into(tmp_path / "lake")
    assert flow_run.state_name == "Completed"
    assert {t.state_name for t in task_runs(flow_run.id)} == {"Completed"}  # the UI tells the truth too


def test_when_the_prefect_client_gives_up_the_run_fails_loudly_and_a_rerun_completes(api_proxy, synthetic_dir, tmp_path):
    """A client that does not retry (PREFECT_CLIENT_MAX_RETRIES=0) stands in for an outage longer than its retries."""
    proxy, api_url = api_proxy
    proxy.outage(30, after_bytes=15_000)
    failed = _ingest(api_url, synthetic_dir, tmp_path / "lake", PREFECT_CLIENT_MAX_RETRIES="0")
    proxy.clear()
    assert failed.returncode != 0
    [error] = [line for line in failed.stderr.splitlines() if line.startswith("error: ")] or [failed.stderr[-3000:]]
    assert error.startswith("error: lost the Prefect API") and api_url in error and "run the same command again" in error, error
    again = _ingest(api_url, synthetic_dir, tmp_path / "lake")
    assert again.returncode == 0, again.stderr[-3000:]
    _complete_lake(tmp_path / "lake", synthetic_dir)
