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

import csv
import re
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Literal

import numpy as np
from pydicom.dataset import Dataset

from tasks.pixels.display import display_attributes, to_display
from tasks.pixels.ocr import OcrError, Tesseract, Word
from tasks.pixels.phi_text import header_terms, is_sensitive

PixelText = Literal["all", "sensitive", "none"]
PIXEL_TEXT_MODES: tuple[str, ...] = ("all", "sensitive", "none")

SEEDS = Path(__file__).resolve().parents[2] / "dbt_project" / "seeds"
TRIAGE_RULES_SEED = SEEDS / "internal_pixel_triage_rules.csv"
REGION_RULES_SEED = SEEDS / "internal_pixel_region_rules.csv"

#: Overlay Data of the 16 repeating overlay groups (6000,3000) ... (601E,3000).
OVERLAY_DATA_TAGS = tuple(((0x6000 + 2 * k) << 16) | 0x3000 for k in range(16))
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
class TriageRule:
    """One row of the triage seed: when ``attribute`` matches ``values``, the image is at risk.

    ``match`` is ``equals`` (any value of the element equals one of ``values``, case and
    padding ignored), ``prefix`` (starts with one), ``contains`` or ``present``. An
    ``attribute`` of the form ``60xx3000`` names a repeating group. ``action`` ``withhold``
    means no automatic cleaning can make the image shareable (a face, a document).
    """

    rule: str
    attribute: str
    match: str
    values: tuple[str, ...]
    status: str
    action: str = "clean"


@dataclass(frozen=True)
class RegionRule:
    """A rectangle to blank on every image of one device signature (empty fields match anything).

    Text fields are case-insensitive regular expressions searched in the header value;
    ``rows``/``columns`` are exact sizes, ``|``-separated alternatives allowed.
    """

    rule: str
    modality: str
    manufacturer: str
    model: str
    rows: str
    columns: str
    image_type: str
    series_description: str
    x: int
    y: int
    width: int
    height: int


@dataclass(frozen=True)
class Triage:
    """Whether an image may carry burned-in text, from its header alone.

    ``status`` is ``not_at_risk``, ``at_risk`` or ``declared`` (BurnedInAnnotation YES);
    ``reasons`` names the rules that matched; ``withhold`` names a rule whose match means
    no automatic cleaning is enough (or None).
    """

    status: str
    reasons: tuple[str, ...] = ()
    withhold: str | None = None


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


def read_triage_rules(path: Path | str = TRIAGE_RULES_SEED) -> tuple[TriageRule, ...]:
    """The triage rules of a seed CSV (``rule,attribute,match,value,status,action,note``).

    Raises
    ------
    ValueError
        If a row has an unknown ``match``, ``status`` or ``action``.
    """
    rules = []
    for row in _read_csv(path):
        rule = TriageRule(
            rule=row["rule"],
            attribute=row["attribute"],
            match=row["match"],
            values=tuple(v.strip().upper() for v in row.get("value", "").split("|") if v.strip()),
            status=row["status"],
            action=row.get("action") or "clean",
        )
        if rule.match not in ("equals", "prefix", "contains", "present") or rule.status not in ("at_risk", "declared"):
            msg = f"{path}: rule {rule.rule!r} has match {rule.match!r} / status {rule.status!r}; use equals|prefix|contains|present and at_risk|declared"
            raise ValueError(msg)
        if rule.action not in ("clean", "withhold"):
            msg = f"{path}: rule {rule.rule!r} has action {rule.action!r}; use clean or withhold"
            raise ValueError(msg)
        rules.append(rule)
    return tuple(rules)


def read_region_rules(path: Path | str = REGION_RULES_SEED) -> tuple[RegionRule, ...]:
    """The known-device rectangles of a seed CSV (one row per rectangle; see :class:`RegionRule`)."""
    out = []
    for row in _read_csv(path):
        text = {k: row.get(k, "") for k in ("modality", "manufacturer", "model", "rows", "columns", "image_type", "series_description")}
        out.append(RegionRule(rule=row["rule"], **text, **{k: int(row[k]) for k in ("x", "y", "width", "height")}))
    return tuple(out)


def _read_csv(path: Path | str) -> list[dict[str, str]]:
    with open(path, newline="", encoding="utf-8") as fh:
        return [{k: (v or "").strip() for k, v in row.items()} for row in csv.DictReader(fh)]


def triage(ds: Dataset, rules: Sequence[TriageRule]) -> Triage:
    """Triage an image from its header: ``not_at_risk``, ``at_risk`` or ``declared``.

    Parameters
    ----------
    ds : Dataset
        The header (pixel data not needed).
    rules : sequence of TriageRule
        :func:`read_triage_rules`.

    Returns
    -------
    Triage
    """
    matched = [r for r in rules if _matches(ds, r)]
    if not matched:
        return Triage("not_at_risk")
    status = "declared" if any(r.status == "declared" for r in matched) else "at_risk"
    withhold = next((r.rule for r in matched if r.action == "withhold"), None)
    return Triage(status, tuple(dict.fromkeys(r.rule for r in matched)), withhold)


