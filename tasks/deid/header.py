"""De-identified headers: a dataset rewritten by the warehouse's rules and keys, at every depth.

The rules are the warehouse's ``internal_anonymization_rules`` seed (PS3.15 Annex E actions by
keyword), the keys are the keyed pseudonyms and ``2.25`` UIDs of :mod:`tasks.deid` and the
per-patient day offset of the modified dates, so a de-identified header joins the processed
tables. Element by element:

- seed actions: ``K`` kept; ``X`` and ``Z`` emptied (zero length: an IOD may require the
  element); ``U`` the pseudonymous UID; ``D`` the pseudonym (cut to the VR's length: SH holds
  16 characters); ``C`` dates shifted, times kept, ages over 89 as ``090Y``, descriptors kept
  only when they hold no identifier;
- ``PatientID`` carries the patient pseudonym (``processed.patients.patient_pseudo_id``);
- not in the seed (:func:`element_action`): UIDs pseudonymized unless well-known DICOM UIDs,
  dates shifted, person names and free text emptied, IDs and numbers pseudonymized, addresses
  and comments emptied, codes kept, other descriptors cleaned, numbers and binary values kept;
- removed: private elements, group lengths, unknown and ``UN`` elements, values that do not fit
  their VR, overlays and curves (text can hide there), and :data:`REMOVED_SEQUENCES`.

Pure functions: no Prefect, no environment, no globals beyond constants.
"""

from __future__ import annotations

import re
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from datetime import datetime, timedelta
from functools import lru_cache
from pathlib import Path
from typing import Any

import yaml
from pydicom.dataelem import DataElement
from pydicom.dataset import Dataset
from pydicom.multival import MultiValue
from pydicom.sequence import Sequence
from pydicom.uid import UID_dictionary

from tasks.deid import RULES_SEED, date_offset_days, pseudo_uid, pseudonym, read_rules

__all__ = [
    "ExportProfile",
    "clean_descriptor",
    "default_profile",
    "deidentify_dataset",
    "element_action",
    "patient_key",
    "phi_terms",
    "read_profile",
    "shift_date",
    "shift_datetime",
]

DBT_PROJECT = RULES_SEED.parents[1] / "dbt_project.yml"

#: Text elements of coded entries and structure: kept wherever they are (codes carry no identity).
KEPT_TEXT = frozenset({
    "CodeValue", "CodingSchemeDesignator", "CodingSchemeVersion", "CodeMeaning", "LongCodeValue",
    "URNCodeValue", "ContextIdentifier", "MappingResource", "MappingResourceName", "ContextGroupVersion",
    "ContextGroupLocalVersion", "CodingSchemeName", "ValueType", "RelationshipType",
})
#: Sequences that exist to identify the patient, a visit or a request: removed whole.
REMOVED_SEQUENCES = frozenset({
    "OtherPatientIDsSequence", "ReferencedPatientSequence", "ReferencedPatientPhotoSequence",
    "PatientInsurancePlanCodeSequence", "ReferencedVisitSequence", "IconImageSequence",
    "DeidentificationMethodCodeSequence", "OriginalAttributesSequence", "ModifiedAttributesSequence",
    "ConsultingPhysicianIdentificationSequence", "IssuerOfAccessionNumberSequence",
    "IssuerOfPatientIDQualifiersSequence", "PatientBreedCodeSequence", "BreedRegistrationSequence",
    "DigitalSignaturesSequence", "EncryptedAttributesSequence",
})
#: Keyword endings of text elements that identify something: replaced by a pseudonym (``D``),
#: which keeps required IDs present and links equal values.
IDENTIFIER_ENDINGS = ("ID", "IDs", "Number", "Numbers", "Identifier", "Locator")
#: Keyword endings of text elements about people and places: emptied (``Z``).
PERSONAL_ENDINGS = ("Address", "Comments", "TelephoneNumbers", "Location", "Observer", "Operator")
#: Curves (50xx) and overlays (60xx): overlay bits can hold burned-in text.
REPEATING_GROUPS = frozenset(range(0x5000, 0x5020, 2)) | frozenset(range(0x6000, 0x6020, 2))
FREE_TEXT_VRS = frozenset({"ST", "LT", "UT", "AE", "UR"})
TEXT_VRS = frozenset({"LO", "SH", "UC"}) | FREE_TEXT_VRS
MAX_LENGTH = {"SH": 16, "LO": 64, "CS": 16, "AE": 16, "UC": 64}
#: Elements the seed removes (X) but an IOD requires with a value (Enhanced General Equipment,
#: type 1): they get a pseudonym instead.
REQUIRED_BY_SOME_IODS = frozenset({"DeviceSerialNumber", "SoftwareVersions"})
#: Elements re-set on every exported file (provenance), never copied from the input.
PROVENANCE = frozenset({"PatientIdentityRemoved", "DeidentificationMethod", "LongitudinalTemporalInformationModified"})
PIXEL_KEYWORDS = frozenset({"PixelData", "FloatPixelData", "DoubleFloatPixelData"})
#: Pixel elements that only make sense with the original pixel encoding.
ENCAPSULATION_KEYWORDS = frozenset({"ExtendedOffsetTable", "ExtendedOffsetTableLengths"})

