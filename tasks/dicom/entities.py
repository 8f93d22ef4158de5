"""The DICOM information model as tables: which keywords land in which entity table.

Raw tables keep DICOM keywords as column names. Column types follow the VR and VM of
the keyword in the DICOM dictionary, so every batch writes the same schema:

- binary integers (US, SS, UL, SL, SV, UV) -> ``Int64``; binary floats (FL, FD) -> ``Float64``;
- everything else (PN, DA, TM, DT, DS, IS, UI, LO, ...) -> ``Utf8``, the value as written
  (DS/IS keep their original string; dates and times are typed in the dbt stage layer);
- a keyword whose VM allows more than one value -> a ``List`` of that type.
"""

from __future__ import annotations

from dataclasses import dataclass
from functools import cached_property
from typing import Any

import polars as pl
from pydicom.datadict import dictionary_VM, dictionary_VR, tag_for_keyword

INT_VRS = frozenset({"US", "SS", "UL", "SL", "SV", "UV", "US or SS"})
FLOAT_VRS = frozenset({"FL", "FD"})

#: Lineage columns carried by every raw table.
LINEAGE_SCHEMA: dict[str, pl.DataType] = {
    "source_key": pl.Utf8,
    "source_etag": pl.Utf8,
    "batch_id": pl.Utf8,
    "ingested_at": pl.Datetime("us", "UTC"),
    "ingest_date": pl.Date,
}


@dataclass(frozen=True)
class Entity:
    """One table of the information model.

    Parameters
    ----------
    name : str
        Table name in the lake and the ``raw`` dbt source.
    key : tuple of str
        Columns that identify one real-world thing (dedup key).
    keywords : tuple of str
        DICOM keywords stored as columns.
    extra : dict
        Derived columns (not DICOM keywords) and their types.
    """

    name: str
    key: tuple[str, ...]
    keywords: tuple[str, ...]
    extra: tuple[tuple[str, pl.DataType], ...] = ()

    @cached_property
    def schema(self) -> dict[str, pl.DataType]:
        """Polars schema: derived columns, keywords, then lineage."""
        schema: dict[str, pl.DataType] = dict(self.extra)
        for kw in self.keywords:
            schema[kw] = keyword_dtype(kw)
        schema.update(LINEAGE_SCHEMA)
        return schema

    @cached_property
    def columns(self) -> tuple[tuple[str, int, pl.DataType], ...]:
        """``(keyword, tag, dtype)`` of each keyword column, for building rows fast."""
        return tuple((kw, int(tag_for_keyword(kw)), self.schema[kw]) for kw in self.keywords)

    @cached_property
    def column_kinds(self) -> tuple[tuple[str, int, type, bool], ...]:
        """``(keyword, tag, str | int | float, is_list)`` of each keyword column."""
        kinds = []
        for kw, tag, dtype in self.columns:
            is_list = isinstance(dtype, pl.List)
            inner = dtype.inner if is_list else dtype
            kind = str if inner == pl.Utf8 else int if inner == pl.Int64 else float
            kinds.append((kw, tag, kind, is_list))
        return tuple(kinds)


def keyword_dtype(keyword: str) -> pl.DataType:
    """Polars type of a DICOM keyword from its dictionary VR and VM.

    Parameters
    ----------
    keyword : str
        A DICOM keyword such as ``"Rows"`` or ``"ImagePositionPatient"``.

    Returns
    -------
    polars.DataType
    """
    vr = dictionary_VR(keyword)
    base: pl.DataType
    if vr in INT_VRS:
        base = pl.Int64
    elif vr in FLOAT_VRS:
        base = pl.Float64
    else:
        base = pl.Utf8
    return base if dictionary_VM(keyword) == "1" else pl.List(base)


PATIENTS = Entity(
    name="patients",
    key=("PatientID", "IssuerOfPatientID"),
    keywords=(
        "PatientID",
        "IssuerOfPatientID",
        "TypeOfPatientID",
        "PatientName",
        "PatientBirthDate",
        "PatientBirthTime",
        "PatientSex",
        "OtherPatientIDs",
        "OtherPatientNames",
        "PatientBirthName",
        "PatientMotherBirthName",
        "EthnicGroup",
        "PatientComments",
        "PatientSpeciesDescription",
        "PatientBreedDescription",
        "ResponsiblePerson",
        "PatientIdentityRemoved",
        "DeidentificationMethod",
        "SpecificCharacterSet",
    ),
)

