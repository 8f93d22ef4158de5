from __future__ import annotations

import hashlib
import os
import shutil
from pathlib import Path

import pytest

from tasks.errors import SourceError
from tasks.lake.storage import (
    PARALLEL_COPY_BYTES,
    ObjectInfo,
    batch_id,
    chunk,
    copy_local_objects,
    list_local_objects,
    plan_batches,
)


def test_lists_nested_files_with_any_name_hidden_ones_too(tmp_path):
    (tmp_path / "a" / "b").mkdir(parents=True)
    (tmp_path / "a" / "b" / "IM 1+2 é").write_bytes(b"x")
    (tmp_path / "top.dcm").write_bytes(b"yy")
    (tmp_path / ".DS_Store").write_bytes(b"z")
    (tmp_path / ".hidden").mkdir()
    (tmp_path / ".hidden" / "f").write_bytes(b"z")
    os.symlink(tmp_path / "top.dcm", tmp_path / "link.dcm")
    objects = list_local_objects(tmp_path)
    assert [o.key for o in objects] == [".DS_Store", ".hidden/f", "a/b/IM 1+2 é", "link.dcm", "top.dcm"]
    assert objects[4].size == 2
    assert objects[3].etag.startswith("symlink-")  # listed so it is reported, never followed


def test_our_own_temporary_names_are_not_listed(tmp_path):
    """A copy in progress (or a killed run's leftover) in a folder we write: not an object yet."""
    (tmp_path / "raw").mkdir()
    (tmp_path / "raw" / "IM1").write_bytes(b"x")
    (tmp_path / "raw" / ".IM2.partial").write_bytes(b"half")
    (tmp_path / "raw" / ".partial").write_bytes(b"a provider's odd name, not ours")
    (tmp_path / "raw" / "IM3.partial").write_bytes(b"not hidden: not ours either")
    assert [o.key for o in list_local_objects(tmp_path)] == ["raw/.partial", "raw/IM1", "raw/IM3.partial"]


def test_hidden_files_are_extracted_like_any_file_and_quarantined_once(tmp_path):
    """A DICOM named ``.x.dcm`` gets rows; ``.DS_Store`` a reason, a quarantine copy and a manifest row."""
    from datetime import UTC, datetime

    from tasks.dicom.extract import Lineage, SourceFile, extract_batch
    from tasks.lake.tables import quarantine_copy
    from tasks.lake.manifest import manifest_frame, pending_objects, processed_versions
    from pydicom.data import get_testdata_file

    source, lake = tmp_path / "in", tmp_path / "lake"
    (source / ".study").mkdir(parents=True)
    shutil.copyfile(get_testdata_file("CT_small.dcm"), source / ".study" / ".x.dcm")
    (source / ".DS_Store").write_bytes(b"\x00\x00\x00\x01Bud1" + b"\x00" * 64)
    objects = list_local_objects(source)
    raw = copy_local_objects(source, lake / "raw", objects)
    files = [SourceFile(c.path, o.key, o.etag) for o, c in zip(objects, raw, strict=True)]
    frames = extract_batch(files, Lineage("b1")).frames
    assert frames["images"]["source_key"].to_list() == [".study/.x.dcm"]
    errors = frames["ingest_errors"].select("source_key", "reason").rows()
    assert errors == [(".DS_Store", "not_dicom")]
    qkey = quarantine_copy(lake, raw[0].path, ".DS_Store", "not_dicom")
    assert (lake / qkey).read_bytes() == (source / ".DS_Store").read_bytes()
    manifest = manifest_frame(objects, batch_id="b1", hashes={}, quarantined=[".DS_Store"], processed_at=datetime.now(UTC))
    assert dict(manifest.select("key", "status").rows()) == {".DS_Store": "quarantined", ".study/.x.dcm": "done"}
    assert pending_objects(list_local_objects(source), processed_versions(manifest)) == []  # not retried forever


