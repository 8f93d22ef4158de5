"""Benchmark inputs for the preview stage: realistic-size CT slices (some JPEG-LS compressed), and
ultrasound images with text burned in (what pixel privacy cleans)."""

from __future__ import annotations

from pathlib import Path

import numpy as np
from pydicom.dataset import Dataset, FileMetaDataset
from pydicom.uid import CTImageStorage, ExplicitVRLittleEndian, JPEGLSLossless, generate_uid


def write_ct_slices(out_dir: Path, *, count: int = 200, size: int = 512, compressed_every: int = 4, seed: int = 0) -> list[Path]:
    """Write ``count`` synthetic 16-bit CT slices of ``size`` x ``size`` pixels.

    Parameters
    ----------
    out_dir : Path
    count, size : int
        Number of slices and their side in pixels (512 is a typical CT matrix).
    compressed_every : int, default 4
        Every n-th slice is stored JPEG-LS lossless, so decoding is part of the measure.
    seed : int

    Returns
    -------
    list of Path
    """
    rng = np.random.default_rng(seed)
    out_dir.mkdir(parents=True, exist_ok=True)
    yy, xx = np.mgrid[0:size, 0:size]
    r = np.hypot(yy - size / 2, xx - size / 2) / size
    paths = []
    for i in range(count):
        hu = np.where(r < 0.42, 40, -1000) + np.where((r > 0.33) & (r < 0.37), 900 + 5 * i, 0)
        arr = (hu + 1024 + rng.normal(0, 15, r.shape)).clip(0, 4095).astype(np.uint16)
        ds = _greyscale_instance(CTImageStorage, "CT", size, size, bits=(16, 12))
        ds.RescaleSlope, ds.RescaleIntercept = 1, -1024
        ds.WindowCenter, ds.WindowWidth = 40, 400
        ds.PixelData = arr.tobytes()
        if compressed_every and i % compressed_every == 0:
            ds.compress(JPEGLSLossless, generate_instance_uid=False)
        path = out_dir / f"ct{i:05d}.dcm"
        ds.save_as(path, enforce_file_format=True)
        paths.append(path)
    return paths


def _greyscale_instance(sop_class: str, modality: str, rows: int, columns: int, *, bits: tuple[int, int]) -> Dataset:
    """A MONOCHROME2 instance header (new UIDs) without pixel data; ``bits`` is (allocated, stored)."""
    ds = Dataset()
    ds.file_meta = FileMetaDataset()
    ds.file_meta.MediaStorageSOPClassUID = sop_class
    ds.SOPInstanceUID = ds.file_meta.MediaStorageSOPInstanceUID = generate_uid()
    ds.file_meta.TransferSyntaxUID = ExplicitVRLittleEndian
    ds.SOPClassUID = sop_class
    ds.Modality = modality
    ds.StudyInstanceUID = ds.SeriesInstanceUID = generate_uid()
    ds.Rows, ds.Columns = rows, columns
    ds.SamplesPerPixel = 1
    ds.PhotometricInterpretation = "MONOCHROME2"
    ds.BitsAllocated, ds.BitsStored, ds.HighBit, ds.PixelRepresentation = bits[0], bits[1], bits[1] - 1, 0
    return ds


def write_us_with_text(out_dir: Path, *, count: int = 40, rows: int = 480, columns: int = 640, seed: int = 0) -> list[Path]:
    """Write ``count`` 8-bit ultrasound images with invented PHI burned into them (banner and corners).

    The kind of image pixel privacy cleans: triage puts them at risk (Modality US), OCR
    finds the text, blanks it and verifies.

    Returns
    -------
    list of Path
    """
    from PIL import Image, ImageDraw, ImageFont
    from pydicom.uid import UltrasoundImageStorage

    rng = np.random.default_rng(seed)
    out_dir.mkdir(parents=True, exist_ok=True)
    yy, xx = np.mgrid[0:rows, 0:columns]
    sector = np.hypot(yy - 36, xx - columns / 2) / rows  # the image below a black banner, as devices show it
    font = ImageFont.load_default(size=max(10, rows // 36))
    paths = []
    for i in range(count):
        inside = (sector < 0.85) & (yy > 36)
        arr = np.where(inside, 60 + 40 * np.sin(sector * 40 + i) + rng.normal(0, 20, sector.shape), 0).clip(0, 255)
        image = Image.fromarray(arr.astype(np.uint8))
        pen = ImageDraw.Draw(image)
        pen.text((6, 4), f"PATIENT^NAME{i}  MRN {7310000 + i}  4/14/2020", fill=255, font=font)
        pen.text((6, rows - 24), f"DOB 08/29/1951  13:{i % 60:02d}:10", fill=255, font=font)
        pen.text((columns - 160, rows - 24), "GENERAL HOSPITAL", fill=255, font=font)
        ds = _greyscale_instance(UltrasoundImageStorage, "US", rows, columns, bits=(8, 8))
        ds.PixelData = np.asarray(image).tobytes()
        path = out_dir / f"us{i:05d}.dcm"
        ds.save_as(path, enforce_file_format=True)
        paths.append(path)
    return paths
