"""De-identified DICOM export: one Part 10 file per image that joins the warehouse.

The header is de-identified by the warehouse's own rules and keys, so a file and its rows
agree: the ``internal_anonymization_rules`` seed (PS3.15 Annex E actions by keyword), the
keyed pseudonyms and ``2.25`` UIDs of :mod:`tasks.deid`, and the per-patient day offset of
the modified dates. The seed names the elements the warehouse keeps; every other element,
at any depth of any sequence, gets a conservative default by VR (:func:`element_action`).

What reaches the file, element by element:

- seed actions: ``K`` kept, ``X`` removed, ``Z`` emptied, ``U`` the pseudonymous UID,
  ``D`` the pseudonym (cut to the VR's length: SH holds 16 characters), ``C`` dates shifted,
  times kept, ages over 89 as ``090Y``, descriptors kept only when they hold no identifier;
- ``PatientID`` carries the patient pseudonym (``processed.patients.patient_pseudo_id``);
- not in the seed: UIDs pseudonymized unless well-known DICOM UIDs, dates shifted, person
  names emptied, free text (ST, LT, UT, AE, UR) emptied, IDs, names, numbers, addresses
  and comments emptied, codes kept, other descriptors cleaned; binary and numeric values kept;
- removed: private elements, group lengths, unknown and ``UN`` elements, overlays and curves
  (text can hide there), icon images, and the few sequences in :data:`REMOVED_SEQUENCES`.

Pure functions: no Prefect, no environment, no globals beyond constants.
"""

from __future__ import annotations

import hashlib
import io
import os
import re
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from functools import lru_cache
from pathlib import Path
from typing import Any, Literal

import numpy as np
import yaml
from pydicom import dcmwrite
from pydicom.dataelem import DataElement
from pydicom.dataset import Dataset, FileMetaDataset
from pydicom.multival import MultiValue
from pydicom.pixels import pack_bits
from pydicom.sequence import Sequence as DicomSequence
from pydicom.uid import UID_dictionary, ExplicitVRBigEndian, ExplicitVRLittleEndian, ImplicitVRLittleEndian

from tasks.lake.files import temporary_name, write_atomic
from tasks.pixels.display import decode_all
from tasks.pixels.privacy import PixelText, clean_batch
from tasks.pixels.triage import RegionRule, TriageRule, read_region_rules, read_triage_rules, triage
from tasks.lake.storage import DEID_ZONE
from tasks.deid import RULES_SEED, date_offset_days, pseudo_uid, pseudonym, read_rules

__all__ = [
    "DEID_ZONE",
    "ExportJob",
    "ExportProfile",
    "PixelOutcome",
    "deid_key",
    "deidentify_dataset",
    "export_instance",
    "export_row",
    "export_rows",
    "judge_pixels",
    "patient_key",
    "phi_terms",
    "read_profile",
]

DBT_PROJECT = RULES_SEED.parents[1] / "dbt_project.yml"

#: Our implementation, in the file meta of every exported file (a 2.25 UUID-derived UID).
IMPLEMENTATION_CLASS_UID = "2.25.163894107520453316296519620406305545123"
IMPLEMENTATION_VERSION_NAME = "DICOM_ETL_01"

#: PS3.16 CID 7050 meanings of the codes the profile records.
CODE_MEANINGS = {
    "113100": "Basic Application Confidentiality Profile",
    "113101": "Clean Pixel Data Option",
    "113105": "Clean Descriptors Option",
    "113107": "Retain Longitudinal Temporal Information Modified Dates Option",
    "113108": "Retain Patient Characteristics Option",
}
CLEAN_PIXEL_DATA = "113101"

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

ExportStatus = Literal["exported", "withheld"]
PixelStatus = Literal["not_needed", "cleaned", "withheld"]
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


@dataclass(frozen=True)
class PixelOutcome:
    """What the pixel-privacy step decided for an image's pixels.

    Parameters
    ----------
    status : {"not_needed", "cleaned", "withheld"}
    pixels : numpy.ndarray, optional
        The cleaned stored values (status ``cleaned``), frames first for multi-frame.
    method : str
        How the pixels were judged or cleaned (recorded, never PHI).
    reason : str
        Why they were withheld (or cleaned).
    verified : bool
        No text is left: triage found no risk, or a verification pass found no text.
        Only then does the file say ``BurnedInAnnotation NO``.
    """

    status: PixelStatus
    pixels: np.ndarray | None = field(default=None, repr=False)
    method: str = ""
    reason: str = ""
    verified: bool = False


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


