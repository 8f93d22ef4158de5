"""The fast path for plain native images gives exactly the general pipeline's pixels.

``native_display`` views the pixel bytes in place and takes its attributes from the
``images`` row; ``display_frame`` decodes through pydicom. Every case here is rendered
both ways from the same file and compared value for value.
"""

from __future__ import annotations

import io

import numpy as np
import pydicom
import pytest
from pydicom.dataset import Dataset, FileMetaDataset
from pydicom.uid import ExplicitVRLittleEndian, ImplicitVRLittleEndian, generate_uid

from tasks.dicom.extract import Lineage, PreviewJob, SourceFile, extract_batch
from tasks.dicom.instance import extract_dataset, read_dicom
from tasks.pixels.display import display_frame, middle_frame, native_display
from tasks.pixels.preview import PreviewOptions, render_batch
from tasks.pool import make_process_pool


def _file(
    pixels: np.ndarray,
    *,
    photometric: str = "MONOCHROME2",
    stored: int | None = None,
    signed: bool = False,
    syntax: str = ExplicitVRLittleEndian,
    planar: int | None = None,
    **attrs: object,
) -> bytes:
    ds = Dataset()
    ds.file_meta = FileMetaDataset()
    ds.file_meta.TransferSyntaxUID = syntax
    ds.file_meta.MediaStorageSOPClassUID = "1.2.840.10008.5.1.4.1.1.7"
    ds.file_meta.MediaStorageSOPInstanceUID = uid = generate_uid()
    ds.SOPClassUID, ds.SOPInstanceUID = "1.2.840.10008.5.1.4.1.1.7", uid
    ds.StudyInstanceUID, ds.SeriesInstanceUID, ds.PatientID = generate_uid(), generate_uid(), "P1"
    ds.Rows, ds.Columns = pixels.shape[:2]
    ds.SamplesPerPixel = 3 if pixels.ndim == 3 else 1
    ds.PhotometricInterpretation = photometric
    allocated = pixels.dtype.itemsize * 8
    ds.BitsAllocated, ds.BitsStored = allocated, stored or allocated
    ds.HighBit = ds.BitsStored - 1
    ds.PixelRepresentation = int(signed)
    if planar is not None:
        ds.PlanarConfiguration = planar
        if planar == 1:
            pixels = pixels.transpose(2, 0, 1)
    for keyword, value in attrs.items():
        setattr(ds, keyword, value)
    ds.PixelData = np.ascontiguousarray(pixels).astype(pixels.dtype.newbyteorder("<")).tobytes()
    buf = io.BytesIO()
    ds.save_as(buf, enforce_file_format=True, implicit_vr=syntax == ImplicitVRLittleEndian, little_endian=True)
    return buf.getvalue()


def _both(data: bytes) -> tuple[np.ndarray | None, np.ndarray]:
    ds = read_dicom(data)
    image = extract_dataset(ds)["images"]
    fast = native_display(ds, image)
    full = pydicom.dcmread(io.BytesIO(data))
    reference = display_frame(full, middle_frame(full))
    return fast, reference


RNG = np.random.default_rng(7)
CT = (RNG.integers(-1024, 3000, (32, 48))).astype(np.int16)
# 12 bits stored in 16, with junk in the unused high bits (pydicom masks / sign-extends them)
JUNK = (RNG.integers(0, 4096, (16, 16)) | (RNG.integers(0, 16, (16, 16)) << 12)).astype(np.uint16)

