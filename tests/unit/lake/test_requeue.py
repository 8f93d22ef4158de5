"""Quarantined objects go back to the queue: the manifest, then what the next run picks."""

from __future__ import annotations

import subprocess
import sys
from datetime import UTC, datetime, timedelta
from pathlib import Path

import polars as pl

from tasks.lake.tables import write_parquet_atomic
from tasks.lake.manifest import manifest_frame, pending_objects, processed_versions, read_local_manifest, requeue_frame
from tasks.lake.storage import ObjectInfo

ROOT = Path(__file__).resolve().parents[3]
T0 = datetime(2026, 1, 1, tzinfo=UTC)


def _lake(tmp_path: Path) -> tuple[Path, list[ObjectInfo]]:
    objects = [ObjectInfo("a.dcm", 10, "e1"), ObjectInfo("bad.dcm", 5, "e2"), ObjectInfo("s.zip", 9, "e3")]
    frame = manifest_frame(objects, batch_id="b1", hashes={}, quarantined=["bad.dcm", "s.zip!/x"], processed_at=T0)
    write_parquet_atomic(frame, tmp_path / "manifest" / "b1.parquet")
    return tmp_path, objects


def test_requeued_objects_are_pending_again_and_done_ones_are_not(tmp_path):
    lake, objects = _lake(tmp_path)
    assert pending_objects(objects, processed_versions(read_local_manifest(lake))) == []
    rows = requeue_frame(read_local_manifest(lake), ["bad.dcm", "a.dcm", "s.zip!/x"], requeued_at=T0 + timedelta(1))
    assert sorted(rows["key"]) == ["bad.dcm", "s.zip"]  # a.dcm was done: nothing to redo
    write_parquet_atomic(rows, lake / "manifest" / "requeue-1.parquet")
    pending = pending_objects(objects, processed_versions(read_local_manifest(lake)))
    assert [o.key for o in pending] == ["bad.dcm", "s.zip"]
    # once processed again, the newer row wins and they are done
    again = manifest_frame(pending, batch_id="b2", hashes={}, quarantined=[], processed_at=T0 + timedelta(2))
    write_parquet_atomic(again, lake / "manifest" / "b2.parquet")
    assert pending_objects(objects, processed_versions(read_local_manifest(lake))) == []


def test_errors_and_requeue_commands_on_a_lake(tmp_path):
    lake, _ = _lake(tmp_path)
    errors = pl.DataFrame(
        {"source_key": ["bad.dcm"], "stage": ["extract"], "reason": ["not_dicom"], "detail": ["no preamble"],
         "quarantine_key": ["quarantine/not_dicom/bad.dcm"], "ingested_at": [T0]}
    )
    write_parquet_atomic(errors, lake / "tables" / "ingest_errors" / "ingest_date=2026-01-01" / "x.parquet")
    run = lambda *a: subprocess.run([sys.executable, "-m", "flows", *a, "--lake", str(lake)],  # noqa: E731
                                    cwd=ROOT, capture_output=True, text=True, timeout=120)
    listed = run("errors")
    assert listed.returncode == 0 and "not_dicom" in listed.stdout and "bad.dcm" not in listed.stdout
    assert "bad.dcm" in run("errors", "--keys").stdout
    requeued = run("requeue", "--reason", "not_dicom")
    assert requeued.returncode == 0 and "requeued 1 objects" in requeued.stdout
    pending = pending_objects([ObjectInfo("bad.dcm", 5, "e2")], processed_versions(read_local_manifest(lake)))
    assert [o.key for o in pending] == ["bad.dcm"]


def test_an_error_is_resolved_once_its_file_is_extracted_later(tmp_path):
    from tasks.lake.quarantine import read_errors

    errors = pl.DataFrame({"source_key": ["a.dcm", "b.dcm"], "stage": ["extract"] * 2, "reason": ["not_dicom"] * 2,
                           "detail": ["x"] * 2, "quarantine_key": [None, None], "ingested_at": [T0, T0]})
    write_parquet_atomic(errors, tmp_path / "tables" / "ingest_errors" / "ingest_date=2026-01-01" / "e.parquet")
    assert read_errors(str(tmp_path))["source_key"].to_list() == ["a.dcm", "b.dcm"]  # a lake with no images yet
    images = pl.DataFrame({"source_key": ["a.dcm", "b.dcm"], "ingested_at": [T0 + timedelta(1), T0 - timedelta(1)]})
    write_parquet_atomic(images, tmp_path / "tables" / "images" / "ingest_date=2026-01-02" / "i.parquet")
    assert read_errors(str(tmp_path))["source_key"].to_list() == ["b.dcm"]  # a.dcm was fixed and extracted after
