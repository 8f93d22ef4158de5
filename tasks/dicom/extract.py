"""Read DICOM files and turn a batch of them into one polars frame per entity table.

Pure functions: they take paths and lineage and return frames; nothing here imports
Prefect or reads the environment.
"""

from __future__ import annotations
from collections.abc import Sequence
from concurrent.futures import Executor
from dataclasses import dataclass, field
from datetime import UTC, date, datetime
from functools import lru_cache
from pathlib import Path
from typing import Any

import polars as pl
import pyarrow as pa

from pydicom.dataset import Dataset

from tasks.deid import pseudonym
from tasks.dicom.entities import (
    DEID_EXPORTS,
    DEVICES,
    EXTRACTED,
    IMAGES,
    INGEST_ERRORS,
    PATIENTS,
    PREVIEWS,
    SERIES,
    STUDIES,
    Entity,
    ingest_error,
)
from tasks.errors import FileRejected, Reason
from tasks.deid.export import ExportJob, export_rows, settle_exports
from tasks.deid.header import patient_key
from tasks.dicom.instance import content_digest, extract_dataset, header_json, load_file, quiet_pydicom, read_dicom
from tasks.pixels.preview import OCR_GROUP, PreviewOptions, render_datasets

__all__ = [
    "PREVIEW_ERRORS",
    "BatchFrames",
    "ExportJob",
    "Lineage",
    "PreviewJob",
    "SourceFile",
    "duplicate_conflicts",
    "extract_batch",
    "extract_dataset",
    "extract_rows",
    "header_json",
    "quiet_pydicom",
    "read_dicom",
]

#: Columns stamped on a whole batch at once, after extraction.
BATCH_COLUMNS = frozenset({"batch_id", "ingested_at", "ingest_date"})
#: The frame of ``ingest_errors`` rows (stage ``preview``) when extraction renders previews.
PREVIEW_ERRORS = "preview_errors"


@dataclass(frozen=True)
class PreviewJob:
    """Render previews during extraction: into ``lake``, named by pseudonyms under ``secret``."""

    lake: Path
    secret: str = field(repr=False)
    options: PreviewOptions = field(default_factory=PreviewOptions)


@dataclass(frozen=True)
class SourceFile:
    """One file to extract: where it is now and where it came from.

    Parameters
    ----------
    path : str or Path
        Local path of the bytes (the raw-zone copy or a scratch download); a batch passes
        str, since a ``Path`` costs ~25 us to build, as much as the rest of a file's staging.
    key : str
        The object's key at the source, relative to the source root (lineage).
    etag : str
        The source's version tag of the object (S3 ETag, or size+mtime for folders).
    sha256 : str, optional
        SHA-256 of the bytes at ``path``, when staging computed it already.
    """

    path: str | Path
    key: str
    etag: str = ""
    sha256: str | None = None


