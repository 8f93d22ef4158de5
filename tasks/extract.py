"""Read DICOM files and turn a batch of them into one polars frame per entity table.

Pure functions: they take paths and lineage and return frames; nothing here imports
Prefect or reads the environment.
"""

from __future__ import annotations

import hashlib
import io
import json
import logging
import warnings
from collections.abc import Iterable, Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import polars as pl
import pydicom
from pydicom import config
from pydicom.dataelem import DataElement
from pydicom.dataset import Dataset
from pydicom.errors import InvalidDicomError
from pydicom.multival import MultiValue
from pydicom.pixels.utils import get_expected_length
from pydicom.valuerep import PersonName

from tasks.entities import (
    DEVICE_KEY_KEYWORDS,
    DEVICES,
    EXTRACTED,
    IMAGES,
    INGEST_ERRORS,
    INSTANCES_HEADER,
    PATIENTS,
    SERIES,
    STUDIES,
    Entity,
)
from tasks.errors import FileRejected, Reason

#: Binary VRs whose values are dropped from the JSON header above ``bulk_threshold`` bytes.
BINARY_VRS = frozenset({"OB", "OD", "OF", "OL", "OV", "OW", "UN", "OB or OW", "US or OW"})
REQUIRED_UIDS = ("SOPInstanceUID", "StudyInstanceUID", "SeriesInstanceUID")
MEDIA_STORAGE_DIRECTORY = "1.2.840.10008.1.3.10"


@dataclass(frozen=True)
class SourceFile:
    """One file to extract: where it is now and where it came from.

    Parameters
    ----------
    path : Path
        Local path of the bytes (the raw-zone copy or a scratch download).
    key : str
        The object's key at the source, relative to the source root (lineage).
    etag : str
        The source's version tag of the object (S3 ETag, or size+mtime for folders).
    """

    path: Path
    key: str
    etag: str = ""


@dataclass
class Lineage:
    """Lineage columns shared by every row of a batch."""

    batch_id: str
    ingested_at: datetime = field(default_factory=lambda: datetime.now(UTC))

    @property
    def ingest_date(self):
        return self.ingested_at.date()


@contextmanager
def quiet_pydicom() -> Iterator[None]:
    """Silence pydicom's per-value warnings, which would log header values (PHI)."""
    previous = config.settings.reading_validation_mode
    config.settings.reading_validation_mode = config.IGNORE
    # pydicom also logs decoder failures with tracebacks; the caller reports them instead
    pydicom_logger = logging.getLogger("pydicom")
    previous_level = pydicom_logger.level
    pydicom_logger.setLevel(logging.CRITICAL)
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            yield
    finally:
        config.settings.reading_validation_mode = previous
        pydicom_logger.setLevel(previous_level)


def sha256_hex(data: bytes) -> str:
    """Hex SHA-256 of ``data``."""
    return hashlib.sha256(data).hexdigest()


def read_dicom(data: bytes) -> Dataset:
    """Parse DICOM bytes into a dataset, or reject them with a reason.

    Files without the 128-byte preamble or file meta group are accepted when what
    follows parses as a dataset with the identifying UIDs.

    Parameters
    ----------
    data : bytes
        The whole file.

    Returns
    -------
    pydicom.dataset.Dataset

    Raises
    ------
    FileRejected
        ``empty_file``, ``not_dicom``, ``truncated``, ``unreadable`` or ``dicomdir``.
    """
    if not data:
        raise FileRejected(Reason.EMPTY_FILE, "the file has 0 bytes")
    with quiet_pydicom():
        try:
            try:
                ds = pydicom.dcmread(io.BytesIO(data))
            except InvalidDicomError:
                ds = pydicom.dcmread(io.BytesIO(data), force=True)
                if "SOPInstanceUID" not in ds and "SOPClassUID" not in ds:
                    msg = "no DICOM preamble, file meta or SOP identification was found"
                    raise FileRejected(Reason.NOT_DICOM, msg) from None
            _ = ds.get("SOPClassUID")  # forces the parse of the identifying group
        except FileRejected:
            raise
        except EOFError as exc:
            raise FileRejected(Reason.TRUNCATED, f"the file ends early: {exc}") from None
        except Exception as exc:  # pydicom raises many types on garbage
            kind = Reason.TRUNCATED if "end of file" in str(exc).lower() else Reason.UNREADABLE
            raise FileRejected(kind, f"{type(exc).__name__}: {exc}"[:500]) from None
    media_class = ds.get("file_meta", Dataset()).get("MediaStorageSOPClassUID")
    if media_class == MEDIA_STORAGE_DIRECTORY or "DirectoryRecordSequence" in ds:
        raise FileRejected(Reason.DICOMDIR, "a DICOMDIR index, not an instance")
    _check_pixel_length(ds)
    return ds


