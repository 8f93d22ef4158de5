"""ingest-dicom when the machine fails under it: a full disk, a Prefect API that drops out.

Real failures, not mocks: the lake sits on a small tmpfs that really runs out of space
(mounting one needs root or CAP_SYS_ADMIN, which CI has; elsewhere the test is skipped,
never faked), and the Prefect API is reached through a proxy that really resets its TCP
connections for a while.
"""

from __future__ import annotations

import subprocess
from pathlib import Path

import polars as pl
import pytest
from PIL import Image

pytestmark = pytest.mark.e2e


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


def _task_runs(flow_run_id) -> list:  # noqa: ANN001 - a UUID
    from prefect.client.orchestration import get_client
    from prefect.client.schemas.filters import FlowRunFilter, FlowRunFilterId

    with get_client(sync_client=True) as client:
        return client.read_task_runs(flow_run_filter=FlowRunFilter(id=FlowRunFilterId(any_=[flow_run_id])))


def test_a_full_disk_fails_the_run_clearly_and_a_rerun_with_space_completes(
    prefect_server, synthetic_dir, small_disk, tmp_path, monkeypatch
):
    from flows.ingest import ingest_dicom
    from tasks.manifest import read_local_manifest

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
    failed = [t for t in _task_runs(state.state_details.flow_run_id) if t.state and t.state.is_failed()]
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