@dataclass
class Lineage:
    """Lineage columns shared by every row of a batch."""

    batch_id: str
    ingested_at: datetime = field(default_factory=lambda: datetime.now(UTC))

    @property
    def ingest_date(self) -> date:
        """The partition date of the batch (UTC)."""
        return self.ingested_at.date()


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
    executor: Executor | None = None,
    parts: int = 1,
    previews: PreviewJob | None = None,
    export: ExportJob | None = None,
) -> BatchFrames:
    """Extract a batch of files into one frame per entity table.

    Every file ends up either as a row of ``images`` (and of ``instances_header``) or
    as a row of ``ingest_errors`` with a reason; no file stops the batch.
    Patients, studies, series and devices are deduplicated within the batch on their
    keys; images keep one row per file, so conflicting duplicates (same SOPInstanceUID,
    different content) stay visible, and each later copy also gets an
    ``ingest_errors`` row with reason ``duplicate_conflict``.
    The result depends only on the files (not on their order or on ``parts``).

    Parameters
    ----------
    files : sequence of SourceFile
    lineage : Lineage
        Batch id and ingest time stamped on every row.
    bulk_threshold : int, default 1024
        See :func:`header_json`.
    executor : concurrent.futures.Executor, optional
        A process pool to spread the batch over (``spawn``/``forkserver`` context);
        ``None`` extracts in this process.
    parts : int, default 1
        How many sub-batches to give the executor (usually its worker count).
    previews : PreviewJob, optional
        Also render each image's preview while its file is in memory and parsed (one
        read, one parse per file); adds the frames ``previews`` and ``preview_errors``
        (``ingest_errors`` rows of stage ``preview``).
    export : ExportJob, optional
        Also write each image's de-identified DICOM file while its file is in memory and
        parsed; adds the frame ``deid_exports`` (exported or withheld, with a reason).

    Returns
    -------
    BatchFrames
    """
    ordered = sorted(files, key=lambda f: f.key)
    if executor is None or parts <= 1 or len(ordered) < 2 * parts:
        pieces = [extract_rows(ordered, bulk_threshold=bulk_threshold, previews=previews, export=export)]
    else:
        size = -(-len(ordered) // parts)
        chunks = [ordered[i : i + size] for i in range(0, len(ordered), size)]
        futures = [
            executor.submit(extract_rows, chunk, bulk_threshold=bulk_threshold, previews=previews, export=export)
            for chunk in chunks
        ]
        pieces = [f.result() for f in futures]
    frames = {name: pl.concat([p[name] for p in pieces], how="vertical") for name in pieces[0]}
    conflicts = duplicate_conflicts(frames[IMAGES.name])
    if conflicts.height:
        frames[INGEST_ERRORS.name] = pl.concat([frames[INGEST_ERRORS.name], conflicts], how="vertical")
    out = {e.name: _frame(e, frames[e.name], lineage) for e in EXTRACTED}
    if previews is not None:
        out[PREVIEWS.name] = _frame(PREVIEWS, frames[PREVIEWS.name], lineage)
        out[PREVIEW_ERRORS] = _frame(INGEST_ERRORS, frames[PREVIEW_ERRORS], lineage)
    if export is not None:
        settled = settle_exports(frames[DEID_EXPORTS.name].iter_rows(named=True), export.lake)
        exports = pl.DataFrame(settled, schema=_data_schema(DEID_EXPORTS))
        out[DEID_EXPORTS.name] = _frame(DEID_EXPORTS, exports, lineage)
    return BatchFrames(out)


def extract_rows(
    files: Sequence[SourceFile],
    *,
    bulk_threshold: int = 1024,
    previews: PreviewJob | None = None,
    export: ExportJob | None = None,
) -> dict[str, pl.DataFrame]:
    """Extract files into one frame per table, in the given order, before batch-level steps.

    The unit of work of :func:`extract_batch` (also run in worker processes): no
    lineage columns, no deduplication, no duplicate detection.

    Parameters
    ----------
    files : sequence of SourceFile
    bulk_threshold : int, default 1024
    previews, export : PreviewJob, ExportJob, optional
        See :func:`extract_batch`.

    Returns
    -------
    dict of str to polars.DataFrame
    """
    tables = {e.name: e for e in EXTRACTED}
    if previews is not None:
        tables |= {PREVIEWS.name: PREVIEWS, PREVIEW_ERRORS: INGEST_ERRORS}
    if export is not None:
        tables |= {DEID_EXPORTS.name: DEID_EXPORTS}
    rows: dict[str, list[dict[str, Any]]] = {name: [] for name in tables}
    # images of a group share their OCR runs: (dataset, images row, patients row)
    pending: list[tuple[Dataset, dict[str, Any], dict[str, Any]]] = []
    with quiet_pydicom():
        for src in files:
            ds = _extract_one(src, rows, bulk_threshold)
            if ds is not None and (previews or export) and rows[IMAGES.name][-1]["has_pixel_data"]:
                pending.append((ds, rows[IMAGES.name][-1], rows[PATIENTS.name][-1]))
                if len(pending) >= OCR_GROUP:
                    _pixel_group(pending, rows, previews, export)
        if pending:
            _pixel_group(pending, rows, previews, export)
    # through Arrow: polars builds list columns value by value, Arrow in one C++ pass
    return {name: pl.from_arrow(pa.Table.from_pylist(rows[name], schema=_arrow_schema(e))) for name, e in tables.items()}


def _pixel_group(
    pending: list[tuple[Dataset, dict[str, Any], dict[str, Any]]],
    rows: dict[str, list[dict[str, Any]]],
    previews: PreviewJob | None,
    export: ExportJob | None,
) -> None:
    """Previews and de-identified files of parsed images, then empty ``pending``."""
    if previews is not None:
        _preview_group([(ds, image) for ds, image, _ in pending], rows, previews)
    if export is not None:
        _export_group(pending, rows, export)
    pending.clear()


def _preview_group(pending: list[tuple[Dataset, dict[str, Any]]], rows: dict[str, list[dict[str, Any]]], job: PreviewJob) -> None:
    """Render the previews of parsed images (``(dataset, images row)``)."""
    items = [
        (ds, image["source_key"], image["SOPInstanceUID"], pseudonym(image["SOPInstanceUID"], job.secret), image)
        for ds, image in pending
    ]
    for (_, image), (preview, error) in zip(pending, render_datasets(job.lake, items, job.options)):
        lineage_cols = {"source_etag": image["source_etag"]}
        if preview is not None:
            rows[PREVIEWS.name].append(preview | lineage_cols)
        else:
            rows[PREVIEW_ERRORS].append(error | lineage_cols)


def _export_group(
    pending: list[tuple[Dataset, dict[str, Any], dict[str, Any]]], rows: dict[str, list[dict[str, Any]]], job: ExportJob
) -> None:
    """Write the de-identified files of parsed images (their at-risk pixels cleaned together)."""
    items = [
        # the UID and patient key as the raw tables hold them: the warehouse's map is built from those
        (ds, image["SOPInstanceUID"], image["source_key"], patient_key(patient["PatientID"], patient["IssuerOfPatientID"]))
        for ds, image, patient in pending
    ]
    for (_, image, _), row in zip(pending, export_rows(items, job), strict=True):
        rows[DEID_EXPORTS.name].append(row | {"source_etag": image["source_etag"]})


def _data_schema(entity: Entity) -> dict[str, pl.DataType]:
    return {k: v for k, v in entity.schema.items() if k not in BATCH_COLUMNS}


@lru_cache(maxsize=None)
def _arrow_schema(entity: Entity) -> pa.Schema:
    return pl.DataFrame(schema=_data_schema(entity)).to_arrow().schema


def _extract_one(src: SourceFile, rows: dict[str, list[dict[str, Any]]], bulk_threshold: int) -> Dataset | None:
    """Append the file's rows (or its error row); return the parsed instance, or None if rejected."""
    lineage_cols = {"source_key": src.key, "source_etag": src.etag}
    data: bytes | memoryview = b""
    try:
        data = load_file(src.path)  # a large file is mapped, not read
        ds = read_dicom(data, src.path)
        entity_rows = extract_dataset(ds, bulk_threshold=bulk_threshold)
    except OSError as exc:
        detail = f"cannot read the file: {exc.strerror or exc}"
        rows[INGEST_ERRORS.name].append(ingest_error(src.key, Reason.UNREADABLE, detail, stage="extract") | lineage_cols)
        return None
    except Exception as exc:  # noqa: BLE001 - a value no reader expected must not stop the batch
        if isinstance(exc, FileRejected):
            reason, detail = exc.reason, exc.detail
        elif isinstance(exc, RecursionError):
            reason, detail = Reason.TOO_DEEP, "sequences are nested too deeply to read"
        else:
            reason, detail = Reason.UNREADABLE, f"unexpected {type(exc).__name__} while reading the header"
        error = ingest_error(src.key, reason, detail, stage="extract", **_content(data, src.path))
        rows[INGEST_ERRORS.name].append(error | lineage_cols)
        return None
    entity_rows[IMAGES.name].update(_content(data, src.path, src.sha256))
    for name, row in entity_rows.items():
        row.update(lineage_cols)
        rows[name].append(row)
    return ds


def _content(data: bytes | memoryview, path: Path, sha256: str | None = None) -> dict[str, Any]:
    """``file_size`` and ``content_hash`` of a file read (or mapped) for extraction."""
    if not len(data):
        return {"file_size": 0, "content_hash": None}
    return {"file_size": len(data), "content_hash": sha256 or content_digest(data, path)}


def duplicate_conflicts(images: pl.DataFrame) -> pl.DataFrame:
    """``ingest_errors`` rows for files that repeat a SOPInstanceUID with other content.

    Within ``images`` (ordered by source key), the first file of a SOPInstanceUID is the
    reference; every later file with a different ``content_hash`` gets a
    ``duplicate_conflict`` row. Identical copies are not conflicts.

    Parameters
    ----------
    images : polars.DataFrame
        Rows of the ``images`` table, without batch lineage.

    Returns
    -------
    polars.DataFrame
        Rows of ``ingest_errors`` (without batch lineage), possibly empty.
    """
    cols = ("SOPInstanceUID", "content_hash", "file_size", "source_key", "source_etag")
    first: dict[str, str] = {}
    out: list[dict[str, Any]] = []
    for uid, chash, size, key, etag in images.select(cols).iter_rows():
        reference = first.setdefault(uid, chash)
        if chash == reference:
            continue
        detail = (
            "another file of the batch has the same SOPInstanceUID with different content "
            f"(content_hash {reference[:16]}...); both are kept in images"
        )
        row = ingest_error(
            key, Reason.DUPLICATE_CONFLICT, detail, stage="extract", sop_instance_uid=uid, file_size=size, content_hash=chash
        )
        out.append(row | {"source_etag": etag})
    return pl.DataFrame(out, schema=_data_schema(INGEST_ERRORS))


def _frame(entity: Entity, frame: pl.DataFrame, lineage: Lineage) -> pl.DataFrame:
    frame = frame.with_columns(
        pl.lit(lineage.batch_id, pl.Utf8).alias("batch_id"),
        pl.lit(lineage.ingested_at, pl.Datetime("us", "UTC")).alias("ingested_at"),
        pl.lit(lineage.ingest_date, pl.Date).alias("ingest_date"),
    ).select(list(entity.schema))
    if entity.name in (PATIENTS.name, STUDIES.name, SERIES.name, DEVICES.name):
        frame = frame.unique(subset=list(entity.key), keep="first", maintain_order=True)
    return frame
