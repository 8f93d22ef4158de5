"""Large files take the mapped path: the same rows and previews as files read whole.

The 3 GB file in bounded memory runs its own process: tests/integration/test_large_files.py.
"""

from __future__ import annotations

import numpy as np

import tasks.dicom.instance
from tasks.dicom.extract import Lineage, PreviewJob, SourceFile, extract_batch
from tasks.pixels.preview import PreviewOptions, render_batch


def test_mapped_and_read_files_give_the_same_rows_and_previews(pydicom_dir, tmp_path, monkeypatch, secret):
    names = [
        "JPEG2000.dcm",  # encapsulated: dcmread from disk, its pixel data deferred, one frame read
        "SC_rgb_rle_16bit_2frame.dcm",
        "SC_rgb_jpeg_gdcm.dcm",
        "rtdose.dcm",  # native multi-frame: the lean reader over the map
        "CT_small.dcm",
        "MR_small_bigendian.dcm",  # big endian: dcmread from disk
        "rtplan.dcm",  # no pixels
    ]
    files = [SourceFile(pydicom_dir / n, n, "e") for n in names]
    lineage = Lineage("b")
    read = extract_batch(files, lineage, previews=PreviewJob(tmp_path / "read", secret, PreviewOptions()))
    monkeypatch.setattr(tasks.dicom.instance, "LARGE_FILE_BYTES", 0)  # every file counts as large,
    monkeypatch.setattr(tasks.dicom.instance, "DEFER_SIZE", 1024)  # and its pixel data as bulk to leave on disk
    mapped = extract_batch(files, lineage, previews=PreviewJob(tmp_path / "mapped", secret, PreviewOptions()))
    for table in ("images", "series", "ingest_errors", "previews", "preview_errors"):
        assert mapped[table].equals(read[table]), table
    assert read["previews"].height == 6 and read["preview_errors"].height == 0
    assert mapped["instances_header"]["header_json"].to_list() == read["instances_header"]["header_json"].to_list()
    for key in read["previews"]["preview_key"]:
        a = np.asarray(__import__("PIL.Image", fromlist=["x"]).open(tmp_path / "read" / key))
        b = np.asarray(__import__("PIL.Image", fromlist=["x"]).open(tmp_path / "mapped" / key))
        np.testing.assert_array_equal(a, b)
    # the separate preview step (compress-dicom) maps large files the same way
    images = [(pydicom_dir / k, k, u) for k, u in read["previews"].select("source_key", "SOPInstanceUID").iter_rows()]
    previews, errors = render_batch(tmp_path / "separate", images, secret=secret)
    assert not errors
    assert sorted(p["preview_key"] for p in previews) == sorted(read["previews"]["preview_key"])
