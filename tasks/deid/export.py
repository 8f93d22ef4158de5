"""De-identified DICOM export: one Part 10 file per image that joins the warehouse.

``deid/<xx>/<image pseudonym>.dcm``: the header de-identified by :mod:`tasks.deid.header`
(the warehouse's rules and keys), the pixels judged by the pixel-privacy code of the previews
(:mod:`tasks.pixels.privacy`): as stored when triage finds no risk, cleaned and verified, or
withheld (no file). A new file meta and the applied profile (PatientIdentityRemoved,
DeidentificationMethod and its CID 7050 codes) are set on every file.

Pure functions: no Prefect, no environment, no globals beyond constants.
"""

from __future__ import annotations

import hashlib
import io
import os
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass, field
from functools import lru_cache
from pathlib import Path
from typing import Any, Literal

import numpy as np
from pydicom import dcmwrite
from pydicom.dataset import Dataset, FileMetaDataset
from pydicom.pixels import pack_bits
from pydicom.sequence import Sequence as DicomSequence
from pydicom.uid import ExplicitVRBigEndian, ExplicitVRLittleEndian, ImplicitVRLittleEndian

from tasks.deid import pseudonym
from tasks.deid.header import ENCAPSULATION_KEYWORDS, ExportProfile, default_profile, deidentify_dataset
from tasks.lake.files import temporary_name, write_atomic
from tasks.lake.storage import DEID_ZONE
from tasks.pixels.display import decode_all
from tasks.pixels.privacy import PixelText, clean_batch
from tasks.pixels.triage import RegionRule, TriageRule, read_region_rules, read_triage_rules, triage

__all__ = [
    "DEID_ZONE",
    "ExportJob",
    "PixelOutcome",
    "deid_key",
    "export_instance",
    "export_row",
    "export_rows",
    "judge_pixels",
    "settle_exports",
    "staged_key",
]

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

ExportStatus = Literal["exported", "withheld"]
PixelStatus = Literal["not_needed", "cleaned", "withheld"]


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


def deid_key(image_pseudonym: str) -> str:
    """Lake key of an exported file: ``deid/<xx>/<image pseudonym>.dcm`` (no PHI in the name)."""
    return f"{DEID_ZONE}/{image_pseudonym[:2]}/{image_pseudonym}.dcm"


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