def test_a_symlink_is_rejected_with_a_reason_and_not_followed(tmp_path):
    from datetime import UTC, datetime

    import polars as pl

    from tasks.lake.staging import stage_batch
    from tasks.lake.s3 import S3Access

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
    path = Path(copy.path)
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


@pytest.mark.parametrize("size", [0, 5 << 20])  # empty; larger than one read, so streamed
def test_a_copy_keeps_every_byte_its_hash_head_and_time(tmp_path, size):
    src, raw = tmp_path / "src", tmp_path / "raw"
    src.mkdir()
    data = os.urandom(size)
    (src / "big.zip").write_bytes(data)
    os.utime(src / "big.zip", ns=(1_000_000_000, 1_600_000_000_123_456_789))
    [copy] = copy_local_objects(src, raw, list_local_objects(src))
    with open(copy.path, "rb") as fh:
        assert fh.read() == data and copy.head == data[:8]
    assert copy.sha256 == hashlib.sha256(data).hexdigest()
    assert os.stat(copy.path).st_mtime_ns == 1_600_000_000_123_456_789
    assert [p.name for p in raw.iterdir()] == ["big.zip"]


def test_copies_made_at_once_come_back_in_order_and_a_failure_is_raised(tmp_path):
    src, raw = tmp_path / "src", tmp_path / "raw"
    for i in range(24):  # nested folders the threads create side by side; files large enough for threads
        (src / f"p{i % 3}" / f"s{i % 5}").mkdir(parents=True, exist_ok=True)
        (src / f"p{i % 3}" / f"s{i % 5}" / f"f{i:02d}").write_bytes(os.urandom(PARALLEL_COPY_BYTES + i))
    objects = list_local_objects(src)
    copies = copy_local_objects(src, raw, objects, threads=4)
    assert [c.path for c in copies] == [str(raw / o.key) for o in objects]
    assert [c.sha256 for c in copies] == [hashlib.sha256((src / o.key).read_bytes()).hexdigest() for o in objects]
    assert [c.sha256 for c in copies] == [c.sha256 for c in copy_local_objects(src, raw, objects, threads=1)]
    (src / objects[7].key).unlink()  # gone between the listing and the copy
    with pytest.raises(FileNotFoundError):
        copy_local_objects(src, tmp_path / "raw2", objects, threads=4)
    assert not list((tmp_path / "raw2").rglob("*.partial"))


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


def _objects(sizes: list[int]) -> list[ObjectInfo]:
    return [ObjectInfo(f"k{i:04d}", size, f"e{i}") for i, size in enumerate(sizes)]


def test_batches_ramp_up_then_hold_the_file_limit():
    objects = _objects([10] * 1000)
    batches = list(plan_batches(objects, 160))
    assert [len(b) for b in batches] == [20, 40, 80, 160, 160, 160, 160, 160, 60]
    assert [o for b in batches for o in b] == objects  # every object once, in order
    assert [len(b) for b in plan_batches(objects[:40], 16)] == [16, 16, 8]  # small batches: no ramp


def test_batches_end_at_the_byte_limit_and_a_large_object_goes_alone():
    objects = _objects([100, 300, 200, 5000, 100, 100, 400, 400, 400])
    batches = list(plan_batches(objects, 1000, max_bytes=800))
    # limits 100, 200, 400 bytes for the first three batches, then 800
    assert [[o.size for o in b] for b in batches] == [[100], [300], [200], [5000], [100, 100, 400], [400, 400]]
    assert all(sum(o.size for o in b) <= 800 or len(b) == 1 for b in batches)


def test_batch_limits_must_be_positive():
    with pytest.raises(ValueError, match="batch-size"):
        list(plan_batches(_objects([1]), 0))
    with pytest.raises(ValueError, match="batch-bytes"):
        list(plan_batches(_objects([1]), 10, max_bytes=0))
    assert list(plan_batches([], 10)) == []