STUDIES = Entity(
    name="studies",
    key=("StudyInstanceUID",),
    keywords=(
        "StudyInstanceUID",
        "PatientID",
        "IssuerOfPatientID",
        "StudyDate",
        "StudyTime",
        "AccessionNumber",
        "StudyID",
        "StudyDescription",
        "ReferringPhysicianName",
        "PhysiciansOfRecord",
        "NameOfPhysiciansReadingStudy",
        "RequestingPhysician",
        "PatientAge",
        "PatientSize",
        "PatientWeight",
        "AdmittingDiagnosesDescription",
        "AdditionalPatientHistory",
        "ReasonForTheRequestedProcedure",
        "SpecificCharacterSet",
    ),
)

SERIES = Entity(
    name="series",
    key=("SeriesInstanceUID",),
    keywords=(
        "SeriesInstanceUID",
        "StudyInstanceUID",
        "Modality",
        "SeriesNumber",
        "SeriesDate",
        "SeriesTime",
        "SeriesDescription",
        "BodyPartExamined",
        "PatientPosition",
        "Laterality",
        "ProtocolName",
        "OperatorsName",
        "PerformingPhysicianName",
        "FrameOfReferenceUID",
        "PositionReferenceIndicator",
        "PerformedProcedureStepStartDate",
        "PerformedProcedureStepStartTime",
        "PerformedProcedureStepDescription",
        "SpecificCharacterSet",
    ),
    extra=(("device_key", pl.Utf8),),
)

DEVICES = Entity(
    name="devices",
    key=("device_key",),
    keywords=(
        "Manufacturer",
        "ManufacturerModelName",
        "DeviceSerialNumber",
        "StationName",
        "SoftwareVersions",
        "InstitutionName",
        "InstitutionAddress",
        "InstitutionalDepartmentName",
        "SpatialResolution",
        "DateOfLastCalibration",
        "TimeOfLastCalibration",
    ),
    extra=(("device_key", pl.Utf8),),
)

#: Keywords that identify a device; their values hash into ``device_key``.
DEVICE_KEY_KEYWORDS = (
    "Manufacturer",
    "ManufacturerModelName",
    "DeviceSerialNumber",
    "StationName",
    "SoftwareVersions",
)

IMAGES = Entity(
    name="images",
    key=("SOPInstanceUID",),
    keywords=(
        "SOPInstanceUID",
        "SOPClassUID",
        "SeriesInstanceUID",
        "StudyInstanceUID",
        "InstanceNumber",
        "ImageType",
        "ContentDate",
        "ContentTime",
        "AcquisitionDate",
        "AcquisitionTime",
        "AcquisitionDateTime",
        "AcquisitionNumber",
        "InstanceCreationDate",
        "InstanceCreationTime",
        "ImagePositionPatient",
        "ImageOrientationPatient",
        "PixelSpacing",
        "SliceThickness",
        "SpacingBetweenSlices",
        "SliceLocation",
        "PatientOrientation",
        "Rows",
        "Columns",
        "NumberOfFrames",
        "SamplesPerPixel",
        "PhotometricInterpretation",
        "PlanarConfiguration",
        "BitsAllocated",
        "BitsStored",
        "HighBit",
        "PixelRepresentation",
        "RescaleIntercept",
        "RescaleSlope",
        "RescaleType",
        "WindowCenter",
        "WindowWidth",
        "VOILUTFunction",
        "LossyImageCompression",
        "BurnedInAnnotation",
        "KVP",
        "ExposureTime",
        "XRayTubeCurrent",
        "ConvolutionKernel",
        "RepetitionTime",
        "EchoTime",
        "MagneticFieldStrength",
    ),
    extra=(
        ("TransferSyntaxUID", pl.Utf8),
        ("has_pixel_data", pl.Boolean),
        ("file_size", pl.Int64),
        ("content_hash", pl.Utf8),
    ),
)

