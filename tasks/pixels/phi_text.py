"""Whether a word read from an image looks like PHI: a header value, a date, a time, an ID.

OCR misreads digits as letters (``O`` for ``0``, ``l`` for ``1``), so a word mostly made of
digits is compared after mapping the usual confusions back to digits. Nothing here logs or
returns the words themselves.
"""

from __future__ import annotations

import re
from collections.abc import Iterable

from pydicom.dataset import Dataset

#: Header elements whose values, printed in an image, identify the patient or the visit.
NAME_KEYWORDS = (
    "PatientName",
    "OtherPatientNames",
    "PatientBirthName",
    "PatientMotherBirthName",
    "ReferringPhysicianName",
    "PerformingPhysicianName",
    "NameOfPhysiciansReadingStudy",
    "OperatorsName",
    "RequestingPhysician",
)
VALUE_KEYWORDS = (
    "PatientID",
    "OtherPatientIDs",
    "IssuerOfPatientID",
    "AccessionNumber",
    "StudyID",
    "InstitutionName",
    "InstitutionAddress",
    "InstitutionalDepartmentName",
    "PatientAddress",
    "StationName",
    "PatientTelephoneNumbers",
)
DATE_KEYWORDS = ("PatientBirthDate", "StudyDate", "SeriesDate", "AcquisitionDate", "ContentDate")

_MONTHS = "JAN|FEB|MAR|APR|MAY|JUN|JUL|AUG|SEP|OCT|NOV|DEC"
#: Dates, times and runs of digits as devices print them (upper-cased, confusions mapped).
PHI_PATTERNS = (
    re.compile(r"\d{1,4}[/.\-]\d{1,2}[/.\-]\d{1,4}"),  # 4/14/2020, 08/29/1951, 2020-04-14, 14.04.20
    re.compile(r"\d{1,2}[/.\-]\d{4}"),  # 04/2020
    re.compile(rf"\d{{1,2}}[\-/. ]?({_MONTHS})[A-Z]*[\-/. ]?\d{{2,4}}"),  # 14-APR-2020, 14APR20
    re.compile(rf"({_MONTHS})[A-Z]*[\-/. ]?\d{{1,2}},?[\-/. ]?\d{{2,4}}"),  # APR 14 2020
    re.compile(r"\d{1,2}:\d{2}"),  # 13:45, 13:45:10
    re.compile(r"\d[/:]\d{2}"),  # what OCR leaves of a date or time it misreads ("06/296TS")
    re.compile(r"\d{5,}"),  # MRNs, accession numbers, compact dates (20200414)
)
_CONFUSIONS = str.maketrans({"O": "0", "D": "0", "Q": "0", "I": "1", "L": "1", "|": "1", "!": "1", "S": "5", "B": "8", "Z": "2", "G": "6"})


def _normalize(text: str) -> str:
    """Upper-cased letters and digits only."""
    return re.sub(r"[^0-9A-Z]", "", text.upper())


def header_terms(ds: Dataset) -> frozenset[str]:
    """Normalized PHI values of the header that could be printed in its pixels.

    Names are split into their parts (family, given, middle; two letters or more); dates
    are added in the forms devices print (YYYYMMDD, MMDDYYYY, DDMMYYYY, MDYYYY, with a
    two-digit year too), compared after separators are removed.

    Parameters
    ----------
    ds : Dataset

    Returns
    -------
    frozenset of str
    """
    terms: set[str] = set()
    for keyword in NAME_KEYWORDS:
        for value in _values(ds, keyword):
            terms.update(p for p in (_normalize(part) for part in re.split(r"[\^=\s,]+", value)) if len(p) >= 2)
    for keyword in VALUE_KEYWORDS:
        for value in _values(ds, keyword):
            whole = _normalize(value)
            if len(whole) >= 3:
                terms.add(whole)
            terms.update(p for p in (_normalize(w) for w in value.split()) if len(p) >= 4)
    for keyword in DATE_KEYWORDS:
        for value in _values(ds, keyword):
            terms.update(date_forms(value))
    return frozenset(terms)


def date_forms(value: str) -> set[str]:
    """A DICOM date (YYYYMMDD) in the digit orders devices print, separators removed."""
    digits = re.sub(r"\D", "", value)
    if len(digits) != 8:
        return set()
    y, m, d = digits[:4], digits[4:6], digits[6:8]
    forms = {y + m + d, m + d + y, d + m + y, m + d + y[2:], d + m + y[2:], y[2:] + m + d}
    forms |= {m.lstrip("0") + d.lstrip("0") + y, d.lstrip("0") + m.lstrip("0") + y, m.lstrip("0") + d + y}
    return {f for f in forms if len(f) >= 5}


def _values(ds: Dataset, keyword: str) -> Iterable[str]:
    try:
        value = ds.get(keyword)
    except Exception:  # noqa: BLE001 - a malformed value cannot be printed either
        return ()
    if value is None or value == "":
        return ()
    if isinstance(value, (list, tuple)) or type(value).__name__ == "MultiValue":
        return [str(v) for v in value if str(v)]
    return [str(value)]


def is_sensitive(text: str, terms: frozenset[str] = frozenset()) -> bool:
    """Whether an OCR word looks like PHI: a date, a time, 5+ digits, or a header value.

    Parameters
    ----------
    text : str
        One word as read.
    terms : frozenset of str
        :func:`header_terms` of the image's header.
    """
    upper = text.upper().strip()
    digits = sum(c.isdigit() for c in upper)
    candidates = [upper]
    if digits and digits * 2 >= sum(c.isalnum() for c in upper):
        candidates.append(upper.translate(_CONFUSIONS))  # "O8/29/l951" is a date
    for candidate in candidates:
        if any(p.search(candidate) for p in PHI_PATTERNS):
            return True
    word = _normalize(upper)
    if not word or not terms:
        return False
    mapped = word.translate(_CONFUSIONS) if len(candidates) > 1 else word
    for term in terms:
        if word == term or mapped == term:
            return True
        # OCR joins neighbours ("DOE^JANE" -> "DOEJANE") and splits long values: substrings count
        if len(term) >= 3 and (term in word or term in mapped):
            return True
        if len(word) >= 3 and word in term:  # a fragment: "ARY" of "ST MARY CLINIC"
            return True
        if len(term) >= 5 and len(word) == len(term) and sum(a != b for a, b in zip(word, term)) <= 1:
            return True
    return False
