from __future__ import annotations

import hashlib

import pydicom
import pytest

from tasks.dicom.corpus import generate_corpus


def _digest(root) -> str:
    h = hashlib.sha256()
    for p in sorted(root.rglob("*")):
        if p.is_file():
            h.update(p.relative_to(root).as_posix().encode() + p.read_bytes())
    return h.hexdigest()


def test_same_seed_same_bytes(tmp_path):
    a = generate_corpus(tmp_path / "a", files=30, seed=3)
    b = generate_corpus(tmp_path / "b", files=30, seed=3)
    assert a.files == b.files == 30
    assert _digest(tmp_path / "a") == _digest(tmp_path / "b")
    assert _digest(tmp_path / "a") != _digest(generate_corpus(tmp_path / "c", files=30, seed=4).root)


def test_realistic_profile_has_big_ct_compressed_and_multiframe(tmp_path):
    generate_corpus(tmp_path, files=150, profile="realistic", seed=1, images_per_series=2)
    kinds = set()
    for path in tmp_path.rglob("IM*"):
        ds = pydicom.dcmread(path, stop_before_pixels=True)
        kinds.add((ds.Modality, ds.Rows, ds.file_meta.TransferSyntaxUID.is_compressed, int(ds.get("NumberOfFrames") or 1) > 1))
    assert ("CT", 512, False, False) in kinds
    assert ("CT", 512, True, False) in kinds
    assert any(k[0] == "MR" and k[3] for k in kinds)
    assert any(k[0] == "CR" and k[1] == 1024 for k in kinds)


def test_ct_profile_is_native_512_ct_slices_only(tmp_path):
    generate_corpus(tmp_path, files=12, profile="ct", seed=2, images_per_series=4)
    kinds = set()
    for path in tmp_path.rglob("IM*"):
        ds = pydicom.dcmread(path, stop_before_pixels=True)
        kinds.add((ds.Modality, ds.Rows, ds.Columns, ds.BitsAllocated, ds.file_meta.TransferSyntaxUID.is_compressed))
    assert kinds == {("CT", 512, 512, 16, False)}


def test_unknown_profile_is_named(tmp_path):
    with pytest.raises(ValueError, match="huge"):
        generate_corpus(tmp_path, files=1, profile="huge")
