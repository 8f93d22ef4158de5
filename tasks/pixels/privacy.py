"""Pixel privacy: which images may carry burned-in text, and removing it before pixels are shared.

Every image is triaged from its header (:func:`triage`, cheap); only images that are not
``not_at_risk`` are cleaned (:func:`clean_pixels`):

1. known-device regions (:func:`read_region_rules`, a seed of rectangles per device) are blanked;
2. otherwise Tesseract reads the text of an 8-bit rendering of the image and its boxes are
   blanked (with a margin) in the *stored* array, in every frame;
3. verification renders the cleaned array again and reads it again: if text that looks like
   PHI remains (or OCR is unavailable or fails), the image is withheld.

Previews are rendered from the cleaned stored array, and the de-identified DICOM export writes
it, so both are cleaned by the same code. Overlay planes (60xx,3000) are never burned into the
cleaned pixels: previews do not draw them, and the export drops them (PS3.15 Annex E: X).
The rules are data (``dbt_project/seeds/internal_pixel_*_rules.csv``), not code.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field, replace
from typing import Literal

import numpy as np
from pydicom.dataset import Dataset

from tasks.pixels.display import display_attributes, to_display
from tasks.pixels.ocr import OcrError, Tesseract, Word
from tasks.pixels.phi_text import header_terms, is_sensitive
from tasks.pixels.triage import (
    RegionRule,
    Triage,
    TriageRule,
    matching_regions,
    read_region_rules,
    read_triage_rules,
    triage,
)

__all__ = [
    "PIXEL_TEXT_MODES",
    "PixelPrivacy",
    "PixelText",
    "RegionRule",
    "Triage",
    "TriageRule",
    "checked_frames",
    "clean_batch",
    "clean_pixels",
    "matching_regions",
    "read_region_rules",
    "read_triage_rules",
    "render_checked",
    "triage",
]

PixelText = Literal["all", "sensitive", "none"]
PIXEL_TEXT_MODES: tuple[str, ...] = ("all", "sensitive", "none")

#: A word of two letters or digits or more read with this confidence is text to blank in
#: ``pixel_text="all"`` (anything that looks like PHI is blanked whatever its confidence).
TEXT_CONFIDENCE = 50.0
#: A word OCR reads with at least this confidence and this many letters or digits counts as
#: text left over after cleaning, even when it does not look like PHI (``pixel_text="all"``).
RESIDUAL_CONFIDENCE = 60.0
RESIDUAL_CHARS = 3
#: Frames read per multi-frame image: first, middle and last (plus a projection of all).
FRAMES_CHECKED = 3
#: Tesseract's adaptive (Sauvola) binarization, used to verify what a global-Otsu reading cleaned.
VERIFY_THRESHOLDING = 2
_GAP = 8  # black rows between the frames stacked for one OCR call


@dataclass(frozen=True)
class PixelPrivacy:
    """What :func:`clean_pixels` did to an image.

    ``pixels`` is the cleaned stored array (the input itself when nothing was needed, None
    when withheld); ``status`` is ``not_needed``, ``cleaned`` or ``withheld``; ``method``
    names the steps (``triage``, ``region:<rule>``, ``ocr``, ``verified``; never text read);
    ``reason`` says why an image was withheld.
    """

    pixels: np.ndarray | None
    status: str
    method: str
    reason: str | None = None
    triage: Triage = field(default_factory=lambda: Triage("not_at_risk"))
    boxes: int = 0


def clean_pixels(
    ds: Dataset,
    pixels: np.ndarray,
    *,
    mode: PixelText = "all",
    rules: Sequence[TriageRule] | None = None,
    regions: Sequence[RegionRule] | None = None,
    ocr: Tesseract | None = None,
    triaged: Triage | None = None,
) -> PixelPrivacy:
    """Remove burned-in text from an image's stored pixels, or withhold the image.

    Parameters
    ----------
    ds : Dataset
        The instance's header (for triage, display attributes and PHI values to look for).
    pixels : numpy.ndarray
        The stored pixel array as ``ds.pixel_array`` gives it: (rows, cols[, samples]) or,
        multi-frame, (frames, rows, cols[, samples]). Not modified.
    mode : {"all", "sensitive", "none"}, default "all"
        ``all`` blanks every text box OCR finds on an at-risk image (words of two letters
        or digits or more, and anything that looks like PHI); ``sensitive`` only boxes whose
        text looks like PHI (a header value, a date, a time, five digits or more, a name
        part); ``none`` trusts that the data were cleaned upstream and changes nothing
        (status ``not_needed``, method ``pixel_text=none``).
    rules, regions : sequence, optional
        Triage and region rules; the seeds' by default.
    ocr : Tesseract, optional
        How to run OCR; ``Tesseract()`` by default.
    triaged : Triage, optional
        The triage already made by the caller (skips :func:`triage`).

    Returns
    -------
    PixelPrivacy
        ``cleaned`` only when OCR read the cleaned image and found no PHI left.
    """
    return clean_batch([(ds, pixels)], mode=mode, rules=rules, regions=regions, ocr=ocr, triaged=[triaged])[0]


def clean_batch(
    images: Sequence[tuple[Dataset, np.ndarray]],
    *,
    mode: PixelText = "all",
    rules: Sequence[TriageRule] | None = None,
    regions: Sequence[RegionRule] | None = None,
    ocr: Tesseract | None = None,
    triaged: Sequence[Triage | None] | None = None,
) -> list[PixelPrivacy]:
    """:func:`clean_pixels` for several images at once: one OCR process per step, not per image.

    Parameters
    ----------
    images : sequence of (Dataset, numpy.ndarray)
        Headers and stored pixel arrays; all of them are held until the batch is done.
    mode, rules, regions, ocr
        As for :func:`clean_pixels`.
    triaged : sequence of Triage or None, optional
        Each image's triage, when the caller made it.

    Returns
    -------
    list of PixelPrivacy
        In the order of ``images``.
    """
    if mode not in PIXEL_TEXT_MODES:
        msg = f"pixel_text={mode!r} is not a mode; use one of {', '.join(PIXEL_TEXT_MODES)}"
        raise ValueError(msg)
    if rules is None:
        rules = () if triaged and all(triaged) else read_triage_rules()
    region_rules = read_region_rules() if regions is None else regions
    engine = ocr or Tesseract()
    # verification reads with another binarization: text the first reading missed shows there
    verifier = replace(engine, thresholding=VERIFY_THRESHOLDING if engine.thresholding != VERIFY_THRESHOLDING else 0)
    results: list[PixelPrivacy | None] = [None] * len(images)
    work: list[_Cleaning] = []
    for i, (ds, pixels) in enumerate(images):
        found = (triaged[i] if triaged else None) or triage(ds, rules)
        if found.status == "not_at_risk":
            results[i] = PixelPrivacy(pixels, "not_needed", "triage", None, found)
        elif found.withhold:
            results[i] = PixelPrivacy(None, "withheld", f"triage:{found.withhold}", found.withhold, found)
        elif mode == "none":
            results[i] = PixelPrivacy(pixels, "not_needed", "pixel_text=none", None, found)
        else:
            item = _Cleaning(i, ds, pixels, _as_frames(ds, pixels).copy(), found, header_terms(ds))
            covered = matching_regions(ds, region_rules)
            _blank(item.frames, ds, [(r.x, r.y, r.width, r.height) for r in covered])
            item.steps += [f"region:{r}" for r in dict.fromkeys(r.rule for r in covered)]
            work.append(item)
    first = [item for item in work if not item.steps]  # no known region: OCR finds the text
    for item, words in zip(first, _read_all(engine, first)):
        if item.error is None:
            item.boxes += _blank_words(item.frames, item.ds, [w for w in words if _to_blank(w, mode, item.terms)])
            item.steps.append("ocr")
    pending = [item for item in work if item.error is None]
    for _attempt in range(2):  # verify; blank what is left once more, then verify again
        for item, words in zip(pending, _read_all(verifier, pending)):
            if item.error is not None:
                continue
            left = [w for w in words if _left_over(w, mode, item.terms)]
            if left:
                item.boxes += _blank_words(item.frames, item.ds, left)
                if "ocr" not in item.steps:
                    item.steps.append("ocr")
            else:
                item.verified = True
        pending = [item for item in pending if item.error is None and not item.verified]
    for item in work:
        method = ";".join(item.steps)
        if item.error is not None:
            results[item.index] = PixelPrivacy(None, "withheld", method, f"ocr_unavailable: {item.error}"[:300], item.triage, item.boxes)
        elif not item.verified:
            results[item.index] = PixelPrivacy(None, "withheld", method, "burned_in_text_remains", item.triage, item.boxes)
        else:
            out = item.frames if item.pixels.shape == item.frames.shape else item.frames.reshape(item.pixels.shape)
            results[item.index] = PixelPrivacy(out, "cleaned", f"{method};verified", None, item.triage, item.boxes)
    return results  # type: ignore[return-value]


@dataclass
class _Cleaning:
    """One image on its way through :func:`clean_batch`."""

    index: int
    ds: Dataset
    pixels: np.ndarray
    frames: np.ndarray
    triage: Triage
    terms: frozenset[str]
    steps: list[str] = field(default_factory=list)
    boxes: int = 0
    verified: bool = False
    error: str | None = None


def _read_all(engine: Tesseract, items: Sequence[_Cleaning]) -> list[list[Word]]:
    """The words of each image's checked renderings, one OCR run for all; a failure marks the image."""
    if not items:
        return []
    stacks = [render_checked(item.ds, item.frames) for item in items]
    try:
        pages = engine.read_many([stacked for stacked, _ in stacks])
    except OcrError:  # the command is missing (every image), or one image failed: read them one by one
        pages = []
        for item, (stacked, _) in zip(items, stacks):
            try:
                pages.append(engine.read_words(stacked))
            except OcrError as exc:
                item.error = str(exc)
                pages.append([])
    return [_unstack(words, tops, item.frames.shape[1]) for words, (_, tops), item in zip(pages, stacks, items)]