def deid_key(image_pseudonym: str) -> str:
    """Lake key of an exported file: ``deid/<xx>/<image pseudonym>.dcm`` (no PHI in the name)."""
    return f"{DEID_ZONE}/{image_pseudonym[:2]}/{image_pseudonym}.dcm"


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
            out.add(DataElement(tag, "SQ", DicomSequence(items)))
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


def _method_codes(codes: Iterable[str]) -> DicomSequence:
    items = []
    for code in codes:
        item = Dataset()
        item.CodeValue = code
        item.CodingSchemeDesignator = "DCM"
        item.CodeMeaning = CODE_MEANINGS.get(code, code)
        items.append(item)
    return DicomSequence(items)


def export_instance(
    ds: Dataset,
    *,
    secret: str,
    patient: str,
    pixels: PixelOutcome,
    profile: ExportProfile | None = None,
) -> bytes:
    """A de-identified Part 10 file of an instance, as bytes.

    Parameters
    ----------
    ds : Dataset
        The instance as read, with its file meta and pixel data.
    secret : str
        The warehouse's de-identification key.
    patient : str
        The patient key (:func:`patient_key`).
    pixels : PixelOutcome
        ``not_needed``: the pixel data is written as it was (compressed stays compressed;
        uncompressed becomes explicit VR little endian); ``cleaned``: the cleaned stored
        values, uncompressed, and the Clean Pixel Data code is recorded.
    profile : ExportProfile, optional

    Returns
    -------
    bytes

    Raises
    ------
    ValueError
        If ``pixels`` says ``withheld``: a withheld image is never written.
    """
    if pixels.status == "withheld":
        msg = "pixels withheld: the image must not be exported"
        raise ValueError(msg)
    profile = profile or default_profile()
    out = deidentify_dataset(ds, secret=secret, patient=patient, profile=profile)
    meta = getattr(ds, "file_meta", None)
    syntax = str(meta.get("TransferSyntaxUID", ImplicitVRLittleEndian)) if meta is not None else ImplicitVRLittleEndian
    codes = list(profile.codes)
    method = list(profile.method)
    if pixels.status == "cleaned" and pixels.pixels is not None:
        _set_cleaned_pixels(out, ds, pixels.pixels)
        syntax = ExplicitVRLittleEndian
        codes.append(CLEAN_PIXEL_DATA)
        method.append("Clean Pixel Data")
    elif syntax == ExplicitVRBigEndian and "PixelData" in out:
        out.PixelData = _little_endian_pixels(ds)
        syntax = ExplicitVRLittleEndian
    elif not _is_encapsulated(syntax):
        syntax = ExplicitVRLittleEndian  # deflated and implicit inputs are read in full already
    out.PatientIdentityRemoved = "YES"
    out.DeidentificationMethod = method if len(method) > 1 else method[0]
    out.DeidentificationMethodCodeSequence = _method_codes(codes)
    out.LongitudinalTemporalInformationModified = "MODIFIED"
    if pixels.verified and "PixelData" in out:
        out.BurnedInAnnotation = "NO"
    elif "BurnedInAnnotation" in out and out.BurnedInAnnotation == "NO" and pixels.status != "not_needed":
        del out.BurnedInAnnotation
    out.file_meta = _file_meta(out, syntax)
    buf = io.BytesIO()
    dcmwrite(buf, out, enforce_file_format=True)
    return buf.getvalue()


def _little_endian_pixels(ds: Dataset) -> bytes:
    """Native pixel data of a big endian file, in little endian byte order."""
    stored = ds.pixel_array
    if int(ds.BitsAllocated) == 1:
        return pack_bits(stored)
    return stored.astype(stored.dtype.newbyteorder("<")).tobytes()


def _is_encapsulated(syntax: str) -> bool:
    return syntax not in (ExplicitVRLittleEndian, ImplicitVRLittleEndian, ExplicitVRBigEndian,
                          "1.2.840.10008.1.2.1.99")


def _set_cleaned_pixels(out: Dataset, ds: Dataset, stored: np.ndarray) -> None:
    """Write cleaned stored values uncompressed, with the pixel description that fits them."""
    for keyword in ENCAPSULATION_KEYWORDS:
        if keyword in out:
            del out[keyword]
    photometric = str(ds.get("PhotometricInterpretation", "MONOCHROME2"))
    if photometric.startswith("YBR"):
        photometric = "RGB"  # decoders hand YBR over as RGB (palette images stay indices)
    bits_stored = int(ds.get("BitsStored", stored.dtype.itemsize * 8))
    out.set_pixel_data(stored, photometric, min(bits_stored, stored.dtype.itemsize * 8))
    if "LossyImageCompression" in ds:
        out.LossyImageCompression = ds.LossyImageCompression  # once lossy, always lossy