def _matches(ds: Dataset, rule: TriageRule) -> bool:
    if rule.attribute.lower() == "60xx3000":
        return any(tag in ds._dict for tag in OVERLAY_DATA_TAGS)
    try:
        value = ds.get(rule.attribute)
    except Exception:  # noqa: BLE001 - an unreadable value matches nothing
        return False
    if rule.match == "present":
        return value is not None
    if value is None:
        return False
    values = [str(v).strip().upper() for v in value] if _multi(value) else [str(value).strip().upper()]
    if rule.match == "equals":
        return any(v in rule.values for v in values)
    if rule.match == "prefix":
        return any(v.startswith(p) for v in values for p in rule.values)
    return any(p in v for v in values for p in rule.values)


def _multi(value: object) -> bool:
    return isinstance(value, (list, tuple)) or type(value).__name__ == "MultiValue"


def matching_regions(ds: Dataset, regions: Iterable[RegionRule]) -> list[RegionRule]:
    """The rectangles of every region rule whose device signature the header matches."""
    fields = {
        "modality": _text(ds, "Modality"),
        "manufacturer": _text(ds, "Manufacturer"),
        "model": _text(ds, "ManufacturerModelName"),
        "image_type": "\\".join(_values(ds, "ImageType")),
        "series_description": _text(ds, "SeriesDescription"),
    }
    size = {"rows": _text(ds, "Rows"), "columns": _text(ds, "Columns")}
    out = []
    for region in regions:
        if all(not getattr(region, k) or re.search(getattr(region, k), v, re.IGNORECASE) for k, v in fields.items()) and all(
            not getattr(region, k) or v in getattr(region, k).split("|") for k, v in size.items()
        ):
            out.append(region)
    return out


def _text(ds: Dataset, keyword: str) -> str:
    return "\\".join(_values(ds, keyword))


def _values(ds: Dataset, keyword: str) -> list[str]:
    try:
        value = ds.get(keyword)
    except Exception:  # noqa: BLE001
        return []
    if value is None:
        return []
    return [str(v).strip() for v in value] if _multi(value) else [str(value).strip()]


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
        ``all`` blanks every text box OCR finds on an at-risk image; ``sensitive`` only
        boxes whose text looks like PHI (a header value, a date, a time, five digits or
        more, a name part); ``none`` trusts that the data were cleaned upstream and
        changes nothing (status ``not_needed``, method ``pixel_text=none``).
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
    if mode not in PIXEL_TEXT_MODES:
        msg = f"pixel_text={mode!r} is not a mode; use one of {', '.join(PIXEL_TEXT_MODES)}"
        raise ValueError(msg)
    found = triaged or triage(ds, read_triage_rules() if rules is None else rules)
    if found.status == "not_at_risk":
        return PixelPrivacy(pixels, "not_needed", "triage", None, found)
    if found.withhold:
        return PixelPrivacy(None, "withheld", f"triage:{found.withhold}", found.withhold, found)
    if mode == "none":
        return PixelPrivacy(pixels, "not_needed", "pixel_text=none", None, found)
    frames = _as_frames(ds, pixels)
    cleaned = frames.copy()
    steps: list[str] = []
    covered = matching_regions(ds, read_region_rules() if regions is None else regions)
    _blank(cleaned, ds, [(r.x, r.y, r.width, r.height) for r in covered])
    steps += [f"region:{r}" for r in dict.fromkeys(r.rule for r in covered)]
    engine = ocr or Tesseract()
    # verification reads with another binarization: text the first reading missed shows there
    verifier = replace(engine, thresholding=VERIFY_THRESHOLDING if engine.thresholding != VERIFY_THRESHOLDING else 0)
    terms = header_terms(ds)
    boxes = 0
    try:
        if not covered:
            found_words = _read(engine, ds, cleaned)
            targets = [w for w in found_words if _to_blank(w, mode, terms)]
            boxes += _blank_words(cleaned, ds, targets)
            steps.append("ocr")
        for _attempt in range(2):  # verify; blank what is left once more, then verify again
            left = [w for w in _read(verifier, ds, cleaned) if _left_over(w, mode, terms)]
            if not left:
                break
            boxes += _blank_words(cleaned, ds, left)
            if "ocr" not in steps:
                steps.append("ocr")
        else:
            return PixelPrivacy(None, "withheld", ";".join(steps), "burned_in_text_remains", found, boxes)
    except OcrError as exc:
        return PixelPrivacy(None, "withheld", ";".join(steps), f"ocr_unavailable: {exc}"[:300], found, boxes)
    steps.append("verified")
    out = cleaned if pixels.shape == cleaned.shape else cleaned.reshape(pixels.shape)
    return PixelPrivacy(out, "cleaned", ";".join(steps), None, found, boxes)


def _to_blank(word: Word, mode: str, terms: frozenset[str]) -> bool:
    if is_sensitive(word.text, terms):
        return True
    # a single character identifies no one (L/R markers, and what OCR makes of anatomy)
    return mode == "all" and sum(c.isalnum() for c in word.text) >= 2


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


def _read(engine: Tesseract, ds: Dataset, frames: np.ndarray) -> list[Word]:
    """The words OCR finds in the checked renderings, boxes moved back into one frame's coordinates."""
    stacked, tops = render_checked(ds, frames)
    rows = frames.shape[1]
    out = []
    for word in engine.read_words(stacked):
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
