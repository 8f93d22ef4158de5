from __future__ import annotations

import io
import zipfile

import pytest

from tasks.lake.zips import ArchiveLimits, expand_archive, is_zip
from tasks.errors import FileRejected


def _zip(path, members: dict[str, bytes], compression=zipfile.ZIP_DEFLATED):
    with zipfile.ZipFile(path, "w", compression) as zf:
        for name, data in members.items():
            zf.writestr(name, data)
    return path


def test_members_fan_out_with_lineage_and_unsafe_members_are_rejected(tmp_path):
    inner = io.BytesIO()
    with zipfile.ZipFile(inner, "w") as zf:
        zf.writestr("x", b"x")
    path = _zip(tmp_path / "s.zip", {
        "DICOM/IM 1": b"a" * 10, "DICOM/é+2": b"b", "../../evil": b"c", "/abs": b"d",
        "inner.zip": inner.getvalue(), "__MACOSX/._IM": b"e", ".DS_Store": b"f",
    })
    assert is_zip(path)
    out = expand_archive(path, "site/s.zip", tmp_path / "out")
    assert sorted(k for k, _, _ in out.members) == ["site/s.zip!/DICOM/IM 1", "site/s.zip!/DICOM/é+2"]
    assert {k: r for k, r, _ in out.rejected} == {
        "site/s.zip!/../../evil": "path_traversal", "site/s.zip!//abs": "path_traversal",
        "site/s.zip!/inner.zip": "nested_archive",
    }
    for _, p, size in out.members:  # generated names, inside the scratch folder
        assert p.parent == tmp_path / "out" and p.stat().st_size == size
    assert not (tmp_path / "evil").exists()


def test_zip_bomb_is_rejected_with_a_reason(tmp_path):
    path = _zip(tmp_path / "bomb.zip", {"big": b"\0" * (4 << 20)})
    with pytest.raises(FileRejected) as info:
        expand_archive(path, "bomb.zip", tmp_path / "out", limits=ArchiveLimits(max_ratio=100))
    assert info.value.reason == "zip_bomb"
    with pytest.raises(FileRejected, match="cap"):
        expand_archive(path, "bomb.zip", tmp_path / "out2", limits=ArchiveLimits(max_total_bytes=1 << 20))


def test_corrupt_archive_is_rejected(tmp_path):
    path = tmp_path / "bad.zip"
    path.write_bytes(b"PK\x03\x04" + b"garbage" * 10)
    with pytest.raises(FileRejected) as info:
        expand_archive(path, "bad.zip", tmp_path / "out")
    assert info.value.reason == "corrupt_archive"
