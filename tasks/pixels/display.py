"""Decode DICOM pixel data and map it to 8-bit display values, the way a viewer shows it.

The greyscale display pipeline of PS3.3 C.11 / PS3.4 N.2, in order:

1. modality LUT: a Modality LUT Sequence, else RescaleSlope/RescaleIntercept;
2. VOI LUT: a VOI LUT Sequence, else the first window (WindowCenter/WindowWidth) with its
   VOILUTFunction (LINEAR, LINEAR_EXACT, SIGMOID), else a robust min/max of the data;
3. presentation: MONOCHROME1 is inverted.

Enhanced (multi-frame) objects keep these attributes in the shared or per-frame functional
groups; they are looked up there for the frame shown. Colour images become sRGB: YBR_* is
converted by pydicom's decoders, PALETTE COLOR goes through its (8 or 16-bit, possibly
segmented) lookup tables, and RGB with more than 8 bits stored is scaled by its bit depth.
Sixteen-bit data is never cast straight to 8 bits, and never scaled by its maximum alone.
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from typing import Any, Literal

import numpy as np
import pydicom
from pydicom.dataset import Dataset
from pydicom.pixels import apply_color_lut, apply_modality_lut, apply_voi_lut, pixel_array
from pydicom.uid import JPEGLSLossless, JPEGLSNearLossless

from tasks.compat import dataset_elements

VoiFunction = Literal["LINEAR", "LINEAR_EXACT", "SIGMOID"]

#: Attributes of the display pipeline that enhanced objects put in functional groups.
_GROUP_SEQUENCES = ("PixelValueTransformationSequence", "FrameVOILUTSequence")


def frame_count(ds: Dataset) -> int:
    """Number of frames of an instance (1 when NumberOfFrames is absent or invalid)."""
    try:
        return max(int(ds.get("NumberOfFrames") or 1), 1)
    except (TypeError, ValueError):
        return 1


def middle_frame(ds: Dataset) -> int:
    """Index of the frame a single preview shows: the middle one."""
    return frame_count(ds) // 2


def _first(value: object) -> float:
    if isinstance(value, (list, tuple, pydicom.multival.MultiValue)):
        value = value[0]
    return float(value)  # type: ignore[arg-type]


def display_attributes(ds: Dataset, frame: int = 0) -> Dataset:
    """The header with the display attributes of ``frame`` lifted to the top level.

    Enhanced CT/MR/XA objects carry rescale and window values in
    ``SharedFunctionalGroupsSequence`` or ``PerFrameFunctionalGroupsSequence`` (PS3.3
    C.7.6.16) instead of the top level. Top-level values win; otherwise per-frame values,
    then shared ones, are copied into a shallow copy of ``ds``.
    """
    groups: list[Dataset] = []
    per_frame = ds.get("PerFrameFunctionalGroupsSequence")
    if per_frame and frame < len(per_frame):
        groups.append(per_frame[frame])
    shared = ds.get("SharedFunctionalGroupsSequence")
    if shared:
        groups.append(shared[0])
    if not groups:
        return ds
    out = Dataset()
    out.update(ds)  # shallow: elements are shared, not copied
    out.file_meta = getattr(ds, "file_meta", Dataset())
    for group in groups:
        for seq_name in _GROUP_SEQUENCES:
            items = group.get(seq_name)
            if not items:
                continue
            for elem in items[0]:
                if elem.keyword and elem.keyword not in out:
                    out[elem.tag] = elem
    return out


def window_to_uint8(
    arr: np.ndarray, center: float, width: float, function: str = "LINEAR"
) -> np.ndarray:
    """Apply a VOI window (PS3.3 C.11.2.1.2) and map the result onto 0..255.

    Parameters
    ----------
    arr : numpy.ndarray
        Values after the modality LUT.
    center, width : float
        Window centre and width.
    function : {"LINEAR", "LINEAR_EXACT", "SIGMOID"}
        The VOI LUT function; anything else is treated as LINEAR.

    Returns
    -------
    numpy.ndarray of uint8
    """
    x = arr.astype(np.float32)  # a copy: the steps below work in place
    function = (function or "LINEAR").strip().upper()
    if function == "SIGMOID":
        x -= center
        x *= -4.0 / max(width, 1e-6)
        np.exp(x, out=x)
        x += 1.0
        np.reciprocal(x, out=x)
        return _unit_to_uint8(x)
    if function == "LINEAR_EXACT":
        scale, offset = 1.0 / max(width, 1e-6), 0.5 - center / max(width, 1e-6)
    else:
        w = max(max(width, 1.0) - 1.0, 1.0)
        scale, offset = 1.0 / w, 0.5 - (center - 0.5) / w
    x *= scale
    x += offset
    return _unit_to_uint8(x)


def _unit_to_uint8(y: np.ndarray) -> np.ndarray:
    """0..1 floats to 0..255 bytes, rounding; works in place on ``y``."""
    y *= 255.0
    y += 0.5
    np.clip(y, 0.0, 255.0, out=y)
    return y.astype(np.uint8)


def robust_to_uint8(
    arr: np.ndarray, *, low: float = 0.5, high: float = 99.5
) -> np.ndarray:
    """Map data onto 0..255 between two percentiles (used when the header has no window).

    Parameters
    ----------
    arr : numpy.ndarray
    low, high : float
        Percentiles mapped to black and white; ``0`` and ``100`` give a plain min/max.
    """
    x = arr.astype(np.float32, copy=False)
    sample = x if x.size <= 1 << 18 else x.ravel()[:: x.size // (1 << 18) + 1]
    exact = arr.dtype.kind in "iub"  # whole numbers: every value is finite
    finite = sample if exact else sample[np.isfinite(sample)]
    if finite.size == 0:
        return np.zeros(x.shape, np.uint8)
    if low <= 0 and high >= 100:
        lo, hi = float(finite.min()), float(finite.max())
    else:
        lo, hi = percentiles(finite, (low, high))
    if hi <= lo:
        lo, hi = float(finite.min()), float(finite.max())
    if hi <= lo:
        return np.zeros(x.shape, np.uint8)
    return _unit_to_uint8(((x if exact else np.nan_to_num(x)) - lo) / (hi - lo))


def percentiles(values: np.ndarray, qs: Sequence[float]) -> list[float]:
    """``np.percentile(values, qs)`` (method "linear"): the same numbers, a third of the time.

    One partition of a copy, then numpy's interpolation step by step; ``np.percentile``
    spends ~130 us on a 64x64 image around the same partition.
    """
    flat = values.ravel()
    last = flat.size - 1
    points = []
    for q in qs:
        virtual = last * (q / 100)
        below = min(math.floor(virtual), last)
        points.append((below, min(below + 1, last), virtual - math.floor(virtual)))
    part = np.partition(flat, sorted({k for i, j, _ in points for k in (i, j)}))
    out = []
    for i, j, t in points:
        a, b = part[i], part[j]
        diff = float(b - a)  # in the array's own type, as numpy subtracts
        out.append(float(b) - diff * (1 - t) if t >= 0.5 else float(a) + diff * t)
    return out


def _voi_lut_to_uint8(values: np.ndarray, ds: Dataset) -> np.ndarray:
    out = apply_voi_lut(values, ds, index=0, prefer_lut=True)
    lut = ds.VOILUTSequence[0]
    declared = int(lut.LUTDescriptor[2]) or 16
    # some writers declare 16 bits and fill 12: scale by the bits the table actually uses
    data_max = int(np.max(out)) if out.size else 0
    bits = min(declared, max(int(data_max).bit_length(), 8))
    return _unit_to_uint8(out.astype(np.float32) / float((1 << bits) - 1))


def _palette_to_rgb(arr: np.ndarray, ds: Dataset) -> np.ndarray:
    rgb = apply_color_lut(arr, ds)
    if rgb.dtype == np.uint8:
        return rgb
    # 16-bit entries; a few writers store 8-bit values in them (the max tells)
    if int(rgb.max()) <= 255:
        return rgb.astype(np.uint8)
    return (rgb >> 8).astype(np.uint8)


def to_display(
    arr: np.ndarray,
    ds: Dataset,
    *,
    percentiles: Sequence[float] = (0.5, 99.5),
) -> np.ndarray:
    """One decoded frame to an 8-bit greyscale (H, W) or RGB (H, W, 3) array.

    Parameters
    ----------
    arr : numpy.ndarray
        A single decoded frame as pydicom returns it (YBR already converted to RGB).
    ds : Dataset
        The instance's header (use :func:`display_attributes` for enhanced objects).
    percentiles : (float, float), default (0.5, 99.5)
        Data percentiles mapped to black and white when the header has neither a VOI LUT
        nor a window; ``(0, 100)`` is a plain min/max.

    Returns
    -------
    numpy.ndarray of uint8
    """
    photometric = str(ds.get("PhotometricInterpretation", "MONOCHROME2")).strip().upper()
    if photometric == "PALETTE COLOR":
        return _palette_to_rgb(arr, ds)
    if arr.ndim == 3 and arr.shape[-1] in (3, 4):
        rgb = arr[..., :3]
        if rgb.dtype == np.uint8:
            return rgb
        if np.issubdtype(rgb.dtype, np.integer):
            bits = int(ds.get("BitsStored") or rgb.dtype.itemsize * 8)
            return _unit_to_uint8(rgb.astype(np.float32) / float((1 << bits) - 1))
        return robust_to_uint8(rgb, low=0.0, high=100.0)
    values = _modality(arr, ds)
    voi_lut = ds.get("VOILUTSequence")
    if voi_lut and "LUTDescriptor" in voi_lut[0] and "LUTData" in voi_lut[0]:
        display = _voi_lut_to_uint8(values, ds)
    else:
        display = _voi_to_uint8(values, _window(ds), str(ds.get("VOILUTFunction") or "LINEAR"), percentiles)
    if photometric == "MONOCHROME1":
        display = 255 - display
    return display


def _voi_to_uint8(
    values: np.ndarray, window: tuple[float, float] | None, function: str, percentiles: Sequence[float]
) -> np.ndarray:
    """The window if there is one, else the robust range of the data."""
    if window is not None:
        return window_to_uint8(values, window[0], window[1], function)
    low, high = percentiles
    return robust_to_uint8(values, low=low, high=high)


def _modality(arr: np.ndarray, ds: Dataset) -> np.ndarray:
    """The modality LUT; rescale in float32 (pydicom's float64 is twice the work)."""
    if "ModalityLUTSequence" in ds:
        return apply_modality_lut(arr, ds)
    try:
        slope = float(ds.get("RescaleSlope") or 1.0)
        intercept = float(ds.get("RescaleIntercept") or 0.0)
    except (TypeError, ValueError):
        return apply_modality_lut(arr, ds)
    return _rescale(arr, slope, intercept)


def _rescale(arr: np.ndarray, slope: float, intercept: float) -> np.ndarray:
    if slope == 1.0 and intercept == 0.0:
        return arr
    out = arr.astype(np.float32)
    out *= slope
    out += intercept
    return out


def _window(ds: Dataset) -> tuple[float, float] | None:
    return _valid_window(ds.get("WindowCenter"), ds.get("WindowWidth"))


def _valid_window(center: object, width: object) -> tuple[float, float] | None:
    """The first window centre and width as floats, or None if absent or unusable."""
    if center is None or width is None:
        return None
    try:
        c, w = _first(center), _first(width)
    except (TypeError, ValueError, IndexError):
        return None
    if not np.isfinite(c) or not np.isfinite(w) or w <= 0:
        return None
    return c, w


def decode_frame(ds: Dataset, index: int) -> np.ndarray:
    """Decode one frame of an instance (YBR converted to RGB).

    Wrap calls in :func:`tasks.dicom.extract.quiet_pydicom`: pydicom's warnings can carry
    header values (PHI).

    Raises
    ------
    Exception
        Whatever the decoder raises for pixel data it cannot decode (no plugin for the
        transfer syntax, corrupt codestream); the caller turns it into ``pixel_decode``.
    """
    elem = dataset_elements(ds).get(PIXEL_DATA)
    value = getattr(elem, "value", b"")
    if (value is None or isinstance(value, memoryview)) and getattr(ds, "filename", None):
        # a large file, deferred or mapped (tasks.dicom.instance.load_file): pydicom reads just this frame from disk
        return pixel_array(ds.filename, index=index if frame_count(ds) > 1 else None, decoding_plugin=_fast_plugin(ds))
    plugin = _fast_plugin(ds)
    if plugin:
        try:
            return pixel_array(ds, index=index if frame_count(ds) > 1 else None, decoding_plugin=plugin)
        except Exception:  # noqa: BLE001 - the preferred plugin refused: let pydicom try them all
            pass
    if frame_count(ds) > 1:
        return pixel_array(ds, index=index)
    return ds.pixel_array


def decode_all(ds: Dataset) -> np.ndarray:
    """Decode every frame of an instance, as ``ds.pixel_array`` gives them (YBR converted to RGB).

    Wrap calls in :func:`tasks.dicom.extract.quiet_pydicom`; raises what the decoder raises.
    """
    elem = dataset_elements(ds).get(PIXEL_DATA)
    value = getattr(elem, "value", b"")
    plugin = _fast_plugin(ds)
    if (value is None or isinstance(value, memoryview)) and getattr(ds, "filename", None):
        return pixel_array(ds.filename, decoding_plugin=plugin)  # a large file: deferred or mapped
    if plugin:
        try:
            return pixel_array(ds, decoding_plugin=plugin)
        except Exception:  # noqa: BLE001 - the preferred plugin refused: let pydicom try them all
            pass
    return ds.pixel_array


def _fast_plugin(ds: Dataset) -> str:
    # pydicom tries pylibjpeg first for JPEG-LS; CharLS (pyjpegls) decodes it ~10x faster
    ts = getattr(getattr(ds, "file_meta", None), "TransferSyntaxUID", None)
    if ts in (JPEGLSLossless, JPEGLSNearLossless):
        return "pyjpegls"
    return ""


#: Native (uncompressed) little-endian transfer syntaxes: pixel bytes are the array.
NATIVE_SYNTAXES = frozenset({"1.2.840.10008.1.2", "1.2.840.10008.1.2.1"})
#: Elements only the general pipeline handles: modality and VOI LUT sequences, functional groups.
_GENERAL_ONLY = (0x00283000, 0x00283010, 0x52009229, 0x52009230)
PIXEL_DATA = 0x7FE00010


def native_display(
    ds: Dataset, image: Mapping[str, Any], *, percentiles: Sequence[float] = (0.5, 99.5)
) -> np.ndarray | None:
    """The display of the middle frame of a plain uncompressed image, without pydicom's decoders.

    The common case of a batch (native little-endian, MONOCHROME1/2 or 8-bit RGB,
    rescale and window in the header, no LUT sequences or functional groups) costs a
    fraction of :func:`display_frame` here: the frame's bytes are viewed in place (also
    in a mapped multi-GB file) and the attributes come from the ``images`` row extraction
    already decoded. The result is the array ``display_frame(ds, middle_frame(ds))``
    returns (the tests compare them); anything else returns ``None``: the general path.

    Parameters
    ----------
    ds : Dataset
        The parsed instance (raw elements are fine).
    image : mapping
        Its ``images`` row (Rows, BitsStored, RescaleSlope, ... as extracted).
    percentiles : (float, float), default (0.5, 99.5)
        As for :func:`to_display`.

    Returns
    -------
    numpy.ndarray of uint8 or None
    """
    try:
        arr = _native_array(ds, image)
        if arr is None or arr.ndim == 3:
            return arr
        slope = float(image.get("RescaleSlope") or 1.0)
        intercept = float(image.get("RescaleIntercept") or 0.0)
    except (TypeError, ValueError, KeyError):
        return None
    window = _valid_window(image.get("WindowCenter"), image.get("WindowWidth"))
    function = str(image.get("VOILUTFunction") or "LINEAR")
    display = _voi_to_uint8(_rescale(arr, slope, intercept), window, function, percentiles)
    if str(image.get("PhotometricInterpretation")).strip().upper() == "MONOCHROME1":
        display = 255 - display
    return display


def _native_array(ds: Dataset, image: Mapping[str, Any]) -> np.ndarray | None:
    """The pixel array of a plain native image as pydicom would decode it, or None."""
    if image.get("TransferSyntaxUID") not in NATIVE_SYNTAXES or any(tag in dataset_elements(ds) for tag in _GENERAL_ONLY):
        return None
    elem = dataset_elements(ds).get(PIXEL_DATA)
    value = getattr(elem, "value", None)
    if not isinstance(value, (bytes, memoryview)):
        return None
    frames = int(image.get("NumberOfFrames") or 1)
    if frames < 1:
        return None
    frame = frames // 2  # the middle frame, as middle_frame()
    rows, cols = int(image["Rows"]), int(image["Columns"])
    samples = int(image.get("SamplesPerPixel") or 1)
    allocated = int(image["BitsAllocated"])
    stored = int(image.get("BitsStored") or allocated)
    signed = int(image.get("PixelRepresentation") or 0) == 1
    photometric = str(image.get("PhotometricInterpretation") or "").strip().upper()
    if rows < 1 or cols < 1 or allocated not in (8, 16) or not 1 <= stored <= allocated:
        return None
    if samples == 3 and photometric == "RGB" and allocated == 8 and stored == 8 and not signed:
        count = rows * cols * 3
        if len(value) < count * frames:
            return None
        flat = np.frombuffer(value, np.uint8, count, offset=count * frame)
        if int(image.get("PlanarConfiguration") or 0) == 1:
            return flat.reshape(3, rows, cols).transpose(1, 2, 0)
        return flat.reshape(rows, cols, 3)
    if samples != 1 or photometric not in ("MONOCHROME1", "MONOCHROME2"):
        return None
    count = rows * cols
    unsigned = np.uint8 if allocated == 8 else np.dtype("<u2")
    if len(value) < count * (allocated // 8) * frames:
        return None
    arr = np.frombuffer(value, unsigned, count, offset=count * (allocated // 8) * frame).reshape(rows, cols)
    if stored < allocated:  # pydicom masks the unused high bits, and sign-extends signed data
        arr = arr & np.array((1 << stored) - 1, unsigned)
        if signed:
            shift = allocated - stored
            kind = np.int8 if allocated == 8 else np.int16
            return (arr << shift).astype(unsigned).view(kind) >> shift
        return arr
    return arr.view(np.int8 if allocated == 8 else np.dtype("<i2")) if signed else arr


def display_frame(
    ds: Dataset,
    index: int,
    *,
    percentiles: Sequence[float] = (0.5, 99.5),
) -> np.ndarray:
    """Decode frame ``index`` of ``ds`` and run the display pipeline on it (8-bit)."""
    arr = decode_frame(ds, index)
    return to_display(arr, display_attributes(ds, index), percentiles=percentiles)
