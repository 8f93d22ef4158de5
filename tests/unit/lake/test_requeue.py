"""Quarantined objects go back to the queue: the manifest, then what the next run picks."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from pathlib import Path

import polars as pl

from tasks.lake.tables import write_parquet_atomic
from tasks.lake.manifest import manifest_frame, pending_objects, processed_versions, read_local_manifest, requeue_frame
from tasks.lake.storage import ObjectInfo

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


def test_errors_and_requeue_commands_on_a_lake(tmp_path, capsys):
    from tests.cli import run_main

    lake, _ = _lake(tmp_path)
    errors = pl.DataFrame(
        {"source_key": ["bad.dcm"], "stage": ["extract"], "reason": ["not_dicom"], "detail": ["no preamble"],
         "quarantine_key": ["quarantine/not_dicom/bad.dcm"], "ingested_at": [T0]}
    )
    write_parquet_atomic(errors, lake / "tables" / "ingest_errors" / "ingest_date=2026-01-01" / "x.parquet")
    run = lambda *a: run_main([*a, "--lake", str(lake)], capsys)  # noqa: E731 - (exit code, stdout, stderr)
    code, out, _ = run("errors")
    assert code == 0 and "not_dicom" in out and "bad.dcm" not in out
    assert "bad.dcm" in run("errors", "--keys")[1]
    code, out, _ = run("requeue", "--reason", "not_dicom")
    assert code == 0 and "requeued 1 object;" in out
    pending = pending_objects([ObjectInfo("bad.dcm", 5, "e2")], processed_versions(read_local_manifest(lake)))
    assert [o.key for o in pending] == ["bad.dcm"]


def test_an_error_is_resolved_once_its_file_is_extracted_later(tmp_path):
    from tasks.lake.quarantine import read_errors

    errors = pl.DataFrame({"source_key": ["a.dcm", "b.dcm"], "stage": ["extract"] * 2, "reason": ["not_dicom"] * 2,
                           "detail": ["x"] * 2, "quarantine_key": [None, None], "ingested_at": [T0, T0]})
    write_parquet_atomic(errors, tmp_path / "tables" / "ingest_errors" / "ingest_date=2026-01-01" / "e.parquet")
    assert read_errors(str(tmp_path))["source_key"].to_list() == ["a.dcm", "b.dcm"]  # a lake with no images yet
    images = pl.DataFrame({"source_key": ["a.dcm", "b.dcm"], "SOPInstanceUID": ["1.2.1", "1.2.2"],
                           "content_hash": ["h1", "h2"], "ingested_at": [T0 + timedelta(1), T0 - timedelta(1)]})
    write_parquet_atomic(images, tmp_path / "tables" / "images" / "ingest_date=2026-01-02" / "i.parquet")
    assert read_errors(str(tmp_path))["source_key"].to_list() == ["b.dcm"]  # a.dcm was fixed and extracted after


def _write(frame: pl.DataFrame, lake: Path, table: str, name: str) -> None:
    write_parquet_atomic(frame, lake / "tables" / table / "ingest_date=2026-01-01" / f"{name}.parquet")


def _images(keys: list[str], uids: list[str], hashes: list[str], at: datetime) -> pl.DataFrame:
    return pl.DataFrame({"source_key": keys, "SOPInstanceUID": uids, "content_hash": hashes, "ingested_at": [at] * len(keys)})


def test_requeue_by_reason_takes_files_done_with_a_pixel_decode_error(tmp_path, capsys):
    from flows.cli import main

    objects = [ObjectInfo("p.dcm", 10, "e1"), ObjectInfo("ok.dcm", 10, "e2")]
    write_parquet_atomic(manifest_frame(objects, batch_id="b1", hashes={}, quarantined=[], processed_at=T0),
                         tmp_path / "manifest" / "b1.parquet")
    _write(_images(["p.dcm", "ok.dcm"], ["1.1", "1.2"], ["h1", "h2"], T0), tmp_path, "images", "i")
    _write(pl.DataFrame({"source_key": ["p.dcm"], "stage": ["preview"], "reason": ["pixel_decode"],
                         "detail": ["no decoder"], "quarantine_key": [None], "ingested_at": [T0]}),
           tmp_path, "ingest_errors", "e")
    assert main(["errors", "--lake", str(tmp_path)]) == 0 and "pixel_decode" in capsys.readouterr().out
    assert main(["requeue", "--lake", str(tmp_path), "--reason", "pixel_decode"]) == 0
    assert "requeued 1 object;" in capsys.readouterr().out
    pending = pending_objects(objects, processed_versions(read_local_manifest(tmp_path)))
    assert [o.key for o in pending] == ["p.dcm"]


def test_an_unknown_reason_lists_the_known_ones_and_exits_2(tmp_path, capsys):
    import pytest

    from flows.cli import main

    for command in ("errors", "requeue"):
        with pytest.raises(SystemExit) as exit_:
            main([command, "--lake", str(tmp_path), "--reason", "pixel_decod"])
        assert exit_.value.code == 2
        [line] = capsys.readouterr().err.splitlines()
        assert "'pixel_decod'" in line and "pixel_decode" in line and "not_dicom" in line


def test_duplicate_conflicts_do_not_depend_on_how_files_fell_into_batches(tmp_path):
    from tasks.lake.quarantine import read_errors

    one, two = tmp_path / "one_batch", tmp_path / "two_batches"
    keys, uids, hashes = ["a.dcm", "b.dcm", "c.dcm"], ["1.9", "1.9", "1.9"], ["h1", "h2", "h1"]
    # one batch saw the conflict and flagged b.dcm; the same files in two batches saw none
    _write(_images(keys, uids, hashes, T0), one, "images", "b1")
    _write(pl.DataFrame({"source_key": ["b.dcm"], "stage": ["extract"], "reason": ["duplicate_conflict"],
                         "detail": ["in batch"], "quarantine_key": [None], "ingested_at": [T0]}), one, "ingest_errors", "b1")
    _write(_images(keys[:1], uids[:1], hashes[:1], T0), two, "images", "b1")
    _write(_images(keys[1:], uids[1:], hashes[1:], T0 + timedelta(1)), two, "images", "b2")
    _write(pl.DataFrame(schema={"source_key": pl.Utf8, "stage": pl.Utf8, "reason": pl.Utf8, "detail": pl.Utf8,
                                "quarantine_key": pl.Utf8, "ingested_at": pl.Datetime("us", "UTC")}),
           two, "ingest_errors", "empty")
    for lake in (one, two):
        conflicts = read_errors(str(lake)).filter(pl.col("reason") == "duplicate_conflict")
        assert conflicts["source_key"].to_list() == ["b.dcm"], lake.name
