"""Previews against an independent renderer: DCMTK's dcmj2pnm, within a PSNR bound.

Each file is rendered at full size by us (JPEG, quality 95) and by dcmj2pnm (PNG) with the
matching VOI choice: the first VOI LUT (+Wl 1), else the first window (+Wi 1), else min/max
(+Wm, and our robust percentiles set to 0..100). Compressed files are first decoded by
pydicom into a native copy, because dcmtk has no JPEG 2000 / JPEG-LS near-lossless
decoders here; the display pipeline, which is what is under test, stays independent.
"""

from __future__ import annotations

import io
import shutil
import subprocess
from pathlib import Path

import numpy as np
import pydicom
import pytest
from PIL import Image
from pydicom.dataset import Dataset, FileMetaDataset
from pydicom.uid import ExplicitVRLittleEndian, SecondaryCaptureImageStorage, generate_uid

from tasks.pixels.display import middle_frame
from tasks.pixels.preview import render_preview

pytestmark = pytest.mark.skipif(
    shutil.which("dcmj2pnm") is None, reason="dcmj2pnm (DCMTK) not installed: apt-get install dcmtk (.ci/run does)"
)

MIN_PSNR = 35.0  # dB; a wrong window, inversion or colour conversion scores 5-20 dB


def _psnr(a: np.ndarray, b: np.ndarray) -> float:
    mse = float(((a.astype(np.float64) - b.astype(np.float64)) ** 2).mean())
    return 99.0 if mse == 0 else 10 * np.log10(255.0**2 / mse)


def _reference(path: Path, tmp: Path) -> np.ndarray:
    ds = pydicom.dcmread(path)
    if ds.file_meta.TransferSyntaxUID.is_compressed:
        ds.decompress(generate_instance_uid=False)
    ds.file_meta.TransferSyntaxUID = ExplicitVRLittleEndian
    native = tmp / f"{path.stem}.native.dcm"
    pydicom.dcmwrite(native, ds, enforce_file_format=True, implicit_vr=False, little_endian=True)
    if "VOILUTSequence" in ds:
        voi = ["+Wl", "1"]
    elif "WindowCenter" in ds and "WindowWidth" in ds:
        voi = ["+Wi", "1"]
    else:
        voi = ["+Wm"]
    out = tmp / f"{path.stem}.ref.png"
    frame = str(middle_frame(ds) + 1)  # dcmtk counts frames from 1
    subprocess.run(["dcmj2pnm", "+on", "+F", frame, *voi, str(native), str(out)], check=True, capture_output=True)
    return np.asarray(Image.open(out))


def _ours(path: Path) -> np.ndarray:
    preview = render_preview(pydicom.dcmread(path), max_size=100_000, quality=95, percentiles=(0, 100))
    return np.asarray(Image.open(io.BytesIO(preview.jpeg)))


def _compare(path: Path, tmp: Path) -> float:
    ours, ref = _ours(path), _reference(path, tmp)
    if ours.ndim == 3 and ref.ndim == 2:
        ref = np.repeat(ref[..., None], 3, axis=2)
    assert ours.shape == ref.shape, (ours.shape, ref.shape)
    return _psnr(ours, ref)


@pytest.mark.parametrize(
    "name",
    [
        "CT_small.dcm",  # CT, signed, rescale, no window
        "MR_small.dcm",  # MR with a window
        "MR_small_jp2klossless.dcm",  # JPEG 2000 lossless
        "MR_small_jpeg_ls_lossless.dcm",  # JPEG-LS lossless
        "MR_small_RLE.dcm",  # RLE
        "JPGExtended.dcm",  # 12-bit JPEG extended, via pylibjpeg
        "693_J2KI.dcm",  # JPEG 2000 lossy, windowed
        "examples_palette.dcm",  # US, PALETTE COLOR
        "examples_ybr_color.dcm",  # US, YBR_FULL_422 JPEG, multi-frame (middle frame)
        "SC_ybr_full_422_uncompressed.dcm",  # native YBR_FULL_422
        "examples_jpeg2k.dcm",  # YBR_RCT JPEG 2000
        "SC_rgb_rle_2frame.dcm",  # RGB multi-frame
        "SC_rgb_rle_16bit.dcm",  # 16-bit RGB
        "rtdose.dcm",  # multi-frame, 32-bit, no window
    ],
)
def test_pydicom_files_match_dcmtk(pydicom_dir, tmp_path, name):
    assert _compare(pydicom_dir / name, tmp_path) >= MIN_PSNR


