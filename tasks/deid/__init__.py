"""Keyed pseudonyms, computed the same way in Python and in the dbt macros.

``pseudonym`` is HMAC-SHA256(secret, value) in hex; ``pseudo_uid`` turns its first 128
bits into a valid ``2.25.<integer>`` UID (PS3.5 B.2). The warehouse's pseudonym map is
computed with them (``tasks/warehouse/pseudonyms.py``), so a preview named here joins the
de-identified rows built there.
"""

from __future__ import annotations

import csv
import hashlib
import hmac
from dataclasses import dataclass
from pathlib import Path

from tasks.errors import WarehouseError

RULES_SEED = Path(__file__).resolve().parents[2] / "dbt_project" / "seeds" / "internal_anonymization_rules.csv"
PSEUDONYMIZING_ACTIONS = frozenset({"D", "U"})
ANNEX_E_ACTIONS = frozenset({"D", "Z", "X", "K", "C", "U"})
MAX_DATE_OFFSET_DAYS = 365


def pseudonym(value: str, secret: str) -> str:
    """HMAC-SHA256 of ``value`` under ``secret``, as 64 hex digits.

    Raises
    ------
    ValueError
        If ``secret`` is empty: an unkeyed hash of an identifier is re-identifiable.
    """
    if not secret:
        msg = "the de-identification secret is empty; set DICOM_ETL_DEID_SECRET or the settings block"
        raise ValueError(msg)
    return hmac.new(secret.encode(), value.encode(), hashlib.sha256).hexdigest()


def pseudo_uid(value: str, secret: str) -> str:
    """A valid ``2.25.`` UID derived from ``value`` under ``secret`` (at most 44 characters)."""
    return f"2.25.{int(pseudonym(value, secret)[:32], 16)}"


def date_offset_days(pseudonym_hex: str) -> int:
    """Days (1..365) to shift the dates of the patient whose key has this pseudonym."""
    return 1 + int(pseudonym_hex[:8], 16) % MAX_DATE_OFFSET_DAYS


@dataclass(frozen=True)
class Rule:
    """One row of the anonymization rules seed."""

    entity: str
    column: str
    action: str
    processed_name: str


def read_rules(path: Path = RULES_SEED) -> list[Rule]:
    """Read the anonymization rules seed (``internal_anonymization_rules``).

    The warehouse's pseudonym map and the de-identified DICOM export both apply it.

    Parameters
    ----------
    path : Path
        The ``internal_anonymization_rules`` CSV.

    Returns
    -------
    list of Rule

    Raises
    ------
    WarehouseError
        If a row has an action that is not a PS3.15 Annex E action code.
    """
    with path.open(newline="") as fh:
        rows = list(csv.DictReader(fh))
    rules = [Rule(r["entity"], r["column"], r["action"].strip(), r["processed_name"]) for r in rows]
    bad = [f"{r.entity}.{r.column}={r.action!r}" for r in rules if r.action not in ANNEX_E_ACTIONS]
    if bad:
        msg = f"{path}: actions {', '.join(bad)} are not PS3.15 Annex E actions; use one of D, Z, X, K, C, U"
        raise WarehouseError(msg)
    return rules
