"""8-bit preview JPEGs of DICOM images, stored in the lake under pseudonymous names.

Decoding and the display pipeline (modality LUT, VOI LUT / window, MONOCHROME1, colour)
live in :mod:`tasks.pixels.display`; this module encodes JPEGs, names and stores them, and runs a
batch, optionally on a process pool so a batch uses every core.
"""

from __future__ import annotations

import contextlib
import io
import os
from collections.abc import Mapping, Sequence
from concurrent.futures import Executor
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any, Literal

import numpy as np
import pydicom
from PIL import Image
from pydicom.dataset import Dataset

from tasks.deid import pseudonym
from tasks.compat import max_workers
from tasks.errors import Reason
from tasks.dicom import instance
from tasks.dicom.entities import ingest_error
from tasks.lake.files import write_atomic
from tasks.dicom.instance import quiet_pydicom
from tasks.pixels.display import (
    decode_all,
    display_attributes,
    display_frame,
    frame_count,
    middle_frame,
    native_display,
    robust_to_uint8,
    to_display,
    window_to_uint8,
)
from tasks.pixels.ocr import Tesseract
from tasks.pixels.privacy import PixelText, RegionRule, TriageRule, clean_batch, read_region_rules, read_triage_rules, triage

__all__ = [
    "Preview",
    "PreviewOptions",
    "encode_jpeg",
    "middle_frame",
    "preview_key",
    "render_batch",
    "render_dataset",
    "render_preview",
    "robust_to_uint8",
    "window_to_uint8",
    "write_preview",
]

Frames = Literal["middle", "all"]
#: Images rendered together: the at-risk ones among them share their OCR runs (and are held
#: decoded until the group is done).
OCR_GROUP = 8


@dataclass(frozen=True)
class Preview:
    """A rendered preview."""

    jpeg: bytes
    width: int
    height: int
    frame_index: int


@dataclass(frozen=True)
class PreviewOptions:
    """How previews are rendered.

    Parameters
    ----------
    max_size : int, default 512
        Longest side in pixels; larger images are downscaled (never upscaled).
    quality : int, default 85
        JPEG quality, 1-95.
    frames : {"middle", "all"}, default "middle"
        ``"all"`` also writes every frame of a multi-frame image next to the main preview.
    pixel_text : {"all", "sensitive", "none"}, default "all"
        Burned-in text removal on images triage finds at risk (see
        :func:`tasks.pixels.privacy.clean_pixels`).
    triage_rules, region_rules : tuple
        The pixel-privacy seeds' rules (read from ``dbt_project/seeds`` by default).
    ocr : Tesseract
        How OCR runs.
    """

    max_size: int = 512
    quality: int = 85
    frames: Frames = "middle"
    pixel_text: PixelText = "all"
    triage_rules: tuple[TriageRule, ...] = field(default_factory=read_triage_rules, repr=False)
    region_rules: tuple[RegionRule, ...] = field(default_factory=read_region_rules, repr=False)
    ocr: Tesseract = field(default_factory=Tesseract)


def encode_jpeg(display: np.ndarray, *, max_size: int = 512, quality: int = 85) -> tuple[bytes, int, int]:
    """Encode an 8-bit greyscale or RGB array as a JPEG no larger than ``max_size``.

    Returns
    -------
    jpeg, width, height : bytes, int, int
    """
    image = Image.fromarray(np.ascontiguousarray(display), mode="RGB" if display.ndim == 3 else "L")
    if max(image.size) > max_size:
        # by whole factors first, averaging blocks (1 ms for a 1024x1024 CR), then Lanczos for
        # what remains: 10x faster than Lanczos all the way, 40 dB PSNR from it on a preview
        image.thumbnail((max_size, max_size), Image.Resampling.LANCZOS, reducing_gap=1.0)
    buf = io.BytesIO()
    # 4:2:0 chroma blurs saturated edges (colour overlays, text); keep full chroma at high quality
    image.save(buf, format="JPEG", quality=quality, subsampling="4:4:4" if quality >= 90 else "4:2:0")
    return buf.getvalue(), image.width, image.height