INSTANCES_HEADER = Entity(
    name="instances_header",
    key=("SOPInstanceUID",),
    keywords=("SOPInstanceUID",),
    extra=(("header_json", pl.Utf8),),
)

INGEST_ERRORS = Entity(
    name="ingest_errors",
    key=("source_key", "stage"),
    keywords=("SOPInstanceUID",),
    extra=(
        ("stage", pl.Utf8),
        ("reason", pl.Utf8),
        ("detail", pl.Utf8),
        ("quarantine_key", pl.Utf8),
        ("file_size", pl.Int64),
        ("content_hash", pl.Utf8),
    ),
)

def ingest_error(
    source_key: str | None,
    reason: str,
    detail: str,
    *,
    stage: str,
    sop_instance_uid: str | None = None,
    quarantine_key: str | None = None,
    file_size: int | None = None,
    content_hash: str | None = None,
) -> dict[str, Any]:
    """An ``ingest_errors`` row without its batch lineage: the one place such a row is made.

    Parameters
    ----------
    source_key : str or None
        The rejected object or ZIP member (``<archive key>!/<member path>``).
    reason : str
        A :class:`tasks.errors.Reason` code.
    detail : str
        What happened and what to do, in words (no PHI).
    stage : str
        Where it was rejected: ``fetch``, ``archive``, ``extract``, ``preview`` or ``pixels``.
    sop_instance_uid, quarantine_key, file_size, content_hash : optional
        What is known of the file at that stage.

    Returns
    -------
    dict
        Every column of :data:`INGEST_ERRORS` but ``source_etag``, ``batch_id``,
        ``ingested_at`` and ``ingest_date``, which the writer of the batch adds.
    """
    return {
        "source_key": source_key,
        "SOPInstanceUID": sop_instance_uid,
        "stage": stage,
        "reason": str(reason),
        "detail": detail,
        "quarantine_key": quarantine_key,
        "file_size": file_size,
        "content_hash": content_hash,
    }


PREVIEWS = Entity(
    name="previews",
    key=("SOPInstanceUID",),
    keywords=("SOPInstanceUID",),
    extra=(
        ("preview_key", pl.Utf8),
        ("preview_bytes", pl.Int64),
        ("preview_width", pl.Int64),
        ("preview_height", pl.Int64),
        ("frame_index", pl.Int64),
        ("pixel_deid_status", pl.Utf8),
        ("pixel_deid_method", pl.Utf8),
    ),
)

DEID_EXPORTS = Entity(
    name="deid_exports",
    key=("SOPInstanceUID",),
    keywords=("SOPInstanceUID",),
    extra=(
        ("image_pseudonym", pl.Utf8),
        ("deid_key", pl.Utf8),
        ("deid_bytes", pl.Int64),
        ("status", pl.Utf8),
        ("pixel_deid_status", pl.Utf8),
        ("pixel_deid_method", pl.Utf8),
        ("reason", pl.Utf8),
    ),
)

ARCHIVES = Entity(
    name="archives",
    key=("SOPInstanceUID",),
    keywords=(),
    # SOPInstanceUID first, as in the files written before the table was registered
    extra=(
        ("SOPInstanceUID", pl.Utf8),
        ("archive_key", pl.Utf8),
        ("status", pl.Utf8),
        ("detail", pl.Utf8),
        ("source_transfer_syntax_uid", pl.Utf8),
        ("archive_transfer_syntax_uid", pl.Utf8),
        ("original_bytes", pl.Int64),
        ("archive_bytes", pl.Int64),
    ),
)

#: Tables written by extraction, in write order.
EXTRACTED = (PATIENTS, STUDIES, SERIES, DEVICES, IMAGES, INSTANCES_HEADER, INGEST_ERRORS)
#: Every raw table in the lake: each gets a 0-row schema file, a ``raw`` dbt source and a
#: Snowflake RAW load; :func:`tasks.lake.tables.write_tables` writes no other.
ALL_TABLES = {e.name: e for e in (*EXTRACTED, PREVIEWS, DEID_EXPORTS, ARCHIVES)}