#: Same pattern as the clean_descriptor macro (macros/deid.sql): runs of 5+ digits, dates, ^ and @.
IDENTIFIER_PATTERN = re.compile(r"[0-9]{5,}|[0-9]{1,4}[-./][0-9]{1,2}[-./][0-9]{1,4}|[@^]")
#: The macro's other source of identifiers (stg_phi_terms): these elements' parts, 3+ characters.
TERM_KEYWORDS = ("PatientName", "PatientID", "ReferringPhysicianName", "AccessionNumber")

_REMOVE = object()


@dataclass(frozen=True)
class ExportProfile:
    """What the export does to each element: the seed's actions and the recorded method.

    Parameters
    ----------
    actions : mapping of str to str
        DICOM keyword -> PS3.15 Annex E action (``D``, ``Z``, ``X``, ``K``, ``C``, ``U``).
    method : tuple of str
        DeidentificationMethod values (each at most 64 characters, LO).
    codes : tuple of str
        CID 7050 code values of the profile and options applied to headers.
    """

    actions: Mapping[str, str]
    method: tuple[str, ...]
    codes: tuple[str, ...]


def read_profile(rules: Path = RULES_SEED, project: Path = DBT_PROJECT) -> ExportProfile:
    """The export's profile: the warehouse's rules seed and the method its tables record.

    Parameters
    ----------
    rules : Path
        ``internal_anonymization_rules.csv``; every keyword's action, whatever its entity
        (where entities disagree, the stricter action: ``X`` before ``Z``).
    project : Path
        ``dbt_project.yml``, whose vars ``deid_method`` and ``deid_method_codes`` the
        processed tables record.

    Returns
    -------
    ExportProfile
    """
    strictness = {"X": 0, "Z": 1, "D": 2, "U": 3, "C": 4, "K": 5}
    actions: dict[str, str] = {}
    for rule in read_rules(rules):
        current = actions.get(rule.column)
        if current is None or strictness[rule.action] < strictness[current]:
            actions[rule.column] = rule.action
    variables = yaml.safe_load(project.read_text())["vars"]
    method = tuple(part.strip() for part in str(variables["deid_method"]).split(";") if part.strip())
    codes = tuple(str(variables["deid_method_codes"]).split("\\"))
    return ExportProfile(actions=actions, method=tuple(m[:64] for m in method), codes=codes)


@lru_cache(maxsize=1)
def default_profile() -> ExportProfile:
    """The profile of this checkout's seed, read once per process."""
    return read_profile()


def patient_key(patient_id: str | None, issuer: str | None) -> str:
    """The warehouse's patient key (``stg_studies.patient_key``): ``PatientID^IssuerOfPatientID``."""
    return f"{patient_id or ''}^{issuer or ''}"


