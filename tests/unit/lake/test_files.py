"""Safe writes and a full disk, on /dev/full: a real device whose every write fails with ENOSPC."""

from __future__ import annotations

import hashlib
import io
import os
from pathlib import Path

import polars as pl
import pytest

from tasks.errors import DiskFullError
from tasks.lake.files import disk_full_reported, is_temporary, sha256_file, temporary_name, write_atomic, writing

DEV_FULL = Path("/dev/full")
needs_dev_full = pytest.mark.skipif(not DEV_FULL.exists(), reason="no /dev/full on this system")


def test_a_write_appears_whole_or_not_at_all(tmp_path):
    target = tmp_path / "a" / "f.parquet"
    with pytest.raises(RuntimeError, match="writer broke"), writing(target) as tmp:
        tmp.write_bytes(b"half")
        raise RuntimeError("writer broke")
    assert [p.name for p in tmp_path.rglob("*")] == ["a"]  # neither the file nor its temporary
    with writing(target) as tmp:
        tmp.write_bytes(b"whole")
    assert target.read_bytes() == b"whole" and [p.name for p in target.parent.iterdir()] == ["f.parquet"]


def test_an_atomic_write_makes_its_folder_keeps_times_and_replaces(tmp_path):
    target = tmp_path / "x" / "y" / "p.jpg"
    write_atomic(target, b"first", times_ns=(1_000_000_000, 2_000_000_000))
    assert target.read_bytes() == b"first" and target.stat().st_mtime_ns == 2_000_000_000
    write_atomic(str(target), memoryview(b"second"))
    assert target.read_bytes() == b"second" and [p.name for p in target.parent.iterdir()] == ["p.jpg"]


def test_a_failed_atomic_write_leaves_nothing(tmp_path):
    (tmp_path / "taken").write_bytes(b"a file where the folder should be")
    with pytest.raises(OSError):
        write_atomic(tmp_path / "taken" / "p.jpg", b"x")
    target = tmp_path / "d" / "p.jpg"
    with pytest.raises(TypeError):
        write_atomic(target, "not bytes")  # fails after the temporary was created
    assert sorted(p.name for p in tmp_path.rglob("*")) == ["d", "taken"]


def test_writers_of_one_file_never_share_a_temporary(tmp_path):
    names = set()
    for _ in range(1000):
        with writing(tmp_path / "f") as tmp:
            names.add(tmp.name)
            tmp.write_bytes(b"x")
    assert len(names) == 1000 and all(is_temporary(n) for n in names)


def test_temporary_names():
    assert temporary_name("IM1") == ".IM1.partial" and is_temporary(".IM1.partial")
    assert not is_temporary(".partial") and not is_temporary("IM1.partial") and not is_temporary(".DS_Store")


@needs_dev_full
@pytest.mark.parametrize("write", [lambda: DEV_FULL.write_bytes(b"x" * 10), lambda: pl.DataFrame({"x": [1]}).write_parquet(DEV_FULL)])
def test_a_full_disk_is_named_with_the_folder(tmp_path, write):
    with pytest.raises(DiskFullError, match=rf"disk is full.*{tmp_path}.*Free space there"):
        with disk_full_reported("s3://bucket/lake", tmp_path):
            write()


def test_other_errors_pass_through(tmp_path):
    with pytest.raises(FileNotFoundError), disk_full_reported(tmp_path):
        (tmp_path / "missing" / "x").read_bytes()


@pytest.mark.parametrize("size", [0, 1, (1 << 20) + 3])  # empty, one byte, several of file_digest's reads
def test_a_file_hash_is_its_content_sha256_and_a_copy_gets_every_byte(tmp_path, size):
    data = os.urandom(size)
    (tmp_path / "f").write_bytes(data)
    copy = io.BytesIO()
    assert sha256_file(tmp_path / "f") == hashlib.sha256(data).hexdigest()
    assert sha256_file(str(tmp_path / "f"), copy_to=copy) == hashlib.sha256(data).hexdigest()
    assert copy.getvalue() == data
