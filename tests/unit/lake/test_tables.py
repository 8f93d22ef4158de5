"""The table registry: every table written to the lake is in it, and so gets its schema file and dbt source."""

from __future__ import annotations

from datetime import UTC, date, datetime
from pathlib import Path

import polars as pl
import pydicom
import pytest
import yaml

from tasks.dicom.entities import ALL_TABLES, ARCHIVES
from tasks.lake.tables import ensure_table_schemas, write_tables
from tasks.pixels.transcode import archive_batch

ROOT = Path(__file__).resolve().parents[3]


def test_a_table_missing_from_the_registry_is_not_written(tmp_path):
    frame = pl.DataFrame({"x": [1]})
    with pytest.raises(ValueError, match=r"\['unregistered'\] are not in the table registry"):
        write_tables(tmp_path, {"unregistered": frame}, ingest_date=date(2026, 1, 2), stage="extract", batch_id="b")
    assert not list(tmp_path.rglob("*.parquet"))


def test_every_registered_table_has_a_schema_file_and_a_raw_dbt_source(tmp_path):
    ensure_table_schemas(tmp_path)
    assert {p.parent.name for p in (tmp_path / "tables").glob("*/_empty.parquet")} == set(ALL_TABLES)
    sources = yaml.safe_load((ROOT / "dbt_project/models/staging/__sources.yml").read_text())["sources"]
    [raw] = [s for s in sources if s["name"] == "raw"]
    assert {t["name"] for t in raw["tables"]} == set(ALL_TABLES)


def test_archive_rows_are_written_with_the_registered_schema(pydicom_dir, tmp_path, secret):
    uid = pydicom.dcmread(pydicom_dir / "CT_small.dcm").SOPInstanceUID
    rows = archive_batch(tmp_path, [(pydicom_dir / "CT_small.dcm", "ct", uid)], secret=secret)
    at = datetime(2026, 1, 2, tzinfo=UTC)
    lineage = {"source_etag": None, "batch_id": "b", "ingested_at": at, "ingest_date": at.date()}
    frame = pl.DataFrame([r | lineage for r in rows], schema=ARCHIVES.schema)
    write_tables(tmp_path, {ARCHIVES.name: frame}, ingest_date=at.date(), stage="preview", batch_id="b")
    ensure_table_schemas(tmp_path)
    written = pl.read_parquet(tmp_path / f"tables/archives/ingest_date={at.date()}/preview-b.parquet")
    empty = pl.read_parquet(tmp_path / "tables/archives/_empty.parquet")
    assert written.schema == empty.schema
    assert written.select("SOPInstanceUID", "source_key", "status").rows() == [(uid, "ct", "archived")]


def test_partial_files_are_swept_only_after_a_run_that_did_not_finish(tmp_path):
    from tasks.lake.tables import begin_local_run, end_local_run

    lake = tmp_path / "lake"
    partial = lake / "raw" / "a" / ".x.dcm.partial"
    partial.parent.mkdir(parents=True)
    partial.write_bytes(b"cut short")
    # a lake from before run marks: swept once
    assert begin_local_run(lake, "first") == 1 and not partial.exists()
    end_local_run(lake, "first")
    # the last run finished: no walk of the lake (a partial file here would be another run's, in flight)
    partial.write_bytes(b"in flight")
    assert begin_local_run(lake, "second") == 0 and partial.exists()
    # "second" is killed: its mark stays, and the next run sweeps what it left
    assert begin_local_run(lake, "third") == 1 and not partial.exists()
    end_local_run(lake, "third")
    # and its mark is gone with what it left: the run after that walks nothing
    assert not list((lake / "_runs").iterdir())
    partial.write_bytes(b"in flight")
    assert begin_local_run(lake, "fourth") == 0 and partial.exists()