def _text(value: Any) -> str:
    """A value as the raw tables hold it: DICOM padding (trailing spaces, NULs) removed."""
    return str(value).rstrip(" \x00")


def phi_terms(ds: Dataset) -> frozenset[str]:
    """Name parts and IDs of the instance, upper case, 3+ characters (as ``stg_phi_terms``)."""
    terms: set[str] = set()
    for keyword in TERM_KEYWORDS:
        value = ds.get(keyword)
        if value is None:
            continue
        for part in _text(value).split("^")[:3]:
            if len(part.strip()) >= 3:
                terms.add(part.strip().upper())
    return frozenset(terms)


def clean_descriptor(value: str, terms: Iterable[str]) -> str | None:
    """A descriptor kept, or None when it looks like it holds an identifier (``clean_descriptor`` macro)."""
    if not value.strip():
        return None
    if IDENTIFIER_PATTERN.search(value):
        return None
    upper = value.upper()
    if any(term in upper for term in terms):
        return None
    return value


def shift_date(value: str, days: int) -> str | None:
    """A DA value moved ``days`` back (``YYYYMMDD``, also ``YYYY.MM.DD``); None if not a date."""
    text = value.strip().replace(".", "")
    try:
        when = datetime.strptime(text, "%Y%m%d").date()
    except ValueError:
        return None
    return (when - timedelta(days=days)).strftime("%Y%m%d")


def shift_datetime(value: str, days: int) -> str | None:
    """A DT value moved ``days`` back; the time of day, fraction and offset kept; None without a full date."""
    text = value.strip()
    moved = shift_date(text[:8], days) if len(text) >= 8 and text[:8].isdigit() else None
    return None if moved is None else moved + text[8:]


def generalize_age(value: str) -> str:
    """An AS value, ``090Y`` for ages over 89 years (``generalize_age`` macro)."""
    text = value.strip()
    if re.fullmatch(r"[0-9]{3}Y", text) and int(text[:3]) > 89:
        return "090Y"
    return text


def is_well_known_uid(value: str) -> bool:
    """A UID the standard defines (SOP classes, transfer syntaxes, coding schemes): no identity."""
    return value in UID_dictionary or value.startswith("1.2.840.10008.")


def element_action(keyword: str, vr: str, actions: Mapping[str, str]) -> str:
    """The action for an element: the seed's, else a default by VR and keyword.

    Returns one of the seed actions, or ``"V"`` (UID: pseudonymized unless well-known) and
    ``"T"`` (descriptor: cleaned) for elements the seed does not name.
    """
    action = actions.get(keyword)
    if action is not None:
        return action
    if vr == "UI":
        return "V"
    if vr in ("DA", "DT", "AS"):
        return "C"
    if vr == "PN":
        return "Z"
    if vr in TEXT_VRS:
        if keyword in KEPT_TEXT:
            return "K"
        if keyword.endswith(IDENTIFIER_ENDINGS):
            return "D"
        if vr in FREE_TEXT_VRS or keyword.endswith(PERSONAL_ENDINGS):
            return "Z"
        return "T"
    return "K"


@dataclass(frozen=True)
class _Keys:
    secret: str
    patient_pseudonym: str
    offset_days: int
    terms: frozenset[str]
    profile: ExportProfile


def deidentify_dataset(
    ds: Dataset,
    *,
    secret: str,
    patient: str,
    profile: ExportProfile | None = None,
    terms: frozenset[str] | None = None,
) -> Dataset:
    """A de-identified copy of an instance's dataset (the input is not changed).

    Parameters
    ----------
    ds : Dataset
        The instance as read (file meta is not copied; see :func:`export_instance`).
    secret : str
        The de-identification key of the warehouse.
    patient : str
        The patient key (:func:`patient_key`), whose pseudonym is the file's PatientID and
        whose day offset shifts every date.
    profile : ExportProfile, optional
        The rules; this checkout's seed by default.
    terms : frozenset of str, optional
        Identifiers no kept descriptor may contain; the instance's own by default.

    Returns
    -------
    Dataset
        Pixel data elements are carried over unchanged, by reference.
    """
    patient_pseudonym = pseudonym(patient, secret)
    keys = _Keys(
        secret=secret,
        patient_pseudonym=patient_pseudonym,
        offset_days=date_offset_days(patient_pseudonym),
        terms=phi_terms(ds) if terms is None else terms,
        profile=profile or default_profile(),
    )
    out = _copy(ds, keys, top=True)
    # the warehouse gives every image a patient (an instance without PatientID has key "^"): so does the file
    out.PatientID = patient_pseudonym
    return out


