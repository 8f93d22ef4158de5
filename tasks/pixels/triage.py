"""Which images may carry burned-in text (triage), and where known devices print it (regions).

Both are data, seeds of the dbt project: ``internal_pixel_triage_rules.csv`` (header
attributes that put an image at risk) and ``internal_pixel_region_rules.csv`` (rectangles
per device signature, seeded from the CTP-derived filters of pydicom's ``deid``). Triage
reads a few header elements, so every image pays it and a CT/MR batch pays nothing else.
"""

from __future__ import annotations

import csv
import re
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from pathlib import Path

from pydicom.dataset import Dataset

from tasks.compat import dataset_elements


SEEDS = Path(__file__).resolve().parents[2] / "dbt_project" / "seeds"
TRIAGE_RULES_SEED = SEEDS / "internal_pixel_triage_rules.csv"
REGION_RULES_SEED = SEEDS / "internal_pixel_region_rules.csv"

#: Overlay Data of the 16 repeating overlay groups (6000,3000) ... (601E,3000).
OVERLAY_DATA_TAGS = tuple(((0x6000 + 2 * k) << 16) | 0x3000 for k in range(16))


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
        return any(tag in dataset_elements(ds) for tag in OVERLAY_DATA_TAGS)
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
