"""Extraction's tasks: a staged batch of files into the lake's entity tables (and previews)."""

from __future__ import annotations

import os
from collections.abc import Mapping, Sequence
from concurrent.futures.process import BrokenProcessPool
from datetime import datetime
from pathlib import Path

import polars as pl
from prefect import task
from prefect.cache_policies import NO_CACHE
from prefect.logging import get_run_logger

from tasks.deid.export import ExportJob
from tasks.dicom.entities import DEID_EXPORTS, INGEST_ERRORS, PREVIEWS
from tasks.dicom.extract import PREVIEW_ERRORS, Lineage, PreviewJob, SourceFile, extract_batch
from tasks.errors import DeidError
from tasks.lake.files import disk_full_reported
from tasks.lake.staging import StagedBatch
from tasks.lake.storage import ObjectInfo
from tasks.lake.tables import quarantine_copy, write_tables
from tasks.pixels.preview import PreviewOptions
from tasks.pool import reset_process_pool, shared_process_pool
from tasks.retries import IO_RETRIES, BatchOutcome


@task(name="extract-batch", cache_policy=NO_CACHE, **IO_RETRIES)
def extract_staged(
    staged: StagedBatch,
    ingested_at: datetime,
    previews: PreviewOptions | None = None,
    secret: str | None = None,
    export_deid: bool = False,
    pixel_text: str = "all",
) -> BatchOutcome:
    """Extract a staged batch (files on local disk, ZIP members included) into the lake's tables.

    With ``previews`` (and the de-identification ``secret``), each image's preview is
    rendered as its file is extracted, and the previews table written too; with
    ``export_deid``, its de-identified DICOM file is written the same way.
    """
    return extract_to_lake.fn(
        staged.staging_lake, staged.batch_id, staged.files, staged.paths, ingested_at, previews=previews, secret=secret,
        hashes=staged.hashes, export_deid=export_deid, pixel_text=pixel_text,
    )


@task(name="extract-batch", cache_policy=NO_CACHE, **IO_RETRIES)
def extract_to_lake(
    lake: str,
    batch_id: str,
    objects: Sequence[ObjectInfo],
    raw_paths: Sequence[str],
    ingested_at: datetime,
    workers: int | None = None,
    previews: PreviewOptions | None = None,
    secret: str | None = None,
    hashes: Mapping[str, str] | None = None,
    export_deid: bool = False,
    pixel_text: str = "all",
) -> BatchOutcome:
    """Extract a batch into entity tables (previews, de-identified DICOM), quarantine rejected files, write Parquet.

    ``hashes`` (key -> SHA-256), where staging hashed the files already, spares hashing them again.
    """
    if export_deid and not secret:
        msg = "the de-identified DICOM export needs the de-identification secret; set DICOM_ETL_DEID_SECRET or the settings block"
        raise DeidError(msg)
    export = ExportJob(Path(lake), secret or "", pixel_text=pixel_text) if export_deid else None  # type: ignore[arg-type]
    with disk_full_reported(lake):
        return _extract(lake, batch_id, objects, raw_paths, ingested_at, workers, previews, secret, hashes or {}, export)


def _extract(
    lake: str,
    batch_id: str,
    objects: Sequence[ObjectInfo],
    raw_paths: Sequence[str],
    ingested_at: datetime,
    workers: int | None,
    previews: PreviewOptions | None,
    secret: str | None,
    hashes: Mapping[str, str],
    export: ExportJob | None = None,
) -> BatchOutcome:
    lineage = Lineage(batch_id, ingested_at)
    files = [SourceFile(p, o.key, o.etag, hashes.get(o.key)) for o, p in zip(objects, raw_paths, strict=True)]
    lake_path = Path(lake)
    job = PreviewJob(lake_path, secret or "", previews) if previews is not None else None
    workers = workers or os.cpu_count() or 1
    executor = shared_process_pool(workers)
    try:
        frames = extract_batch(files, lineage, executor=executor, parts=workers, previews=job, export=export).frames
    except BrokenProcessPool:  # a worker died (killed, out of memory): drop the pool, go on serially
        reset_process_pool()
        frames = extract_batch(files, lineage, previews=job, export=export).frames
    errors = frames[INGEST_ERRORS.name]
    if errors.height:
        raw_by_key = {f.key: f.path for f in files}
        qkeys = [
            quarantine_copy(lake_path, raw_by_key[key], key, reason)
            for key, reason in errors.select("source_key", "reason").iter_rows()
        ]
        frames[INGEST_ERRORS.name] = errors.with_columns(pl.Series("quarantine_key", qkeys, pl.Utf8))
    rendered = {PREVIEWS.name: frames.pop(PREVIEWS.name), INGEST_ERRORS.name: frames.pop(PREVIEW_ERRORS)} if job else {}
    rows = write_tables(lake_path, frames, ingest_date=lineage.ingest_date, stage="extract", batch_id=batch_id)
    error_rows = frames[INGEST_ERRORS.name].select("source_key", "reason", "detail").to_dicts()
    if rendered:
        written = write_tables(lake_path, rendered, ingest_date=lineage.ingest_date, stage="preview", batch_id=batch_id)
        rows |= {"previews": written[PREVIEWS.name], "preview_errors": written[INGEST_ERRORS.name]}
        error_rows += rendered[INGEST_ERRORS.name].select("source_key", "reason", "detail").to_dicts()
        pixel_images = []  # rendered already
    else:
        raw_by_key = {f.key: str(f.path) for f in files}
        pixel_images = [
            (raw_by_key[key], key, uid)
            for key, uid in frames["images"].filter(pl.col("has_pixel_data")).select("source_key", "SOPInstanceUID").iter_rows()
        ]
    exported = ""
    if export is not None:
        statuses = frames[DEID_EXPORTS.name]["status"]
        rows["deid_exported"] = int((statuses == "exported").sum())
        rows["deid_withheld"] = int((statuses == "withheld").sum())
        exported = f", {rows['deid_exported']} de-identified DICOM files ({rows['deid_withheld']} withheld)"
    get_run_logger().info(
        "Batch %s: %d images, %d rejected%s%s", batch_id, rows["images"], rows[INGEST_ERRORS.name],
        f", {rows['previews']} previews" if rendered else "", exported,
    )
    return BatchOutcome(batch_id=batch_id, rows=rows, errors=error_rows, pixel_images=pixel_images)