def _copy(ds: Dataset, keys: _Keys, *, top: bool) -> Dataset:
    out = Dataset()
    for tag in list(ds.keys()):
        try:
            elem = ds[tag]
        except Exception:  # noqa: BLE001 - a value that does not fit its VR: dropped, not guessed at
            continue
        tag = elem.tag
        group = tag >> 16
        if tag.is_private or (tag & 0xFFFF) == 0 or group < 0x0008 or group in REPEATING_GROUPS:
            continue  # private, group lengths, meta/command groups, curves and overlays
        keyword = elem.keyword
        if not keyword or elem.VR == "UN" or keyword in PROVENANCE:
            continue
        if keyword in PIXEL_KEYWORDS or keyword in ENCAPSULATION_KEYWORDS:
            if top:  # a new element, the same bytes: setting the export's pixels leaves the input's alone
                out.add(DataElement(tag, elem.VR, elem.value, is_undefined_length=elem.is_undefined_length))
            continue
        if elem.VR == "SQ":
            action = keys.profile.actions.get(keyword)
            if keyword in REMOVED_SEQUENCES or action == "X":
                continue
            items = [] if action == "Z" else [_copy(item, keys, top=False) for item in elem.value]
            out.add(DataElement(tag, "SQ", Sequence(items)))
            continue
        value = _value(elem, keyword, keys)
        if value is _REMOVE:
            continue
        try:
            out.add(DataElement(tag, elem.VR, value))
        except ValueError:  # the input's value does not fit its VR ("1A" as IS): dropped
            continue
    return out


def _values(value: Any) -> list[Any]:
    if value is None:
        return []
    if isinstance(value, (MultiValue, list, tuple)):
        return list(value)
    return [value]


def _value(elem: DataElement, keyword: str, keys: _Keys) -> Any:
    vr = elem.VR
    if keyword == "PatientID":  # the patient's identity, carried by its pseudonym (patient_key, D)
        return keys.patient_pseudonym[: MAX_LENGTH.get(vr, 64)]
    action = element_action(keyword, vr, keys.profile.actions)
    if action == "K":
        return elem.value
    if action == "X" and keyword in REQUIRED_BY_SOME_IODS and elem.value not in (None, ""):
        action = "D"
    if action in ("X", "Z"):  # emptied, not removed: an IOD may require the element (type 2)
        return ""
    values = [_text(v) for v in _values(elem.value)]
    if action == "U":
        out = [pseudo_uid(v, keys.secret) if v else "" for v in values]
    elif action == "V":
        out = [v if not v or is_well_known_uid(v) else pseudo_uid(v, keys.secret) for v in values]
    elif action == "D":
        out = [pseudonym(v, keys.secret)[: MAX_LENGTH.get(vr, 64)] if v else "" for v in values]
    elif vr == "DA":
        out = [shift_date(v, keys.offset_days) or "" for v in values]
    elif vr == "DT":
        out = [shift_datetime(v, keys.offset_days) or "" for v in values]
    elif vr == "TM":
        out = values  # whole days move: times of day stay
    elif vr == "AS":
        out = [generalize_age(v) for v in values]
    elif vr in TEXT_VRS or vr in ("PN", "CS"):
        out = [clean_descriptor(v, keys.terms) or "" for v in values]
    else:  # C on a number: nothing to clean
        return elem.value
    if not any(out):
        return ""
    return out[0] if len(out) == 1 else out
