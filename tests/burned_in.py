"""DICOM images with text burned into their pixels, drawn with Pillow (for the pixel-privacy tests).

Every string drawn is invented PHI of the kind ultrasound and screen captures print: a
name, an MRN, dates (4/14/2020, 08/29/1951), times and an institution, at the top and
bottom edges and in corners. The header carries the same values, as a device writes them.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from pathlib import Path

import numpy as np
from PIL import Image, ImageDraw, ImageFont
from pydicom.dataset import Dataset, FileMetaDataset
from pydicom.uid import ExplicitVRLittleEndian, PYDICOM_IMPLEMENTATION_UID, UltrasoundImageStorage, UltrasoundMultiFrameImageStorage, generate_uid

NAME, MRN, BIRTH, STUDY, TIME, PLACE = "DOE^JANE", "84736251", "08/29/1951", "4/14/2020", "13:45:10", "ST MARY CLINIC"

#: (text, corner) drawn on every image: banner across the top, dates in the bottom corners.
STRINGS = (
    (f"{NAME}  MRN {MRN}", "top-left"),
    (STUDY, "top-right"),
    (f"DOB {BIRTH}", "bottom-left"),
    (TIME, "bottom-right"),
    (PLACE, "bottom-middle"),
)


@dataclass(frozen=True)
class Drawn:
    """What was drawn where: the stored pixels, each string's box (x0, y0, x1, y1), the glyphs' pixels."""

    pixels: np.ndarray
    boxes: tuple[tuple[str, tuple[int, int, int, int]], ...]
    glyphs: np.ndarray | None = None


def phi_tokens() -> list[str]:
    """The tokens a test looks for in OCR output (normalized: upper-case letters and digits)."""
    tokens = {normalize(t) for s, _ in STRINGS for t in re.split(r"[\s^]+", s)}
    return sorted(t for t in tokens if len(t) >= 4 and t not in {"CLINIC"})


def normalize(text: str) -> str:
    return re.sub(r"[^0-9A-Z]", "", text.upper())


def _anatomy(rows: int, cols: int, rng: np.random.Generator) -> np.ndarray:
    yy, xx = np.mgrid[0:rows, 0:cols]
    r = np.hypot(yy - rows / 2, xx - cols / 2) / (min(rows, cols) / 3)
    return np.where(r < 1, 90 + 50 * (1 - r) + rng.normal(0, 12, r.shape), 0).clip(0, 255)


def draw_text(rows: int, cols: int, *, font_size: int, light_on_dark: bool = True, seed: int = 0) -> Drawn:
    """An 8-bit greyscale image with an "organ" in the middle and :data:`STRINGS` at its edges."""
    rng = np.random.default_rng(seed)
    base = _anatomy(rows, cols, rng)
    if not light_on_dark:
        base = 255 - base * 0.3
    image = Image.fromarray(base.astype(np.uint8), mode="L")
    pen = ImageDraw.Draw(image)
    mask = Image.new("L", image.size, 0)
    mask_pen = ImageDraw.Draw(mask)
    font = ImageFont.load_default(size=font_size)
    fill = 255 if light_on_dark else 0
    margin = max(3, font_size // 3)
    boxes = []
    for text, corner in STRINGS:
        x0, y0, x1, y1 = pen.textbbox((0, 0), text, font=font)
        w, h = x1 - x0, y1 - y0
        x = {"left": margin, "right": cols - w - margin, "middle": (cols - w) // 2}[corner.split("-")[1]]
        y = margin if corner.startswith("top") else rows - h - margin - y0
        pen.text((x, y), text, fill=fill, font=font)
        mask_pen.text((x, y), text, fill=255, font=font)
        boxes.append((text, pen.textbbox((x, y), text, font=font)))
    return Drawn(np.asarray(image).copy(), tuple(boxes), np.asarray(mask) > 0)


def burned_in_dataset(
    drawn: Drawn, *, rgb: bool = False, frames: int = 1, modality: str = "US", sop_uid: str | None = None
) -> Dataset:
    """A complete US instance (single or multi-frame, MONOCHROME2 or RGB) of the drawn pixels."""
    pixels = drawn.pixels
    if rgb:
        pixels = np.stack([pixels, pixels, (pixels * 0.8).astype(np.uint8)], axis=-1)
    if frames > 1:
        pixels = np.stack([np.roll(pixels, i, axis=0) if i % 2 else pixels for i in range(frames)])
    ds = Dataset()
    multi = frames > 1
    ds.file_meta = FileMetaDataset()
    ds.file_meta.TransferSyntaxUID = ExplicitVRLittleEndian
    ds.file_meta.MediaStorageSOPClassUID = UltrasoundMultiFrameImageStorage if multi else UltrasoundImageStorage
    ds.file_meta.MediaStorageSOPInstanceUID = sop_uid or generate_uid()
    ds.file_meta.ImplementationClassUID = PYDICOM_IMPLEMENTATION_UID
    ds.SOPClassUID = ds.file_meta.MediaStorageSOPClassUID
    ds.SOPInstanceUID = ds.file_meta.MediaStorageSOPInstanceUID
    ds.StudyInstanceUID, ds.SeriesInstanceUID = generate_uid(), generate_uid()
    ds.PatientName, ds.PatientID, ds.PatientBirthDate = NAME, MRN, "19510829"
    ds.StudyDate, ds.StudyTime, ds.InstitutionName = "20200414", "134510", PLACE
    ds.Modality, ds.Manufacturer = modality, "Synthetic Devices"
    ds.ImageType = ["ORIGINAL", "PRIMARY"]
    ds.Rows, ds.Columns = drawn.pixels.shape
    ds.SamplesPerPixel = 3 if rgb else 1
    ds.PhotometricInterpretation = "RGB" if rgb else "MONOCHROME2"
    if rgb:
        ds.PlanarConfiguration = 0
    if multi:
        ds.NumberOfFrames = frames
    ds.BitsAllocated = ds.BitsStored = 8
    ds.HighBit = 7
    ds.PixelRepresentation = 0
    ds.PixelData = np.ascontiguousarray(pixels).tobytes()
    return ds


def write(ds: Dataset, path: Path) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    ds.save_as(path, enforce_file_format=True)
    return path


def with_overlay_text(ds: Dataset, drawn: Drawn) -> Dataset:
    """Put the drawn text into overlay plane 6000 (its pixels stay as they are)."""
    from pydicom.pixels import pack_bits

    bits = (drawn.pixels > 200).astype(np.uint8)
    ds.add_new(0x60000010, "US", bits.shape[0])  # OverlayRows
    ds.add_new(0x60000011, "US", bits.shape[1])  # OverlayColumns
    ds.add_new(0x60000040, "CS", "G")  # OverlayType
    ds.add_new(0x60000050, "SS", [1, 1])  # OverlayOrigin
    ds.add_new(0x60000100, "US", 1)  # OverlayBitsAllocated
    ds.add_new(0x60000102, "US", 0)  # OverlayBitPosition
    ds.add_new(0x60003000, "OW", pack_bits(bits.ravel()))  # OverlayData
    return ds