def render_preview(
    ds: Dataset,
    *,
    frame: int | None = None,
    max_size: int = 512,
    quality: int = 85,
    percentiles: Sequence[float] = (0.5, 99.5),
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
    percentiles : (float, float), default (0.5, 99.5)
        Black and white points when the header has no window (see :func:`tasks.pixels.display.to_display`).

    Returns
    -------
    Preview

    Raises
    ------
    Exception
        Whatever the decoder raises for pixel data it cannot decode; the caller turns it
        into a ``pixel_decode`` error.
    """
    with quiet_pydicom():
        return _render(ds, frame=frame, max_size=max_size, quality=quality, percentiles=percentiles)


def _render(
    ds: Dataset, *, frame: int | None, max_size: int, quality: int, percentiles: Sequence[float] = (0.5, 99.5)
) -> Preview:
    index = middle_frame(ds) if frame is None else frame
    display = display_frame(ds, index, percentiles=percentiles)
    jpeg, width, height = encode_jpeg(display, max_size=max_size, quality=quality)
    return Preview(jpeg, width, height, index)


def preview_key(image_id: str, frame: int | None = None) -> str:
    """Lake key of a preview; ``image_id`` is a pseudonym, so the name carries no PHI.

    The main preview is ``previews/<xx>/<id>.jpg``; with every frame rendered, frame ``n``
    is ``previews/<xx>/<id>/frame-<nnnn>.jpg``.
    """
    if frame is None:
        return f"previews/{image_id[:2]}/{image_id}.jpg"
    return f"previews/{image_id[:2]}/{image_id}/frame-{frame:04d}.jpg"


def write_preview(lake: Path, key: str, preview: Preview) -> None:
    """Store preview bytes under ``lake/key`` atomically."""
    write_atomic(os.path.join(lake, key), preview.jpeg)  # no Path: one per image adds up


def render_file(
    lake: Path, path: Path, key: str, sop_uid: str, image_id: str, options: PreviewOptions
) -> tuple[dict | None, dict | None]:
    """Render and store the preview(s) of one file: ``(previews row, None)`` or ``(None, error row)``.

    A top-level function of plain arguments, so a process pool can run it.
    """
    return render_files(lake, [(path, key, sop_uid, image_id)], options)[0]


def render_files(
    lake: Path, files: Sequence[tuple[Path, str, str, str]], options: PreviewOptions
) -> list[tuple[dict | None, dict | None]]:
    """:func:`render_file` for ``(path, key, SOPInstanceUID, image id)`` files, :data:`OCR_GROUP` at a time.

    At-risk images of a group are cleaned together (one OCR process per step for all).
    """
    results: list[tuple[dict | None, dict | None]] = []
    with quiet_pydicom():  # once per call: it resets logging caches, which is not free
        for start in range(0, len(files), OCR_GROUP):
            group, failed = [], {}
            for i, (path, key, uid, image_id) in enumerate(files[start : start + OCR_GROUP]):
                try:
                    if path.stat().st_size >= instance.LARGE_FILE_BYTES:  # mapped: one frame is read, not the file
                        ds = instance.read_dicom(instance.load_file(path), path)
                    else:
                        ds = pydicom.dcmread(path, force=True)
                except Exception as exc:  # noqa: BLE001 - unreadable now: this file's error, not the batch's
                    failed[i] = (None, _decode_error(key, uid, exc))
                    continue
                group.append((ds, key, uid, image_id, None))
            rendered = iter(render_datasets(lake, group, options))
            results += [failed[i] if i in failed else next(rendered) for i in range(min(OCR_GROUP, len(files) - start))]
    return results


def render_dataset(
    lake: Path,
    ds: Dataset,
    key: str,
    sop_uid: str,
    image_id: str,
    options: PreviewOptions,
    image: Mapping[str, Any] | None = None,
) -> tuple[dict | None, dict | None]:
    """Render and store the preview(s) of a parsed instance (see :func:`render_datasets`)."""
    return render_datasets(lake, [(ds, key, sop_uid, image_id, image)], options)[0]


def render_datasets(
    lake: Path,
    items: Sequence[tuple[Dataset, str, str, str, Mapping[str, Any] | None]],
    options: PreviewOptions,
) -> list[tuple[dict | None, dict | None]]:
    """Render and store the previews of parsed instances: ``(previews row, None)`` or ``(None, error row)`` each.

    ``items`` are ``(dataset, source key, SOPInstanceUID, image id, images row or None)``.
    Images triage finds not at risk are rendered as stored, as they always were (with
    its ``images`` row, a plain uncompressed image skips pydicom's decoders,
    :func:`tasks.pixels.display.native_display`). The others are decoded whole, cleaned
    together (:func:`tasks.pixels.privacy.clean_batch`) and rendered from the cleaned
    stored array; a withheld image gets no preview and an ``ingest_errors`` row (stage
    ``pixels``, reason ``burned_in_text``). Call inside :func:`quiet_pydicom`.
    """
    results: list[tuple[dict | None, dict | None]] = [(None, None)] * len(items)
    risky = []
    for i, (ds, key, uid, image_id, image) in enumerate(items):
        try:
            found = triage(ds, options.triage_rules)
            if found.status == "not_at_risk":  # most images: as they are, at no extra cost
                results[i] = _stored(lake, image_id, key, uid, *_render_as_stored(ds, options, image), "not_needed", "triage")
            else:
                risky.append((i, found, decode_all(ds)))
        except Exception as exc:  # noqa: BLE001 - any decoder failure is this file's, not the batch's
            results[i] = (None, _decode_error(key, uid, exc))
    cleaned = clean_batch(
        [(items[i][0], pixels) for i, _, pixels in risky],
        mode=options.pixel_text, regions=options.region_rules, ocr=options.ocr, triaged=[found for _, found, _ in risky],
    )
    for (i, _, _), privacy in zip(risky, cleaned):
        ds, key, uid, image_id, _ = items[i]
        if privacy.pixels is None:
            _remove_stale(lake, image_id, ds)
            results[i] = (None, _withheld_error(key, uid, privacy.method, privacy.reason or ""))
            continue
        try:
            main, extra = _render_cleaned(ds, privacy.pixels, options)
        except Exception as exc:  # noqa: BLE001
            results[i] = (None, _decode_error(key, uid, exc))
            continue
        results[i] = _stored(lake, image_id, key, uid, main, extra, privacy.status, privacy.method)
    return results


def _stored(
    lake: Path, image_id: str, key: str, uid: str, main: Preview, extra: list[tuple[int, Preview]], status: str, method: str
) -> tuple[dict, None]:
    """Write an image's previews; its ``previews`` row."""
    pkey = preview_key(image_id)
    write_preview(lake, pkey, main)
    for i, frame_preview in extra:
        write_preview(lake, preview_key(image_id, i), frame_preview)
    return {
        "SOPInstanceUID": uid,
        "source_key": key,
        "preview_key": pkey,
        "preview_bytes": len(main.jpeg),
        "preview_width": main.width,
        "preview_height": main.height,
        "frame_index": main.frame_index,
        "pixel_deid_status": status,
        "pixel_deid_method": method,
    }, None


def _render_as_stored(
    ds: Dataset, options: PreviewOptions, image: Mapping[str, Any] | None
) -> tuple[Preview, list[tuple[int, Preview]]]:
    """The previews of an image shared as stored (not at risk): the fast paths of before."""
    display = native_display(ds, image) if image is not None and options.frames == "middle" else None
    if display is not None:
        jpeg, width, height = encode_jpeg(display, max_size=options.max_size, quality=options.quality)
        main = Preview(jpeg, width, height, max(int(image.get("NumberOfFrames") or 1), 1) // 2)
    else:
        main = _render(ds, frame=None, max_size=options.max_size, quality=options.quality)
    extra: list[tuple[int, Preview]] = []
    if options.frames == "all" and frame_count(ds) > 1:
        for i in range(frame_count(ds)):
            if i == main.frame_index:
                extra.append((i, main))
            else:
                extra.append((i, _render(ds, frame=i, max_size=options.max_size, quality=options.quality)))
    return main, extra


def _render_cleaned(ds: Dataset, pixels: np.ndarray, options: PreviewOptions) -> tuple[Preview, list[tuple[int, Preview]]]:
    """The previews of an image from its cleaned stored array (every frame cleaned alike)."""
    count = frame_count(ds)
    frames = pixels if count > 1 and pixels.ndim == (4 if int(ds.get("SamplesPerPixel") or 1) > 1 else 3) else pixels[np.newaxis]

    def encode(index: int) -> Preview:
        display = to_display(frames[index], display_attributes(ds, index))
        jpeg, width, height = encode_jpeg(display, max_size=options.max_size, quality=options.quality)
        return Preview(jpeg, width, height, index)

    main = encode(min(middle_frame(ds), len(frames) - 1))
    extra = []
    if options.frames == "all" and len(frames) > 1:
        extra = [(i, main if i == main.frame_index else encode(i)) for i in range(len(frames))]
    return main, extra


def _remove_stale(lake: Path, image_id: str, ds: Dataset) -> None:
    """Delete previews an earlier run wrote for an image now withheld (a lake folder)."""
    keys = [preview_key(image_id)] + [preview_key(image_id, i) for i in range(frame_count(ds)) if frame_count(ds) > 1]
    for stale in keys:
        with contextlib.suppress(OSError):
            os.remove(os.path.join(lake, stale))


def _withheld_error(key: str, sop_uid: str, method: str, reason: str) -> dict:
    detail = (
        f"pixels withheld: burned-in text could not be removed and verified ({reason}; steps: {method or 'none'}); "
        "metadata rows are kept, no preview; see docs/images-and-privacy.md"
    )
    # no quarantine copy: the metadata rows are kept and the raw copy stays in place
    return ingest_error(key, Reason.BURNED_IN_TEXT, detail[:500], stage="pixels", sop_instance_uid=sop_uid)


def _decode_error(key: str, sop_uid: str, exc: Exception) -> dict:
    detail = f"pixel data could not be decoded ({type(exc).__name__}: {exc}); metadata rows are kept, no preview"
    return ingest_error(key, Reason.PIXEL_DECODE, detail[:500], stage="preview", sop_instance_uid=sop_uid)


def _render_files_star(args: tuple) -> list[tuple[dict | None, dict | None]]:
    return render_files(*args)


def render_batch(
    lake: Path,
    images: Sequence[tuple[Path, str, str]],
    *,
    secret: str,
    options: PreviewOptions | None = None,
    executor: Executor | None = None,
    max_size: int | None = None,
    quality: int | None = None,
) -> tuple[list[dict], list[dict]]:
    """Render and store the previews of a batch of images.

    Parameters
    ----------
    lake : Path
    images : sequence of (path, source key, SOPInstanceUID)
        Files known to carry pixel data.
    secret : str
        De-identification secret; the preview's name is the image's pseudonym.
    options : PreviewOptions, optional
        Size, quality and frames; ``max_size``/``quality`` override its fields.
    executor : concurrent.futures.Executor, optional
        Run the files on this pool (see :func:`tasks.pool.make_process_pool`); in this process if None.

    Returns
    -------
    previews, errors : list of dict
        Rows for the ``previews`` table and ``ingest_errors`` rows: reason
        ``pixel_decode`` for images whose pixels could not be decoded, ``burned_in_text``
        (stage ``pixels``) for images withheld.
    """
    opts = options or PreviewOptions()
    if max_size is not None or quality is not None:
        opts = replace(opts, max_size=max_size or opts.max_size, quality=quality or opts.quality)
    files = [(Path(p), key, uid, pseudonym(uid, secret)) for p, key, uid in images]
    if executor is None or len(files) < 2:
        results = render_files(lake, files, opts)
    else:
        workers = max_workers(executor, 2)
        # jobs of up to OCR_GROUP files (at-risk ones share their OCR runs), a few per worker at least
        size = max(1, min(OCR_GROUP, len(files) // (workers * 4)))
        jobs = [(lake, files[i : i + size], opts) for i in range(0, len(files), size)]
        chunksize = max(1, len(jobs) // (workers * 4))
        results = [r for part in executor.map(_render_files_star, jobs, chunksize=chunksize) for r in part]
    previews = [row for row, _ in results if row is not None]
    errors = [err for _, err in results if err is not None]
    return previews, errors