def _file_meta(out: Dataset, syntax: str) -> FileMetaDataset:
    meta = FileMetaDataset()
    meta.FileMetaInformationVersion = b"\x00\x01"
    meta.MediaStorageSOPClassUID = out.SOPClassUID
    meta.MediaStorageSOPInstanceUID = out.SOPInstanceUID
    meta.TransferSyntaxUID = syntax
    meta.ImplementationClassUID = IMPLEMENTATION_CLASS_UID
    meta.ImplementationVersionName = IMPLEMENTATION_VERSION_NAME
    return meta


PixelJudge = Callable[[Dataset], PixelOutcome]


@lru_cache(maxsize=1)
def _pixel_rules() -> tuple[tuple[TriageRule, ...], tuple[RegionRule, ...]]:
    """The pixel-privacy seeds' triage and region rules, read once per process."""
    return read_triage_rules(), read_region_rules()


def judge_pixels(datasets: Sequence[Dataset], *, mode: PixelText = "all") -> list[PixelOutcome]:
    """The pixel-privacy decisions for images to export, by the previews' own code.

    Triage from the header first (no decoding for images not at risk); the images at risk
    are decoded and cleaned together by :func:`tasks.pixels.privacy.clean_batch` (one OCR
    run per step for all), which verifies the result with another reading or withholds.

    Parameters
    ----------
    datasets : sequence of Dataset
    mode : {"all", "sensitive", "none"}, default "all"
        The ``pixel_text`` setting (see :func:`tasks.pixels.privacy.clean_pixels`).

    Returns
    -------
    list of PixelOutcome
        In the order of ``datasets``; an image whose pixels cannot be decoded is withheld.
    """
    rules, regions = _pixel_rules()
    outcomes: list[PixelOutcome | None] = [None] * len(datasets)
    risky = []
    for i, ds in enumerate(datasets):
        try:
            found = triage(ds, rules)
            if found.status == "not_at_risk":
                outcomes[i] = PixelOutcome("not_needed", method="triage", verified=True)
            else:
                risky.append((i, found, decode_all(ds)))
        except Exception as exc:  # noqa: BLE001 - nothing checked these pixels: withheld
            outcomes[i] = PixelOutcome("withheld", reason=f"pixel data could not be decoded ({type(exc).__name__})")
    cleaned = clean_batch(
        [(datasets[i], pixels) for i, _, pixels in risky], mode=mode, regions=regions, triaged=[f for _, f, _ in risky]
    )
    for (i, found, _), result in zip(risky, cleaned, strict=True):
        if result.status == "cleaned" and result.pixels is not None:  # cleaned means verified there
            outcomes[i] = PixelOutcome("cleaned", pixels=result.pixels, method=result.method, verified=True)
        elif result.status == "not_needed":  # pixel_text=none: as stored, nothing verified
            outcomes[i] = PixelOutcome("not_needed", method=result.method, reason=f"triage {found.status}, pixel_text={mode}")
        else:
            outcomes[i] = PixelOutcome("withheld", method=result.method, reason=result.reason or "burned_in_text")
    return outcomes  # type: ignore[return-value]


@dataclass(frozen=True)
class ExportJob:
    """Write de-identified DICOM files into ``lake`` under ``secret``.

    Pixels are judged by :func:`judge_pixels` in the ``pixel_text`` mode, or by ``judge``
    (a module-level function: a process pool pickles the job).
    """

    lake: Path
    secret: str = field(repr=False)
    judge: PixelJudge | None = None
    pixel_text: PixelText = "all"

    def judge_pixels(self, datasets: Sequence[Dataset]) -> list[PixelOutcome]:
        """This job's pixel-privacy decisions: its ``judge``'s, else :func:`judge_pixels` in its mode."""
        if self.judge is None:
            return judge_pixels(datasets, mode=self.pixel_text)
        return [_judged(self.judge, ds) for ds in datasets]

    def write(self, key: str, data: bytes) -> None:
        """Store a file under its lake key, atomically."""
        write_atomic(os.path.join(self.lake, key), data)  # no Path per file: they add up


def _judged(judge: PixelJudge, ds: Dataset) -> PixelOutcome:
    try:
        return judge(ds)
    except Exception as exc:  # noqa: BLE001 - nothing checked the pixels: withheld, never exported
        return PixelOutcome("withheld", reason=f"pixel check failed ({type(exc).__name__})")


