"""The ingest-dicom flow end to end on a real Prefect server, local folder -> DuckDB."""

from __future__ import annotations

import shutil
from pathlib import Path

import duckdb
import pydicom
import pytest

from tasks.lake.storage import list_local_objects
from tasks.warehouse.dbt import PROCESSED_TABLES

pytestmark = pytest.mark.e2e


@pytest.fixture(scope="module")
def ingested(prefect_server, pydicom_dir, synthetic_dir, tmp_path_factory):
    """Run the flow once on pydicom's test files + the synthetic set; return paths and summaries."""
    from flows.ingest import ingest_dicom

    root = tmp_path_factory.mktemp("e2e")
    source = root / "incoming"
    shutil.copytree(pydicom_dir, source / "pydicom")
    shutil.copytree(synthetic_dir, source / "synthetic")
    mp = pytest.MonkeyPatch()
    mp.setenv("DICOM_ETL_DEID_SECRET", "e2e-secret")
    lake, warehouse = root / "lake", root / "warehouse.duckdb"
    first = ingest_dicom(source=str(source), lake=str(lake), warehouse=str(warehouse), batch_size=60)
    second = ingest_dicom(source=str(source), lake=str(lake), warehouse=str(warehouse), batch_size=60)
    yield {"source": source, "lake": lake, "warehouse": warehouse, "first": first, "second": second}
    mp.undo()


def _raw(lake: Path, table: str, columns: str = "*", where: str = "true") -> list[tuple]:
    return duckdb.sql(
        f"select {columns} from read_parquet('{lake}/tables/{table}/**/*.parquet', union_by_name=true)"
        f" where {where}"
    ).fetchall()


def test_every_input_file_is_in_images_or_ingest_errors(ingested):
    keys = {o.key for o in list_local_objects(ingested["source"])}
    images = {r[0] for r in _raw(ingested["lake"], "images", "distinct source_key")}
    errors = {r[0] for r in _raw(ingested["lake"], "ingest_errors", "distinct source_key",
                                 "stage = 'extract' and reason <> 'duplicate_conflict'")}
    assert images | errors == keys
    assert images.isdisjoint(errors)
    reasons = {r[0] for r in _raw(ingested["lake"], "ingest_errors", "distinct reason")}
    assert {"truncated", "not_dicom", "dicomdir", "pixel_decode"} <= reasons
    for (qkey,) in _raw(ingested["lake"], "ingest_errors", "quarantine_key", "stage = 'extract'"):
        assert (ingested["lake"] / qkey).is_file()


def test_processed_tables_exist_with_rows(ingested):
    with duckdb.connect(str(ingested["warehouse"]), read_only=True) as con:
        for table in PROCESSED_TABLES:
            assert con.sql(f"select count(*) from processed.{table}").fetchone()[0] > 0, table
        n_images = con.sql("select count(*) from processed.images").fetchone()[0]
        n_stage = con.sql("select count(distinct sop_instance_uid) from stage.stg_images").fetchone()[0]
    assert n_images == n_stage
    assert ingested["first"]["warehouse_rows"]["patients"] >= 3


def test_previews_join_through_the_sql_hmac(ingested):
    """processed_images finds previews by the pseudonym computed in SQL; the file was named in Python."""
    with duckdb.connect(str(ingested["warehouse"]), read_only=True) as con:
        rows = con.sql(
            "select preview_key, preview_width from processed.processed_images where preview_key is not null"
        ).fetchall()
        with_pixels = con.sql("select count(*) from processed.processed_images where has_pixel_data").fetchone()[0]
    undecodable = len(_raw(ingested["lake"], "ingest_errors", "distinct SOPInstanceUID", "reason = 'pixel_decode'"))
    assert 0 < with_pixels - undecodable <= len(rows) <= with_pixels
    for key, width in rows:
        assert (ingested["lake"] / key).is_file() and width > 0


def test_a_second_run_duplicates_nothing(ingested):
    assert ingested["second"]["warehouse_rows"] == ingested["first"]["warehouse_rows"]
    with duckdb.connect(str(ingested["warehouse"]), read_only=True) as con:
        dupes = con.sql(
            "select count(*) - count(distinct sop_instance_pseudo_uid) from processed.images"
        ).fetchone()[0]
    assert dupes == 0


def test_a_run_with_nothing_new_starts_no_warehouse_build(ingested):
    from flows.ingest import ingest_dicom
    from tests.runs import task_runs

    state = ingest_dicom(
        source=str(ingested["source"]), lake=str(ingested["lake"]), warehouse=str(ingested["warehouse"]), return_state=True
    )
    summary = state.result()
    assert summary["files"] == 0
    assert summary["warehouse_rows"] == ingested["first"]["warehouse_rows"]  # still reported, from the warehouse
    names = [t.name for t in task_runs(state.state_details.flow_run_id)]
    assert any(n.startswith("list-source") for n in names), names
    assert not any(n.startswith("build-warehouse") for n in names), names  # no subflow: the warehouse was current


def test_processed_layer_holds_no_phi_of_the_synthetic_patients(ingested):
    phi: set[str] = set()
    for path in (ingested["source"] / "synthetic").rglob("*"):
        if path.is_file():
            ds = pydicom.dcmread(path, stop_before_pixels=True)
            phi |= {str(ds.PatientName), ds.PatientID, ds.AccessionNumber, ds.PatientBirthDate, ds.StudyDate,
                    ds.SOPInstanceUID, ds.StudyInstanceUID, ds.SeriesInstanceUID, ds.InstitutionName,
                    str(ds.ReferringPhysicianName), ds.DeviceSerialNumber, ds.StationName}
    found = []
    with duckdb.connect(str(ingested["warehouse"]), read_only=True) as con:
        for table in PROCESSED_TABLES:
            for row in con.sql(f"select * from processed.{table}").fetchall():
                text = "|".join(str(v) for v in row)
                found += [(table, v) for v in phi if v and v in text]
    assert not found, found[:5]


def test_thousands_of_files_in_one_folder(prefect_server, pydicom_dir, tmp_path, monkeypatch):
    """3,000 files side by side in one folder: listed, batched, every one accounted for, once."""
    from flows.ingest import ingest_dicom

    monkeypatch.setenv("DICOM_ETL_DEID_SECRET", "e2e-secret")
    flat = tmp_path / "flat"
    flat.mkdir()
    template = (pydicom_dir / "CT_small.dcm").read_bytes()
    for i in range(2999):
        (flat / f"{i:05d}.dcm").write_bytes(template)  # identical copies: not conflicts, one row each
    (flat / "zz-not-dicom.dcm").write_bytes(b"not a DICOM file")
    lake = tmp_path / "lake"
    # listing, batching and accounting are the point: no previews (2,999 renders of one image)
    summary = ingest_dicom(source=str(flat), lake=str(lake), run_dbt=False, previews=False)
    assert summary["listed"] == summary["files"] == 3000
    assert summary["raw_rows"]["images"] == 2999
    assert summary["rejected"] == {"not_dicom": 1}
    [(keys, distinct)] = _raw(lake, "images", "count(*), count(distinct source_key)")
    assert keys == distinct == 2999
    assert ingest_dicom(source=str(flat), lake=str(lake), run_dbt=False, previews=False)["files"] == 0
