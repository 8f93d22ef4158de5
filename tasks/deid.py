"""Keyed pseudonyms, computed the same way in Python and in the dbt macros.

``pseudonym`` is HMAC-SHA256(secret, value) in hex; ``pseudo_uid`` turns its first 128
bits into a valid ``2.25.<integer>`` UID (PS3.5 B.2). The dbt macro ``hmac_sha256``
computes the identical HMAC from the precomputed inner and outer pad keys below, so a
preview named here joins the de-identified rows built there.
"""

from __future__ import annotations

import hashlib
import hmac



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