def _check_pixel_length(ds: Dataset) -> None:
    """Reject native pixel data shorter than its description (a cut-off download)."""
    elem = ds.get_item("PixelData") if "PixelData" in ds else None
    if elem is None or ds.get("file_meta") is None:
        return
    ts = ds.file_meta.get("TransferSyntaxUID")
    if ts is None or ts.is_compressed:
        return
    try:
        expected = int(get_expected_length(ds, unit="bytes"))
    except (AttributeError, KeyError, TypeError, ValueError):
        return  # the pixel description itself is broken; the preview stage reports it
    actual = len(elem.value) if elem.value is not None else 0
    if actual < expected:
        msg = f"pixel data has {actual} bytes, its description needs {expected}"
        raise FileRejected(Reason.TRUNCATED, msg)


def element_value(elem: DataElement) -> Any:
    """The value of an element as a plain Python value for a raw-table column.

    PN keeps all its components as written (``Family^Given=Ideographic``), DS and IS
    keep their original strings, multi-valued elements become lists.
    """
    value = elem.value
    if value is None or value == "" or (isinstance(value, (list, MultiValue)) and not value):
        return None
    if isinstance(value, (list, MultiValue)):
        return [_scalar(v) for v in value]
    return _scalar(value)


def _scalar(value: Any) -> Any:
    if isinstance(value, PersonName):
        return str(value)
    original = getattr(value, "original_string", None)
    if original is not None:
        return str(original).strip()
    if isinstance(value, (int, float, str)):
        return value
    if isinstance(value, bytes):
        return None
    return str(value)


def _row(ds: Dataset, entity: Entity) -> dict[str, Any]:
    row: dict[str, Any] = {}
    schema = entity.schema
    for kw in entity.keywords:
        elem = ds.get(kw) if kw in ds else None
        value = None
        if elem is not None:
            value = element_value(ds[kw])
        row[kw] = _coerce(value, schema[kw])
    return row


def _coerce(value: Any, dtype: pl.DataType) -> Any:
    """Fit a value to its column: wrap scalars for lists, unwrap lists for scalars."""
    if value is None:
        return None
    is_list = isinstance(dtype, pl.List)
    inner = dtype.inner if is_list else dtype
    values = value if isinstance(value, list) else [value]
    out = []
    for v in values:
        if v is None:
            out.append(None)
        elif inner == pl.Utf8:
            # trailing spaces are DICOM padding, not meaning
            out.append(str(v).rstrip(" \x00"))
        elif inner == pl.Int64:
            out.append(_to_number(v, int))
        else:
            out.append(_to_number(v, float))
    if is_list:
        return out
    return out[0] if len(out) == 1 else "\\".join(str(v) for v in values)


def _to_number(value: Any, kind: type) -> Any:
    try:
        return kind(value)
    except (TypeError, ValueError):
        return None


def device_key(ds: Dataset) -> str:
    """A stable key for the equipment that made the instance.

    SHA-256 (first 32 hex digits) of the identifying keywords' values, so the same
    device gets the same key in every batch and run.
    """
    parts = [str(ds.get(kw, "") or "").strip() for kw in DEVICE_KEY_KEYWORDS]
    return hashlib.sha256("\x1f".join(parts).encode()).hexdigest()[:32]


def header_json(ds: Dataset, *, bulk_threshold: int = 1024) -> str:
    """The whole header as DICOM JSON (PS3.18 Annex F), binary values above a cap dropped.

    Sequences are nested and private elements kept. A binary value longer than
    ``bulk_threshold`` bytes (pixel data, overlays, icons) becomes a ``BulkDataURI``
    naming the tag and length instead of its bytes.

    Parameters
    ----------
    ds : Dataset
    bulk_threshold : int, default 1024
        Largest binary value, in bytes, kept inline as base64.

    Returns
    -------
    str
        Compact JSON text.
    """

    def drop(elem: DataElement) -> str:
        return f"urn:dicom-etl:dropped:{elem.tag:08X}:{elem.length or len(elem.value or b'')}"

    body: dict[str, Any] = {}
    for tag in ds.keys():
        raw = ds.get_item(tag)
        vr = getattr(raw, "VR", None)
        length = getattr(raw, "length", 0) or 0
        if vr in BINARY_VRS and length > bulk_threshold:
            body[f"{int(tag):08X}"] = {"vr": vr, "BulkDataURI": drop(raw)}
            continue
        try:
            body[f"{int(tag):08X}"] = ds[tag].to_json_dict(bulk_threshold, drop)
        except Exception as exc:  # a value pydicom cannot encode stays visible
            body[f"{int(tag):08X}"] = {"vr": vr or "UN", "InvalidValue": str(exc)[:200]}
    return json.dumps(body, separators=(",", ":"), ensure_ascii=False)


