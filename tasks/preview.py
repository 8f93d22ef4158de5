"""Render DICOM pixel data into 8-bit preview JPEGs, the way a viewer would show them.

The display pipeline of PS3.3 C.11 / PS3.4 N.2: modality LUT (rescale) -> VOI LUT
(a VOI LUT sequence, else the first window with its VOI LUT function, else a robust
min/max of the data) -> MONOCHROME1 inversion; colour images are converted to RGB
(YBR decoded by pydicom, PALETTE COLOR through its lookup tables). Sixteen-bit data is
never cast straight to 8 bits and never scaled by its maximum alone.
"""

from __future__ import annotations

import io
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pydicom
from PIL import Image
from pydicom.dataset import Dataset
from pydicom.pixels import apply_color_lut, apply_modality_lut, apply_voi_lut, pixel_array

from tasks.deid import pseudonym
from tasks.extract import quiet_pydicom


@dataclass(frozen=True)
class Preview:
    """A rendered preview."""

    jpeg: bytes
    width: int
    height: int
    frame_index: int


def middle_frame(ds: Dataset) -> int:
    """Index of the frame a single preview shows: the middle one."""
    try:
        frames = int(ds.get("NumberOfFrames") or 1)
    except (TypeError, ValueError):
        frames = 1
    return max(frames, 1) // 2


def _first(value: object) -> float:
    if isinstance(value, (list, tuple, pydicom.multival.MultiValue)):
        value = value[0]
    return float(value)  # type: ignore[arg-type]


def window_to_uint8(arr: np.ndarray, center: float, width: float, function: str = "LINEAR") -> np.ndarray:
    """Apply a VOI window (PS3.3 C.11.2.1.2) and map the result onto 0..255.

    Parameters
    ----------
    arr : numpy.ndarray
        Values after the modality LUT.
    center, width : float
        Window centre and width.
    function : {"LINEAR", "LINEAR_EXACT", "SIGMOID"}
        The VOI LUT function.

    Returns
    -------
    numpy.ndarray of uint8
    """
    x = arr.astype(np.float64, copy=False)
    function = (function or "LINEAR").strip().upper()
    if function == "SIGMOID":
        y = 1.0 / (1.0 + np.exp(-4.0 * (x - center) / max(width, 1e-6)))
    elif function == "LINEAR_EXACT":
        y = (x - center) / max(width, 1e-6) + 0.5
    else:
        w = max(width, 1.0)
        y = (x - (center - 0.5)) / max(w - 1.0, 1.0) + 0.5
    return (np.clip(y, 0.0, 1.0) * 255.0 + 0.5).astype(np.uint8)


def robust_to_uint8(arr: np.ndarray, *, low: float = 0.5, high: float = 99.5) -> np.ndarray:
    """Map data onto 0..255 between two percentiles (no window in the header)."""
    x = arr.astype(np.float64, copy=False)
    finite = x[np.isfinite(x)]
    if finite.size == 0:
        return np.zeros(x.shape, np.uint8)
    lo, hi = np.percentile(finite, [low, high])
    if hi <= lo:
        lo, hi = float(finite.min()), float(finite.max())
    if hi <= lo:
        return np.zeros(x.shape, np.uint8)
    return (np.clip((x - lo) / (hi - lo), 0.0, 1.0) * 255.0 + 0.5).astype(np.uint8)


def to_display(arr: np.ndarray, ds: Dataset) -> np.ndarray:
    """One decoded frame to an 8-bit greyscale (H, W) or RGB (H, W, 3) array.

    Parameters
    ----------
    arr : numpy.ndarray
        A single decoded frame, as pydicom returns it (YBR already converted to RGB).
    ds : Dataset
        The instance's header.
    """
    photometric = str(ds.get("PhotometricInterpretation", "MONOCHROME2")).strip().upper()
    if photometric == "PALETTE COLOR":
        rgb = apply_color_lut(arr, ds)
        bits = 16 if rgb.dtype.itemsize > 1 or rgb.max() > 255 else 8
        return (rgb >> 8).astype(np.uint8) if bits == 16 else rgb.astype(np.uint8)
    if arr.ndim == 3 and arr.shape[-1] in (3, 4):
        rgb = arr[..., :3]
        if rgb.dtype == np.uint8:
            return rgb
        return robust_to_uint8(rgb, low=0.0, high=100.0)
    values = apply_modality_lut(arr, ds)
    if "VOILUTSequence" in ds and ds.VOILUTSequence:
        lut = ds.VOILUTSequence[0]
        out = apply_voi_lut(arr if values is arr else values, ds, prefer_lut=True)
        bits = int(lut.LUTDescriptor[2]) or 16
        display = (np.clip(out / float((1 << bits) - 1), 0.0, 1.0) * 255.0 + 0.5).astype(np.uint8)
    elif ds.get("WindowCenter") is not None and ds.get("WindowWidth") is not None:
        try:
            center, width = _first(ds.WindowCenter), _first(ds.WindowWidth)
        except (TypeError, ValueError, IndexError):
            center = width = None
        if center is not None and width and width > 0:
            display = window_to_uint8(values, center, width, str(ds.get("VOILUTFunction", "LINEAR")))
        else:
            display = robust_to_uint8(values)
    else:
        display = robust_to_uint8(values)
    if photometric == "MONOCHROME1":
        display = 255 - display
    return display


