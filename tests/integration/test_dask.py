"""The batch fan-out on a Dask cluster (prefect-dask) gives the same rows as threads."""

from __future__ import annotations

import os
from pathlib import Path

import duckdb
import pytest

pytestmark = pytest.mark.integration

ROOT = Path(__file__).resolve().parents[2]


def _rows(lake: Path, table: str, columns: str) -> set[tuple]:
    return set(
        duckdb.sql(
            f"select {columns} from read_parquet('{lake}/tables/{table}/**/*.parquet', union_by_name=true)"
        ).fetchall()
    )


def test_ingest_on_a_dask_cluster_matches_threads(prefect_server, synthetic_dir, tmp_path, monkeypatch):
    distributed = pytest.importorskip("distributed")
    from flows.ingest import ingest_dicom
    from flows.runners import batch_task_runner

    monkeypatch.setenv("DICOM_ETL_DEID_SECRET", "dask-secret")
    # worker processes import the project's modules and report to the same Prefect API
    monkeypatch.setenv("PYTHONPATH", os.pathsep.join(filter(None, [str(ROOT), os.environ.get("PYTHONPATH")])))
    from prefect.settings import PREFECT_API_URL

    monkeypatch.setenv("PREFECT_API_URL", PREFECT_API_URL.value())
    with distributed.LocalCluster(n_workers=2, threads_per_worker=1, processes=True, dashboard_address=None) as cluster:
        on_dask = ingest_dicom.with_options(task_runner=batch_task_runner(cluster.scheduler_address))(
            source=str(synthetic_dir), lake=str(tmp_path / "dask"), batch_size=5, run_dbt=False
        )
    on_threads = ingest_dicom(source=str(synthetic_dir), lake=str(tmp_path / "threads"), batch_size=5, run_dbt=False)

    assert on_dask["raw_rows"] == on_threads["raw_rows"]
    assert on_dask["batches"] == on_threads["batches"] > 1
    for table, columns in [("images", "source_key, SOPInstanceUID, content_hash"), ("patients", "PatientID"),
                           ("series", "SeriesInstanceUID, device_key"), ("previews", "SOPInstanceUID, preview_key")]:
        dask_rows = _rows(tmp_path / "dask", table, columns)
        assert dask_rows and dask_rows == _rows(tmp_path / "threads", table, columns), table
