from __future__ import annotations

import numpy as np
import pydicom
import pytest

from tasks.deid import pseudonym
from tasks.pixels.transcode import archive_batch, archive_file, storage_saved


@pytest.mark.parametrize(
    "name", ["CT_small.dcm", "MR_small_RLE.dcm", "examples_palette.dcm", "SC_rgb_rle_2frame.dcm", "MR_small_bigendian.dcm"]
)
def test_archive_copy_is_pixel_exact_and_smaller(pydicom_dir, tmp_path, name):
    row = archive_file(tmp_path, pydicom_dir / name, name, "1.2.3", "ab" * 32)
    assert row["status"] == "archived", row["detail"]
    archived = pydicom.dcmread(tmp_path / row["archive_key"])
    original = pydicom.dcmread(pydicom_dir / name)
    assert archived.file_meta.TransferSyntaxUID == row["archive_transfer_syntax_uid"]
    assert archived.file_meta.TransferSyntaxUID.is_compressed
    assert archived.SOPInstanceUID == original.SOPInstanceUID  # lossless: same instance
    assert np.array_equal(archived.pixel_array, original.pixel_array)
    assert row["archive_bytes"] < row["original_bytes"]


def test_lossy_and_unsupported_originals_are_reported_not_archived(pydicom_dir, tmp_path):
    rows = {
        name: archive_file(tmp_path, pydicom_dir / name, name, "1.2.3", name)
        for name in ("examples_ybr_color.dcm", "JPEG-lossy.dcm", "SC_rgb_rle_32bit.dcm", "MR_small_jp2klossless.dcm")
    }
    assert rows["examples_ybr_color.dcm"]["status"] == "skipped_lossy"
    assert rows["JPEG-lossy.dcm"]["status"] == "skipped_lossy"
    assert rows["MR_small_jp2klossless.dcm"]["status"] == "already_lossless"
    assert rows["SC_rgb_rle_32bit.dcm"]["status"] == "unsupported"  # 32-bit: no lossless codec
    assert "JPEG-LS" in rows["SC_rgb_rle_32bit.dcm"]["detail"]
    assert not (tmp_path / "archive").exists()


def test_archive_names_are_pseudonyms_and_savings_add_up(pydicom_dir, tmp_path, secret):
    uid = pydicom.dcmread(pydicom_dir / "CT_small.dcm").SOPInstanceUID
    rows = archive_batch(tmp_path, [(pydicom_dir / "CT_small.dcm", "ct", uid)], secret=secret)
    assert rows[0]["archive_key"] == f"archive/{pseudonym(uid, secret)[:2]}/{pseudonym(uid, secret)}.dcm"
    assert uid not in rows[0]["archive_key"]
    before, after = storage_saved(rows)
    assert before == (pydicom_dir / "CT_small.dcm").stat().st_size and 0 < after < before
