"""Every PHI value of a folder of DICOM files (read with pydicom), and a scan for them in rows.

PHI here: person names (each component too), patient IDs and other IDs, birth dates,
accession numbers and study IDs, institutions, stations and device serials, physicians
and operators, every instance UID that is not a well-known DICOM UID, and every date.
"""

from __future__ import annotations

import json
import re
import warnings
from dataclasses import dataclass, field
from datetime import date, datetime
from pathlib import Path
from typing import Any

import pydicom
from pydicom.uid import UID

ID_KEYWORDS = (
    "PatientID", "OtherPatientIDs", "IssuerOfPatientID", "AccessionNumber", "StudyID",
    "InstitutionName", "InstitutionAddress", "InstitutionalDepartmentName", "StationName",
    "DeviceSerialNumber", "PatientAddress", "PatientTelephoneNumbers", "MedicalRecordLocator",
)
#: Columns that hold pseudonyms (hex digests, 2.25 UIDs, preview keys): checked for exact
#: matches only, since a long hex string contains short digit runs by chance.
PSEUDONYM_SUFFIXES = ("pseudo_id", "pseudo_uid", "pseudonym", "preview_key")
#: Shorter IDs and name parts ("1", "Jo") cannot be told apart from ordinary values.
MIN_LENGTH = 4
VENDOR_KEYWORDS = ("Manufacturer", "ManufacturerModelName")


@dataclass
class Phi:
    """PHI values of an input, by kind."""

    strings: set[str] = field(default_factory=set)  # exact values (names, IDs, UIDs, DA strings)
    terms: set[str] = field(default_factory=set)  # looked for as whole words inside text cells (upper case)
    dates: set[date] = field(default_factory=set)

    def drop_public(self, public: set[str]) -> None:
        """Forget values, and words, that the input also uses in device vendor and model names.

        Vendor names are public and kept by the profile; pydicom's test files reuse them as
        institution names ("TOSHIBA") and put placeholders ("name here") in both.
        """
        words = {w for p in public for w in re.split(r"[^A-Z0-9]+", p.upper()) if w}
        self.strings -= public
        self.terms -= {p.upper() for p in public} | words


def _add_text(phi: Phi, value: str, *, term: bool) -> None:
    value = value.strip()
    if len(value) < MIN_LENGTH:  # "1", "AB": too short to tell from any other value
        return
    phi.strings.add(value)
    if term:
        phi.terms.add(value.upper())


def collect_phi(root: Path) -> Phi:
    """Read every DICOM file under ``root`` (non-DICOM files are skipped) and collect its PHI."""
    phi = Phi()
    public: set[str] = set()
    for path in sorted(p for p in root.rglob("*") if p.is_file()):
        try:
            with warnings.catch_warnings():
                warnings.simplefilter("ignore")  # pydicom's test files are odd on purpose
                ds = pydicom.dcmread(path, force=True, stop_before_pixels=True)
                elements = list(ds.iterall()) + (list(ds.file_meta) if hasattr(ds, "file_meta") else [])
        except Exception:  # noqa: BLE001 - not DICOM / unreadable: quarantined, never in processed tables
            continue
        for elem in elements:
            try:
                values = elem.value if elem.VM > 1 else [elem.value]
            except Exception:  # noqa: BLE001 - a value pydicom cannot decode
                continue
            for value in values:
                if value is None or value == "":
                    continue
                if elem.VR == "PN":
                    _add_text(phi, str(value), term=True)
                    for part in re.split(r"[\^= ]", str(value)):
                        if len(part.strip()) >= MIN_LENGTH:
                            phi.terms.add(part.strip().upper())
                            phi.strings.add(part.strip())
                elif elem.VR == "DA":
                    text = str(value).strip().replace(".", "")
                    phi.strings.add(text)
                    try:
                        phi.dates.add(datetime.strptime(text[:8], "%Y%m%d").date())
                    except ValueError:
                        pass
                elif elem.VR == "UI":
                    uid = UID(str(value))
                    if not uid.is_valid or uid.name == str(uid):  # not a well-known DICOM UID
                        if len(str(uid)) > 8:
                            phi.strings.add(str(uid))
                elif elem.keyword in VENDOR_KEYWORDS:
                    public.add(str(value).strip())
                elif elem.keyword in ID_KEYWORDS:
                    _add_text(phi, str(value), term=elem.keyword.startswith(("Institution", "Station")))
    phi.drop_public(public)
    return phi


def _cells(value: Any) -> list[Any]:
    if isinstance(value, (list, tuple)):
        return [c for v in value for c in _cells(v)]
    if isinstance(value, str) and value.startswith("["):
        try:
            return _cells(json.loads(value))
        except ValueError:
            return [value]
    return [value]


def find_phi(phi: Phi, table: str, columns: list[str], rows: list[tuple], *, typed_dates: bool = True) -> list[str]:
    """Cells of ``rows`` that hold a PHI value: ``table.column = value`` for each hit.

    ``typed_dates=False`` skips date-typed cells: shifted dates are dense, and a shifted
    date of one record may fall on the original date of another one by chance. Those are
    checked record by record instead (the original of the same row, see the tests);
    dates written as text (``YYYYMMDD``) are still matched exactly.
    """
    hits: list[str] = []
    for row in rows:
        for column, value in zip(columns, row, strict=True):
            for cell in _cells(value):
                if cell is None:
                    continue
                if isinstance(cell, datetime):
                    cell = cell.date()
                if isinstance(cell, date):
                    if typed_dates and cell in phi.dates:
                        hits.append(f"{table}.{column} = {cell} (an original date)")
                    continue
                text = str(cell).strip()
                if text in phi.strings:
                    hits.append(f"{table}.{column} = {text!r}")
                elif isinstance(cell, str) and not column.endswith(PSEUDONYM_SUFFIXES):
                    upper = text.upper()
                    hits.extend(
                        f"{table}.{column} contains {t!r}"
                        for t in phi.terms
                        if t in upper and re.search(rf"(?<![A-Z0-9]){re.escape(t)}(?![A-Z0-9])", upper)
                    )
    return hits
