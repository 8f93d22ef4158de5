"""Remote compression end to end: ingest-dicom hands batches to the compress-dicom deployment.

A real Prefect server (the session harness), a process work pool, a worker subprocess
polling it, the compress flow deployed from this checkout; ingest runs in deployment mode
and the previews must land in the lake, written by Completed compress-dicom runs.
"""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
import time
from pathlib import Path

import duckdb
import pytest

pytestmark = pytest.mark.e2e

REPO = Path(__file__).resolve().parents[2]
POOL = "dicom-compress-e2e"


@pytest.fixture(scope="module")
def worker(prefect_server, tmp_path_factory):
    """A process work pool, the compress-dicom/remote deployment on it, and a worker polling it."""
    from prefect.client.orchestration import get_client
    from prefect.client.schemas.actions import WorkPoolCreate
    from prefect.settings import PREFECT_API_URL

    from flows.compress import compress_dicom

    with get_client(sync_client=True) as client:
        client.create_work_pool(WorkPoolCreate(name=POOL, type="process"), overwrite=True)
    compress_dicom.from_source(source=str(REPO), entrypoint="flows/compress.py:compress_dicom").deploy(
        name="remote", work_pool_name=POOL, print_next_steps=False
    )
    log = (tmp_path_factory.mktemp("worker") / "worker.log").open("w")
    # polling every 2 s, not Prefect's default 10 s: each batch's run waits for a poll
    env = os.environ | {"PREFECT_API_URL": PREFECT_API_URL.value(), "PYTHONPATH": str(REPO),
                        "PREFECT_WORKER_QUERY_SECONDS": "2", "PREFECT_WORKER_PREFETCH_SECONDS": "5"}
    proc = subprocess.Popen(
        [sys.executable, "-m", "prefect", "worker", "start", "--pool", POOL, "--type", "process", "--limit", "2"],
        cwd=REPO,
        env=env,
        stdout=log,
        stderr=subprocess.STDOUT,
    )
    yield proc
    proc.terminate()
    try:
        proc.wait(timeout=20)
    except subprocess.TimeoutExpired:
        proc.kill()
    log.close()


def test_ingest_in_deployment_mode_renders_previews_on_the_worker(worker, synthetic_dir, pydicom_dir, tmp_path):
    from prefect.client.orchestration import get_client
    from prefect.client.schemas.filters import FlowFilter, FlowFilterName

    from blocks.settings import DicomPipelineSettings
    from flows.ingest import ingest_dicom

    source = tmp_path / "incoming"
    shutil.copytree(synthetic_dir, source / "synthetic")
    shutil.copy(pydicom_dir / "JPEG-lossy.dcm", source / "undecodable.dcm")  # pixel_decode
    lake = tmp_path / "lake"
    DicomPipelineSettings(
        source=str(source),
        lake=str(lake),
        warehouse=str(tmp_path / "wh.duckdb"),
        batch_size=13,  # 25 files: two batches, so two compress-dicom runs at once (the worker's limit)
        deid_secret="remote-e2e-secret",
        compression="deployment",
    ).save("compress-e2e", overwrite=True)

    started = time.monotonic()
    summary = ingest_dicom(settings_block="compress-e2e", run_dbt=False, transcode=True)
    assert time.monotonic() - started < 600

    n_pixel = duckdb.sql(
        f"select count(*) from read_parquet('{lake}/tables/images/**/*.parquet', union_by_name=true)"
        " where has_pixel_data"
    ).fetchone()[0]
    previews = duckdb.sql(
        f"select preview_key from read_parquet('{lake}/tables/previews/**/*.parquet', union_by_name=true)"
    ).fetchall()
    assert len(previews) == n_pixel - 1  # all but the undecodable one
    for (key,) in previews:
        assert (lake / key).read_bytes()[:2] == b"\xff\xd8"
    assert summary["raw_rows"]["previews"] == len(previews)
    assert summary["rejected"].get("pixel_decode") == 1
    archived = duckdb.sql(
        f"select archive_key from read_parquet('{lake}/tables/archives/**/*.parquet') where status = 'archived'"
    ).fetchall()
    assert archived and all((lake / k).is_file() for (k,) in archived)

    with get_client(sync_client=True) as client:
        runs = client.read_flow_runs(flow_filter=FlowFilter(name=FlowFilterName(any_=["compress-dicom"])))
    assert summary["batches"] == 2 and len(runs) >= summary["batches"]
    assert all(r.state is not None and r.state.is_completed() for r in runs)