def export_rows(
    items: Sequence[tuple[Dataset, str, str, str]],
    job: ExportJob,
    *,
    profile: ExportProfile | None = None,
) -> list[dict[str, Any]]:
    """Export images (or withhold them) and return their ``deid_exports`` rows (without lineage).

    Parameters
    ----------
    items : sequence of (Dataset, str, str, str)
        ``(dataset, SOPInstanceUID, source key, patient key)``: the UID as the ``images``
        table holds it (the file is named by its pseudonym), the file's key at the source
        (the file waits under a temporary name derived from it until :func:`settle_exports`)
        and the patient key (:func:`patient_key`). Their pixels are judged together.
    job : ExportJob
        Where to write, the key, and the pixel-privacy decision.
    profile : ExportProfile, optional

    Returns
    -------
    list of dict
        ``SOPInstanceUID``, ``source_key``, ``image_pseudonym``, ``deid_key``, ``deid_bytes``,
        ``status`` (``exported`` or ``withheld``), ``pixel_deid_status``, ``pixel_deid_method``,
        ``reason``; in the order of ``items``.
    """
    try:
        outcomes = job.judge_pixels([ds for ds, *_ in items])
    except Exception as exc:  # noqa: BLE001 - OCR or a decoder failed for the group: nothing is claimed clean
        outcomes = [PixelOutcome("withheld", reason=f"pixel check failed ({type(exc).__name__})")] * len(items)
    return [
        _export(ds, uid, key, patient, outcome, job, profile)
        for (ds, uid, key, patient), outcome in zip(items, outcomes, strict=True)
    ]


def export_row(
    ds: Dataset, *, sop_uid: str, source_key: str, patient: str, job: ExportJob, profile: ExportProfile | None = None
) -> dict[str, Any]:
    """:func:`export_rows` for one image."""
    return export_rows([(ds, sop_uid, source_key, patient)], job, profile=profile)[0]


def _export(
    ds: Dataset, sop_uid: str, source_key: str, patient: str, outcome: PixelOutcome, job: ExportJob,
    profile: ExportProfile | None,
) -> dict[str, Any]:
    image_id = pseudonym(sop_uid, job.secret)
    row: dict[str, Any] = {
        "SOPInstanceUID": sop_uid, "source_key": source_key, "image_pseudonym": image_id, "deid_key": None,
        "deid_bytes": None, "status": "withheld", "pixel_deid_status": outcome.status,
        "pixel_deid_method": outcome.method or None, "reason": outcome.reason or None,
    }
    if outcome.status == "withheld":
        return row
    try:
        data = export_instance(ds, secret=job.secret, patient=patient, pixels=outcome, profile=profile)
    except Exception as exc:  # noqa: BLE001 - this file's problem; never the value (PHI) in the reason
        row["reason"] = f"could not be written as de-identified DICOM ({type(exc).__name__})"
        return row
    key = deid_key(image_id)
    job.write(staged_key(key, source_key), data)
    row.update(deid_key=key, deid_bytes=len(data), status="exported")
    return row


def staged_key(key: str, source_key: str) -> str:
    """Where a file waits until its batch settles duplicates: a temporary name per source file.

    Two files of a batch can share a SOPInstanceUID, hence a name; each is written under its
    own temporary name (``.<name>.<source digest>.partial``, swept if a run dies) and
    :func:`settle_exports` renames one of them.
    """
    folder, name = key.rsplit("/", 1)
    digest = hashlib.sha256(source_key.encode()).hexdigest()[:12]
    return f"{folder}/{temporary_name(f'{name}.{digest}')}"


def settle_exports(rows: Iterable[dict[str, Any]], lake: Path) -> list[dict[str, Any]]:
    """Give each exported name one file: the first row of a SOPInstanceUID (by source key) wins.

    Parameters
    ----------
    rows : iterable of dict
        ``deid_exports`` rows of a batch with their ``source_key``, in source-key order.
    lake : Path
        Where the files were written under :func:`staged_key` names.

    Returns
    -------
    list of dict
        The rows; a later file of the same SOPInstanceUID is withheld (reason
        ``duplicate_conflict``) and its temporary file removed, as in the ``images`` table.
    """
    seen: set[str] = set()
    out = []
    for row in rows:
        if row["status"] == "exported":
            staged = os.path.join(lake, staged_key(row["deid_key"], row["source_key"] or ""))
            if row["SOPInstanceUID"] in seen:
                os.remove(staged)
                detail = "duplicate_conflict: another file of the batch has this SOPInstanceUID and is exported"
                row = row | {"status": "withheld", "deid_key": None, "deid_bytes": None, "reason": detail}
            else:
                os.replace(staged, os.path.join(lake, row["deid_key"]))
                seen.add(row["SOPInstanceUID"])
        out.append(row)
    return out