def _to_blank(word: Word, mode: str, terms: frozenset[str]) -> bool:
    if is_sensitive(word.text, terms):
        return True
    # a single character identifies no one (L/R markers); what OCR makes of speckle and
    # anatomy is read with low confidence, printed text with high (90+ on a plain background)
    return mode == "all" and word.conf >= TEXT_CONFIDENCE and sum(c.isalnum() for c in word.text) >= 2


def _left_over(word: Word, mode: str, terms: frozenset[str]) -> bool:
    if is_sensitive(word.text, terms):
        return True
    if mode == "sensitive":
        return False
    return word.conf >= RESIDUAL_CONFIDENCE and sum(c.isalnum() for c in word.text) >= RESIDUAL_CHARS


def _as_frames(ds: Dataset, pixels: np.ndarray) -> np.ndarray:
    """A (frames, rows, cols[, samples]) view of a stored array."""
    samples = int(ds.get("SamplesPerPixel") or 1)
    single = pixels.ndim == (3 if samples > 1 else 2)
    return pixels[np.newaxis] if single else pixels


def checked_frames(count: int) -> list[int]:
    """Frames OCR reads in a multi-frame image: first, middle and last."""
    return sorted({0, count // 2, count - 1}) if count > 1 else [0]


def render_checked(ds: Dataset, frames: np.ndarray) -> tuple[np.ndarray, list[int]]:
    """The 8-bit renderings OCR reads, stacked top to bottom in one image, and each one's top row.

    The checked frames, then (multi-frame) the brightest value of every pixel over all
    frames: text shown in frames between those read still shows there (burned-in text is
    light on almost every device that prints it over moving images).
    """
    panels = [_display(ds, frames, i) for i in checked_frames(len(frames))]
    if len(frames) > FRAMES_CHECKED:
        brightest = _display(ds, frames, 0)
        for i in range(1, len(frames)):
            np.maximum(brightest, _display(ds, frames, i), out=brightest)
        panels.append(brightest)
    tops, height = [], 0
    for panel in panels:
        tops.append(height)
        height += panel.shape[0] + _GAP
    first = panels[0]
    stacked = np.zeros((height - _GAP, *first.shape[1:]), np.uint8)
    for top, panel in zip(tops, panels):
        stacked[top : top + panel.shape[0]] = panel
    return stacked, tops


def _display(ds: Dataset, frames: np.ndarray, index: int) -> np.ndarray:
    return to_display(frames[index], display_attributes(ds, index))


def _unstack(words: Sequence[Word], tops: Sequence[int], rows: int) -> list[Word]:
    """Boxes of words read in stacked renderings, moved back into one frame's coordinates."""
    out = []
    for word in words:
        for top in reversed(tops):  # the panel the box starts in
            if word.top >= top:
                out.append(Word(word.text, word.conf, word.left, word.top - top, word.width, min(word.height, rows)))
                break
    return out


def _blank_words(frames: np.ndarray, ds: Dataset, words: Sequence[Word]) -> int:
    rects = []
    for word in words:
        margin = max(2, word.height // 4)
        rects.append((word.left - margin, word.top - margin, word.width + 2 * margin, word.height + 2 * margin))
    _blank(frames, ds, rects)
    return len(words)


def _blank(frames: np.ndarray, ds: Dataset, rects: Sequence[tuple[int, int, int, int]]) -> None:
    """Fill rectangles ``(x, y, width, height)`` of every frame with the value that displays as black."""
    rows, cols = frames.shape[1], frames.shape[2]
    clipped = []
    for x, y, width, height in rects:
        x0, y0, x1, y1 = max(0, x), max(0, y), min(cols, x + width), min(rows, y + height)
        if x1 > x0 and y1 > y0:
            clipped.append((x0, y0, x1, y1))
    if not clipped:
        return
    inverted = str(ds.get("PhotometricInterpretation", "")).strip().upper() == "MONOCHROME1"
    for frame in frames:
        # colour: 0 is black (pydicom gives YBR as RGB); greyscale: the frame's darkest value
        fill = 0 if frame.ndim == 3 else (frame.max() if inverted else frame.min())
        for x0, y0, x1, y1 in clipped:
            frame[y0:y1, x0:x1] = fill