def render_preview(
    ds: Dataset,
    *,
    frame: int | None = None,
    max_size: int = 512,
    quality: int = 85,
) -> Preview:
    """Decode one frame of an instance and encode it as an 8-bit JPEG.

    Parameters
    ----------
    ds : Dataset
        A full instance (with pixel data).
    frame : int, optional
        Frame to render; the middle frame by default.
    max_size : int, default 512
        Longest side of the preview in pixels; larger images are downscaled.
    quality : int, default 85
        JPEG quality, 1-95.

    Returns
    -------
    Preview

    Raises
    ------
    Exception
        Whatever the decoder raises for pixel data it cannot decode; the caller turns it
        into a ``pixel_decode`` error.
    """
    index = middle_frame(ds) if frame is None else frame
    with quiet_pydicom():
        frames = int(ds.get("NumberOfFrames") or 1)
        arr = pixel_array(ds, index=index) if frames > 1 else ds.pixel_array
        display = to_display(arr, ds)
    image = Image.fromarray(display, mode="RGB" if display.ndim == 3 else "L")
    if max(image.size) > max_size:
        image.thumbnail((max_size, max_size), Image.Resampling.LANCZOS)
    buf = io.BytesIO()
    image.save(buf, format="JPEG", quality=quality, optimize=False)
    return Preview(buf.getvalue(), image.width, image.height, index)


def preview_key(image_id: str) -> str:
    """Lake key of a preview; ``image_id`` is a pseudonym, so the name carries no PHI."""
    return f"previews/{image_id[:2]}/{image_id}.jpg"


def write_preview(lake: Path, key: str, preview: Preview) -> None:
    """Store preview bytes under ``lake/key`` atomically."""
    path = lake / key
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.partial")
    tmp.write_bytes(preview.jpeg)
    tmp.replace(path)


def render_batch(
    lake: Path,
    images: list[tuple[Path, str, str]],
    *,
    secret: str,
    max_size: int = 512,
    quality: int = 85,
) -> tuple[list[dict], list[dict]]:
    """Render and store the previews of a batch of images.

    Parameters
    ----------
    lake : Path
    images : list of (path, source key, SOPInstanceUID)
        Files known to carry pixel data.
    secret : str
        De-identification secret; the preview's name is the image's pseudonym.

    Returns
    -------
    previews, errors : list of dict
        Rows for the ``previews`` table and ``ingest_errors`` rows (reason
        ``pixel_decode``) for images whose pixels could not be decoded.
    """
    previews: list[dict] = []
    errors: list[dict] = []
    for path, key, sop_uid in images:
        try:
            with quiet_pydicom():
                ds = pydicom.dcmread(path, force=True)
            preview = render_preview(ds, max_size=max_size, quality=quality)
        except Exception as exc:  # any decoder failure is this file's, not the batch's
            errors.append(
                {
                    "source_key": key,
                    "SOPInstanceUID": sop_uid,
                    "stage": "preview",
                    "reason": "pixel_decode",
                    "detail": f"{type(exc).__name__}: {exc}"[:500],
                }
            )
            continue
        pkey = preview_key(pseudonym(sop_uid, secret))
        write_preview(lake, pkey, preview)
        previews.append(
            {
                "SOPInstanceUID": sop_uid,
                "source_key": key,
                "preview_key": pkey,
                "preview_bytes": len(preview.jpeg),
                "preview_width": preview.width,
                "preview_height": preview.height,
                "frame_index": preview.frame_index,
            }
        )
    return previews, errors
