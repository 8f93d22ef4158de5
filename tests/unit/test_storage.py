from __future__ import annotations

import hashlib
import os

import pytest

from tasks.errors import SourceError
from tasks.storage import batch_id, chunk, copy_local_objects, list_local_objects


def test_lists_nested_files_with_any_name_and_skips_hidden(tmp_path):
    (tmp_path / "a" / "b").mkdir(parents=True)
    (tmp_path / "a" / "b" / "IM 1+2 é").write_bytes(b"x")
    (tmp_path / "top.dcm").write_bytes(b"yy")
    (tmp_path / ".DS_Store").write_bytes(b"z")
    (tmp_path / ".hidden").mkdir()
    (tmp_path / ".hidden" / "f").write_bytes(b"z")
    os.symlink(tmp_path / "top.dcm", tmp_path / "link.dcm")
    objects = list_local_objects(tmp_path)
    assert [o.key for o in objects] == ["a/b/IM 1+2 é", "link.dcm", "top.dcm"]
    assert objects[2].size == 2
    assert objects[1].etag.startswith("symlink-")  # listed so it is reported, never followed


def test_a_symlink_is_rejected_with_a_reason_and_not_followed(tmp_path):
    from datetime import UTC, datetime

    import polars as pl

    from tasks.staging import stage_batch
    from tasks.storage_s3 import S3Access

    source, lake = tmp_path / "in", tmp_path / "lake"
    source.mkdir()
    secret = tmp_path / "elsewhere.txt"
    secret.write_text("not for the lake")
    (source / "real.dcm").write_bytes(b"DICM")
    os.symlink(secret, source / "link.dcm")
    objects = list_local_objects(source)
    staged = stage_batch(str(source), str(lake), objects, batch_id="b", scratch=tmp_path / "s",
                         access=S3Access(), ingested_at=datetime.now(UTC))
    assert [f.key for f in staged.files] == ["real.dcm"]
    assert [(e["source_key"], e["reason"]) for e in staged.errors] == [("link.dcm", "symlink")]
    assert not (lake / "raw" / "link.dcm").exists()
    written = pl.read_parquet(next((lake / "tables" / "ingest_errors").rglob("*.parquet")))
    assert written["reason"].to_list() == ["symlink"]


def test_missing_source_names_the_folder(tmp_path):
    with pytest.raises(SourceError, match="nope"):
        list_local_objects(tmp_path / "nope")


def test_copy_is_skipped_when_raw_copy_is_current(tmp_path):
    src, raw = tmp_path / "src", tmp_path / "raw"
    (src / "d").mkdir(parents=True)
    (src / "d" / "f").write_bytes(b"abc")
    objects = list_local_objects(src)
    [copy] = copy_local_objects(src, raw, objects)
    path = copy.path
    assert path.read_bytes() == b"abc"
    assert copy.sha256 == hashlib.sha256(b"abc").hexdigest()
    assert os.stat(path).st_mtime_ns == os.stat(src / "d" / "f").st_mtime_ns
    path.write_bytes(b"abd")  # same size and, within a second, same mtime: a re-run skips it
    os.utime(path, ns=(os.stat(src / "d" / "f").st_atime_ns, os.stat(src / "d" / "f").st_mtime_ns))
    [again] = copy_local_objects(src, raw, objects)
    assert path.read_bytes() == b"abd"
    assert again.sha256 == hashlib.sha256(b"abd").hexdigest()  # the hash is of what the raw zone holds
    (src / "d" / "f").write_bytes(b"abcdef")  # changed at the source: copied again
    copy_local_objects(src, raw, list_local_objects(src))
    assert path.read_bytes() == b"abcdef"
    assert not list(raw.rglob("*.partial"))


def test_batches_and_ids_are_deterministic(tmp_path):
    for i in range(5):
        (tmp_path / f"f{i}").write_bytes(b"x" * i)
    objects = list_local_objects(tmp_path)
    batches = list(chunk(objects, 2))
    assert [len(b) for b in batches] == [2, 2, 1]
    assert batch_id(batches[0]) == batch_id(list_local_objects(tmp_path)[:2])
    assert batch_id(batches[0]) != batch_id(batches[1])
    with pytest.raises(ValueError, match="batch-size"):
        list(chunk(objects, 0))