def _synthetic(tmp: Path, name: str, arr: np.ndarray, **attrs: object) -> Path:
    ds = Dataset()
    ds.file_meta = FileMetaDataset()
    ds.file_meta.TransferSyntaxUID = ExplicitVRLittleEndian
    ds.file_meta.MediaStorageSOPClassUID = SecondaryCaptureImageStorage
    ds.SOPInstanceUID = ds.file_meta.MediaStorageSOPInstanceUID = generate_uid()
    ds.SOPClassUID = SecondaryCaptureImageStorage
    ds.Modality = "OT"
    frames = arr.shape[0] if arr.ndim == 3 else 1
    if frames > 1:
        ds.NumberOfFrames = frames
    ds.Rows, ds.Columns = arr.shape[-2], arr.shape[-1]
    ds.SamplesPerPixel = 1
    ds.PhotometricInterpretation = "MONOCHROME2"
    ds.BitsAllocated = 16
    ds.BitsStored, ds.HighBit = 12, 11
    ds.PixelRepresentation = 1 if arr.dtype.kind == "i" else 0
    for key, value in attrs.items():
        setattr(ds, key, value)
    ds.PixelData = arr.tobytes()
    path = tmp / f"{name}.dcm"
    ds.save_as(path, enforce_file_format=True)
    return path


def _ramp(signed: bool = False, frames: int = 1) -> np.ndarray:
    yy, xx = np.mgrid[0:128, 0:160]
    base = (xx * 25 + yy * 3) % 4096
    stack = np.stack([(base + 300 * f) % 4096 for f in range(frames)]) if frames > 1 else base
    return (stack - 2048).astype(np.int16) if signed else stack.astype(np.uint16)


def _voi_lut() -> Dataset:
    item = Dataset()
    item.LUTDescriptor = [4096, 0, 12]
    item.add_new("LUTData", "US", [int(4095 * (i / 4095) ** 0.5) for i in range(4096)])  # a gamma curve
    return item


SYNTHETIC = {
    "monochrome1_window": (_ramp(), {"PhotometricInterpretation": "MONOCHROME1", "WindowCenter": 2048, "WindowWidth": 2000}),
    "signed_rescale_window": (
        _ramp(True),
        {"RescaleSlope": 2, "RescaleIntercept": -1024, "WindowCenter": 40, "WindowWidth": 400},
    ),
    "linear_exact": (_ramp(), {"WindowCenter": 1000, "WindowWidth": 1500, "VOILUTFunction": "LINEAR_EXACT"}),
    "sigmoid": (_ramp(), {"WindowCenter": 2000, "WindowWidth": 1000, "VOILUTFunction": "SIGMOID"}),
    "voi_lut_sequence": (_ramp(), {"VOILUTSequence": [_voi_lut()]}),
    "minmax_monochrome1": (_ramp(), {"PhotometricInterpretation": "MONOCHROME1"}),
    "multiframe_middle": (_ramp(frames=5), {"WindowCenter": 2048, "WindowWidth": 4096}),
}


@pytest.mark.parametrize("name", sorted(SYNTHETIC))
def test_synthetic_display_pipeline_matches_dcmtk(tmp_path, name):
    arr, attrs = SYNTHETIC[name]
    path = _synthetic(tmp_path, name, arr, **attrs)
    assert _compare(path, tmp_path) >= MIN_PSNR


def test_wrong_rendering_would_fail_the_bound(pydicom_dir, tmp_path):
    # the bound has teeth: an inverted MR scores far below it
    ref = _reference(pydicom_dir / "MR_small.dcm", tmp_path)
    assert _psnr(255 - _ours(pydicom_dir / "MR_small.dcm"), ref) < 20