def extract_dataset(ds: Dataset) -> dict[str, dict[str, Any]]:
    """One row per entity table for one parsed instance.

    Raises
    ------
    FileRejected
        ``missing_required_uid`` when the instance cannot be placed in the model.
    """
    missing = [uid for uid in REQUIRED_UIDS if not str(ds.get(uid, "") or "").strip()]
    if missing:
        raise FileRejected(Reason.MISSING_REQUIRED_UID, f"missing {', '.join(missing)}")
    dkey = device_key(ds)
    series = _row(ds, SERIES)
    series["device_key"] = dkey
    devices = _row(ds, DEVICES)
    devices["device_key"] = dkey
    image = _row(ds, IMAGES)
    ts = ds.get("file_meta", Dataset()).get("TransferSyntaxUID")
    image["TransferSyntaxUID"] = str(ts) if ts else None
    image["has_pixel_data"] = any(
        t in ds for t in ("PixelData", "FloatPixelData", "DoubleFloatPixelData")
    )
    return {
        PATIENTS.name: _row(ds, PATIENTS),
        STUDIES.name: _row(ds, STUDIES),
        SERIES.name: series,
        DEVICES.name: devices,
        IMAGES.name: image,
        INSTANCES_HEADER.name: {"SOPInstanceUID": str(ds.SOPInstanceUID)},
    }


@dataclass
class BatchFrames:
    """What extraction made of a batch: one frame per entity table."""

    frames: dict[str, pl.DataFrame]

    def __getitem__(self, name: str) -> pl.DataFrame:
        return self.frames[name]

    def counts(self) -> dict[str, int]:
        return {name: frame.height for name, frame in self.frames.items()}


def extract_batch(
    files: Sequence[SourceFile],
    lineage: Lineage,
    *,
    bulk_threshold: int = 1024,
) -> BatchFrames:
    """Extract a batch of files into one frame per entity table.

    Every file ends up either as a row of ``images`` (and of ``instances_header``) or
    as a row of ``ingest_errors`` with a reason; no file stops the batch.
    Patients, studies, series and devices are deduplicated within the batch on their
    keys; images keep one row per file so conflicting duplicates stay visible.

    Parameters
    ----------
    files : sequence of SourceFile
    lineage : Lineage
        Batch id and ingest time stamped on every row.
    bulk_threshold : int, default 1024
        See :func:`header_json`.

    Returns
    -------
    BatchFrames
    """
    rows: dict[str, list[dict[str, Any]]] = {e.name: [] for e in EXTRACTED}
    with quiet_pydicom():
        for src in sorted(files, key=lambda f: f.key):
            _extract_one(src, rows, bulk_threshold)
    return BatchFrames({e.name: _frame(e, rows[e.name], lineage) for e in EXTRACTED})


def _extract_one(
    src: SourceFile, rows: dict[str, list[dict[str, Any]]], bulk_threshold: int
) -> None:
    lineage_cols = {"source_key": src.key, "source_etag": src.etag}
    data = b""
    try:
        data = src.path.read_bytes()
        ds = read_dicom(data)
        entity_rows = extract_dataset(ds)
        entity_rows[INSTANCES_HEADER.name]["header_json"] = header_json(
            ds, bulk_threshold=bulk_threshold
        )
    except FileRejected as exc:
        error = error_row(exc.reason, exc.detail, "extract", data=data)
        rows[INGEST_ERRORS.name].append(error | lineage_cols)
        return
    except OSError as exc:
        detail = f"cannot read the file: {exc.strerror or exc}"
        rows[INGEST_ERRORS.name].append(error_row(Reason.UNREADABLE, detail, "extract") | lineage_cols)
        return
    except Exception as exc:  # a value no reader expected must not stop the batch
        detail = f"unexpected {type(exc).__name__} while reading the header"
        error = error_row(Reason.UNREADABLE, detail, "extract", data=data)
        rows[INGEST_ERRORS.name].append(error | lineage_cols)
        return
    entity_rows[IMAGES.name]["file_size"] = len(data)
    entity_rows[IMAGES.name]["content_hash"] = sha256_hex(data)
    for name, row in entity_rows.items():
        rows[name].append(row | lineage_cols)


def error_row(
    reason: Reason | str,
    detail: str,
    stage: str,
    *,
    data: bytes | None = None,
    sop_instance_uid: str | None = None,
) -> dict[str, Any]:
    """An ``ingest_errors`` row (without lineage columns) for a rejected file."""
    return {
        "SOPInstanceUID": sop_instance_uid,
        "stage": stage,
        "reason": str(reason),
        "detail": detail,
        "quarantine_key": None,
        "file_size": len(data) if data is not None else None,
        "content_hash": sha256_hex(data) if data else None,
    }


def _frame(entity: Entity, rows: Iterable[dict[str, Any]], lineage: Lineage) -> pl.DataFrame:
    schema = entity.schema
    data_schema = {k: v for k, v in schema.items() if k not in ("batch_id", "ingested_at", "ingest_date")}
    frame = pl.DataFrame(list(rows), schema=data_schema)
    frame = frame.with_columns(
        pl.lit(lineage.batch_id, pl.Utf8).alias("batch_id"),
        pl.lit(lineage.ingested_at, pl.Datetime("us", "UTC")).alias("ingested_at"),
        pl.lit(lineage.ingest_date, pl.Date).alias("ingest_date"),
    ).select(list(schema))
    if entity.name in (PATIENTS.name, STUDIES.name, SERIES.name, DEVICES.name):
        frame = frame.unique(subset=list(entity.key), keep="first", maintain_order=True)
    return frame