CASES = {
    "ct signed, rescale + window": dict(
        pixels=CT, signed=True, RescaleSlope="1", RescaleIntercept="-1024", WindowCenter="40", WindowWidth="400"
    ),
    "ct several windows": dict(pixels=CT, signed=True, WindowCenter=[40, 500], WindowWidth=[400, 2000]),
    "mr unsigned, no window": dict(pixels=RNG.integers(0, 900, (20, 30)).astype(np.uint16)),
    "12 bits stored unsigned": dict(pixels=JUNK, stored=12),
    "12 bits stored signed": dict(pixels=JUNK, stored=12, signed=True),
    "cr monochrome1": dict(pixels=RNG.integers(0, 4096, (24, 24)).astype(np.uint16), photometric="MONOCHROME1"),
    "8-bit grey": dict(pixels=RNG.integers(0, 256, (10, 12)).astype(np.uint8)),
    "sigmoid": dict(pixels=CT, signed=True, WindowCenter="40", WindowWidth="400", VOILUTFunction="SIGMOID"),
    "linear exact, float rescale": dict(
        pixels=CT, signed=True, RescaleSlope="0.5", RescaleIntercept="10.25", WindowCenter="0", WindowWidth="1",
        VOILUTFunction="LINEAR_EXACT",
    ),
    "zero window width": dict(pixels=CT, signed=True, WindowCenter="40", WindowWidth="0"),
    "implicit vr": dict(pixels=CT, signed=True, syntax=ImplicitVRLittleEndian, WindowCenter="40", WindowWidth="400"),
    "multi-frame: the middle one": dict(
        pixels=RNG.integers(-1000, 1000, (96, 48)).astype(np.int16), signed=True, NumberOfFrames=3, Rows=32,
        WindowCenter="0", WindowWidth="500",
    ),
    "rgb": dict(pixels=RNG.integers(0, 256, (8, 10, 3)).astype(np.uint8), photometric="RGB", planar=0),
    "rgb planar": dict(pixels=RNG.integers(0, 256, (8, 10, 3)).astype(np.uint8), photometric="RGB", planar=1),
}


@pytest.mark.parametrize("name", list(CASES))
def test_fast_path_equals_the_general_pipeline(name):
    fast, reference = _both(_file(**CASES[name]))
    assert fast is not None, "this plain image should take the fast path"
    assert fast.dtype == reference.dtype == np.uint8
    np.testing.assert_array_equal(fast, reference)


def test_anything_unusual_takes_the_general_path():
    lut = Dataset()
    lut.LUTDescriptor, lut.LUTData = [4, 0, 8], np.array([0, 80, 160, 255], "<u2").tobytes()
    unusual = {
        "voi lut sequence": _file(CT, signed=True, VOILUTSequence=[lut]),
        "ybr": _file(RNG.integers(0, 256, (8, 10, 3)).astype(np.uint8), photometric="YBR_FULL", planar=0),
        "32 bits allocated": _file(CT.astype(np.int32), signed=True),
    }
    for name, data in unusual.items():
        ds = read_dicom(data)
        assert native_display(ds, extract_dataset(ds)["images"]) is None, name


def test_extraction_with_previews_gives_the_rows_and_files_of_the_separate_step(synthetic_dir, pydicom_dir, tmp_path, secret):
    files = [
        SourceFile(p, f"{d.name}/{p.relative_to(d)}", "e")
        for d in (synthetic_dir, pydicom_dir) for p in sorted(d.rglob("*")) if p.is_file()
    ]
    lineage = Lineage("b")
    # both paths on a process pool, as a run has them (rows and files do not depend on the workers)
    with make_process_pool(2) as pool:
        fused = extract_batch(files, lineage, executor=pool, parts=2,
                              previews=PreviewJob(tmp_path / "fused", secret, PreviewOptions()))
        plain = extract_batch(files, lineage)
        images = [
            (next(f.path for f in files if f.key == key), key, uid)
            for key, uid in plain["images"].filter(plain["images"]["has_pixel_data"]).select("source_key", "SOPInstanceUID").iter_rows()
        ]
        previews, errors = render_batch(tmp_path / "separate", images, secret=secret, executor=pool)
    for table in ("images", "patients", "ingest_errors"):
        assert fused[table].equals(plain[table])
    columns = ["source_key", "preview_key", "preview_width", "preview_height", "frame_index"]
    assert fused["previews"].select(columns).sort("source_key").rows() == sorted(tuple(p[c] for c in columns) for p in previews)
    assert sorted(fused["preview_errors"]["source_key"]) == sorted(e["source_key"] for e in errors)
    assert fused["previews"].height > 20
    for key in fused["previews"]["preview_key"]:  # the same JPEG bytes, whichever path rendered them
        assert (tmp_path / "fused" / key).read_bytes() == (tmp_path / "separate" / key).read_bytes()
