"""Thin Prefect ``@task`` wrappers around the pure functions: retries, names, logging.

Retries apply to I/O only: ``retry_on_io`` refuses to retry a project error (a bad
input, a missing folder), so a corrupt file is never retried, nor a full disk: it does
not free itself within the backoff, so every task that writes local files reports it at
once as a ``DiskFullError`` naming the folder (``tasks.lake.files.disk_full_reported``).

No task caches (``NO_CACHE``): the lake's manifest decides what is done, some inputs hold
the de-identification secret or credentials, and Prefect's default policy would hash
every input of every task run (the objects of a batch: ~2 s of a 20,000-file run).
"""

from __future__ import annotations

import os
from collections.abc import Mapping, Sequence
from concurrent.futures.process import BrokenProcessPool
from dataclasses import dataclass, field
from datetime import datetime
from pathlib import Path

import polars as pl
from prefect import task
from prefect.cache_policies import NO_CACHE
from prefect.logging import get_run_logger

from tasks.dicom.entities import INGEST_ERRORS, PREVIEWS
from tasks.errors import CompressionError, DicomEtlError, SnowflakeUnreachable
from tasks.dicom.extract import PREVIEW_ERRORS, Lineage, PreviewJob, SourceFile, extract_batch
from tasks.lake.files import disk_full_reported, is_disk_full
from tasks.lake.tables import ensure_table_schemas, quarantine_copy, table_path, write_tables
from tasks.lake.manifest import processed_versions, read_local_manifest
from tasks.pool import reset_process_pool, shared_process_pool
from tasks.pixels.preview import PreviewOptions, render_batch
from tasks.lake.staging import StagedBatch, prepare_s3_lake, publish_batch, read_s3_manifest, stage_batch, staging_turn
from tasks.pixels.transcode import ARCHIVES_SCHEMA, ARCHIVES_TABLE, archive_batch, storage_saved
from tasks.lake.storage import ObjectInfo, list_local_objects
from tasks.lake.s3 import S3Access, is_s3_url, is_transient, list_s3_objects, make_s3_client, parse_s3_url


def _failure(state) -> BaseException | None:  # noqa: ANN001 - a Prefect State
    """The exception a failed task run raised (``None`` if it raised none)."""
    try:
        state.result()
    except Exception as exc:  # noqa: BLE001 - handed to the retry conditions below
        return exc
    return None


def _is_io_blip(exc: BaseException | None) -> bool:
    """An OS-level I/O failure (TimeoutError, ConnectionError...) that is not ours nor a full disk."""
    return isinstance(exc, OSError) and not isinstance(exc, DicomEtlError) and not is_disk_full(exc)


def retry_on_io(task, task_run, state) -> bool:  # noqa: ANN001 - Prefect's hook signature
    """Retry transient I/O failures only, never a project error (bad input or settings) nor a full disk."""
    return _is_io_blip(_failure(state))


IO_RETRIES = {"retries": 3, "retry_delay_seconds": [1, 4, 16], "retry_jitter_factor": 0.5, "retry_condition_fn": retry_on_io}


@dataclass
class BatchOutcome:
    """What one batch produced; small, so it travels between tasks cheaply."""

    batch_id: str
    rows: dict[str, int] = field(default_factory=dict)
    errors: list[dict] = field(default_factory=list)
    pixel_images: list[tuple[str, str, str]] = field(default_factory=list)


def retry_on_transient(task, task_run, state) -> bool:  # noqa: ANN001 - Prefect's hook signature
    """Retry S3 throttling, 5xx, timeouts and resets only; never a missing object, a denial or bad input."""
    exc = _failure(state)
    return exc is not None and not isinstance(exc, DicomEtlError) and is_transient(exc)


def retry_on_snowflake(task, task_run, state) -> bool:  # noqa: ANN001 - Prefect's hook signature
    """Retry a lost Snowflake connection (and local I/O blips); never a SQL error or a rejected file."""
    exc = _failure(state)
    return isinstance(exc, SnowflakeUnreachable) or _is_io_blip(exc)


#: botocore already retries each request (standard mode, 3 attempts); these are whole-task tries on top.
S3_RETRIES = {"retries": 3, "retry_delay_seconds": [1, 4, 16], "retry_jitter_factor": 0.5, "retry_condition_fn": retry_on_transient}
#: The connector already retries each request for up to ``network_timeout``; a task retry adds a
#: new session (a fresh login) after one was lost, twice at most.
SNOWFLAKE_RETRIES = {"retries": 2, "retry_delay_seconds": [2, 8], "retry_jitter_factor": 0.5, "retry_condition_fn": retry_on_snowflake}


@task(name="list-source", cache_policy=NO_CACHE, **S3_RETRIES)
def list_source(source: str, *, access: S3Access | None = None, since: datetime | None = None) -> list[ObjectInfo]:
    """List every object at the source (a folder, or an S3 prefix since an optional watermark)."""
    if is_s3_url(source):
        objects = list_s3_objects(make_s3_client(access or S3Access()), parse_s3_url(source), since=since)
    else:
        objects = list_local_objects(Path(source))
    get_run_logger().info("Listed %d objects at the source", len(objects))
    return objects


@task(name="read-manifest", cache_policy=NO_CACHE, **S3_RETRIES)
def read_manifest(lake: str, *, access: S3Access | None = None) -> set[tuple[str, str]]:
    """The (key, ETag) pairs the lake's manifest says were processed."""
    frame = read_s3_manifest(lake, access=access or S3Access()) if is_s3_url(lake) else read_local_manifest(Path(lake))
    return processed_versions(frame)


@task(name="prepare-lake", cache_policy=NO_CACHE, **S3_RETRIES)
def prepare_lake(lake: str, scratch: str, *, access: S3Access | None = None) -> None:
    """Give every raw table a 0-row schema file in the lake (local or S3)."""
    with disk_full_reported(scratch, lake):
        if is_s3_url(lake):
            prepare_s3_lake(lake, scratch=Path(scratch), access=access or S3Access())
        else:
            ensure_table_schemas(Path(lake))


@task(name="stage-batch", cache_policy=NO_CACHE, **S3_RETRIES)
def stage_to_scratch(
    source: str, lake: str, objects: Sequence[ObjectInfo], *, batch_id: str, scratch: str,
    access: S3Access | None, ingested_at: datetime,
) -> StagedBatch:
    """Copy a batch to the raw zone (server-side on S3), download it, expand its ZIPs."""
    with staging_turn(source), disk_full_reported(scratch, lake):
        staged = stage_batch(
            source, lake, objects, batch_id=batch_id, scratch=Path(scratch), access=access or S3Access(), ingested_at=ingested_at
        )
    get_run_logger().info(
        "Batch %s: %d objects -> %d files to extract, %d rejected before extraction",
        batch_id, len(objects), len(staged.files), len(staged.errors),
    )
    return staged


@task(name="publish-batch", cache_policy=NO_CACHE, **S3_RETRIES)
def publish_to_lake(
    lake: str, staged: StagedBatch, objects: Sequence[ObjectInfo], outcomes: Sequence[BatchOutcome], *,
    scratch: str, access: S3Access | None, processed_at: datetime,
) -> BatchOutcome:
    """Upload a batch's tables, previews and quarantine copies (S3 lake) and record it in the manifest."""
    quarantined = [e["source_key"] for o in outcomes for e in o.errors if e["reason"] != "pixel_decode"]
    with disk_full_reported(scratch, lake):
        recorded = publish_batch(
            lake, staged, objects, quarantined=quarantined, scratch=Path(scratch), access=access or S3Access(),
            processed_at=processed_at,
        )
    return BatchOutcome(
        batch_id=staged.batch_id,
        rows={"manifest": recorded},
        errors=[{k: e[k] for k in ("source_key", "reason", "detail")} for e in staged.errors],
    )


@task(name="extract-batch", cache_policy=NO_CACHE, **IO_RETRIES)
def extract_staged(
    staged: StagedBatch, ingested_at: datetime, previews: PreviewOptions | None = None, secret: str | None = None
) -> BatchOutcome:
    """Extract a staged batch (files on local disk, ZIP members included) into the lake's tables.

    With ``previews`` (and the de-identification ``secret``), each image's preview is
    rendered as its file is extracted, and the previews table written too.
    """
    return extract_to_lake.fn(
        staged.staging_lake, staged.batch_id, staged.files, staged.paths, ingested_at, previews=previews, secret=secret,
        hashes=staged.hashes,
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
) -> BatchOutcome:
    """Extract a batch into entity tables (and previews), quarantine rejected files, write Parquet.

    ``hashes`` (key -> SHA-256), where staging hashed the files already, spares hashing them again.
    """
    with disk_full_reported(lake):
        return _extract(lake, batch_id, objects, raw_paths, ingested_at, workers, previews, secret, hashes or {})


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
) -> BatchOutcome:
    lineage = Lineage(batch_id, ingested_at)
    files = [SourceFile(p, o.key, o.etag, hashes.get(o.key)) for o, p in zip(objects, raw_paths, strict=True)]
    lake_path = Path(lake)
    job = PreviewJob(lake_path, secret or "", previews) if previews is not None else None
    workers = workers or os.cpu_count() or 1
    executor = shared_process_pool(workers)
    try:
        frames = extract_batch(files, lineage, executor=executor, parts=workers, previews=job).frames
    except BrokenProcessPool:  # a worker died (killed, out of memory): drop the pool, go on serially
        reset_process_pool()
        frames = extract_batch(files, lineage, previews=job).frames
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
    get_run_logger().info(
        "Batch %s: %d images, %d rejected%s", batch_id, rows["images"], rows[INGEST_ERRORS.name],
        f", {rows['previews']} previews" if rendered else "",
    )
    return BatchOutcome(batch_id=batch_id, rows=rows, errors=error_rows, pixel_images=pixel_images)


def _on_pool(fn, workers: int):  # noqa: ANN001, ANN202 - fn(executor) -> result
    """Run ``fn`` on the shared pool; if a worker died (out of memory), once more in-thread."""
    try:
        return fn(shared_process_pool(workers))
    except BrokenProcessPool:
        reset_process_pool()
        get_run_logger().warning("A preview worker process died; rendering this batch in-process")
        return fn(None)


@task(name="render-previews", cache_policy=NO_CACHE, **IO_RETRIES)
def render_previews(
    lake: str,
    outcome: BatchOutcome,
    ingested_at: datetime,
    secret: str,
    max_size: int = 512,
    quality: int = 85,
    frames: str = "middle",
    transcode: bool = False,
    workers: int | None = None,
) -> BatchOutcome:
    """Render the preview JPEGs of a batch (and optionally archive copies), write their tables."""
    lineage = Lineage(outcome.batch_id, ingested_at)
    images = [(Path(p), k, u) for p, k, u in outcome.pixel_images]
    lake_path = Path(lake)
    n_workers = workers if workers is not None else (os.cpu_count() or 1)
    options = PreviewOptions(max_size=max_size, quality=quality, frames=frames)  # type: ignore[arg-type]
    with disk_full_reported(lake):  # previews and archive copies are written by the pool's workers
        previews, errors = _on_pool(
            lambda ex: render_batch(lake_path, images, secret=secret, options=options, executor=ex), n_workers
        )
        extra = {"source_etag": None, "batch_id": lineage.batch_id, "ingested_at": lineage.ingested_at, "ingest_date": lineage.ingest_date}
        for err in errors:
            err["quarantine_key"] = None  # metadata rows are kept; the raw copy stays in place
            err.update(file_size=None, content_hash=None)
        frames_out = {
            PREVIEWS.name: pl.DataFrame([p | extra for p in previews], schema=PREVIEWS.schema),
            INGEST_ERRORS.name: pl.DataFrame([e | extra for e in errors], schema=INGEST_ERRORS.schema),
        }
        archived = 0
        if transcode:
            archives = _on_pool(lambda ex: archive_batch(lake_path, images, secret=secret, executor=ex), n_workers)
            frames_out[ARCHIVES_TABLE] = pl.DataFrame([a | extra for a in archives], schema=ARCHIVES_SCHEMA)
            before, after = storage_saved(archives)
            archived = sum(a["status"] == "archived" for a in archives)
            get_run_logger().info(
                "Batch %s: %d of %d images archived losslessly, %.1f MB -> %.1f MB",
                outcome.batch_id, archived, len(archives), before / 1e6, after / 1e6,
            )
        rows = write_tables(lake_path, frames_out, ingest_date=lineage.ingest_date, stage="preview", batch_id=outcome.batch_id)
    counts = {"previews": rows[PREVIEWS.name], "preview_errors": rows[INGEST_ERRORS.name]}
    if transcode:
        counts["archived"] = archived
    return BatchOutcome(
        batch_id=outcome.batch_id,
        rows=counts,
        errors=[{k: e[k] for k in ("source_key", "reason", "detail")} for e in errors],
    )


@task(name="compress-remote", cache_policy=NO_CACHE)
def compress_remote(
    deployment: str,
    lake: str,
    outcome: BatchOutcome,
    ingested_at: datetime,
    settings_block: str | None = None,
    transcode: bool = False,
) -> BatchOutcome:
    """Run the compress-dicom deployment on one batch, wait for it, return what it produced.

    Only source keys and UIDs travel; the remote run resolves the secret from
    ``settings_block`` (or its own environment).
    """
    from prefect.deployments import run_deployment

    parameters = {
        "lake": lake,
        "batch_id": outcome.batch_id,
        "images": [[key, uid] for _, key, uid in outcome.pixel_images],
        "ingested_at": ingested_at.isoformat(),
        "settings_block": settings_block,
        "transcode": transcode,
    }
    run = run_deployment(deployment, parameters=parameters, timeout=None)
    state = run.state
    if state is None or not state.is_completed():
        msg = (
            f"compression run {run.name!r} of deployment {deployment!r} ended "
            f"{state.name if state else 'without a state'}; see that flow run's logs, "
            "and check a worker is polling its work pool"
        )
        raise CompressionError(msg)
    try:
        result = state.result()
    except Exception:  # noqa: BLE001 - result storage not shared with that worker: read the lake
        get_run_logger().warning("Result of %s not readable here; counting its rows in the lake", run.name)
        result = _compressed_rows(Path(lake), outcome.batch_id, ingested_at)
    return BatchOutcome(batch_id=outcome.batch_id, rows=result["rows"], errors=result["errors"])


def _compressed_rows(lake: Path, batch: str, ingested_at: datetime) -> dict:
    """What a compress-dicom run wrote for a batch, read back from the lake's tables."""
    date = Lineage(batch, ingested_at).ingest_date
    previews = pl.read_parquet(table_path(lake, PREVIEWS.name, date, "preview", batch))
    errors = pl.read_parquet(table_path(lake, INGEST_ERRORS.name, date, "preview", batch))
    return {
        "rows": {"previews": previews.height, "preview_errors": errors.height},
        "errors": errors.select("source_key", "reason", "detail").to_dicts(),
    }
# --- warehouse (issue 6): pseudonym map and Snowflake load, before dbt runs ----------------


@task(name="write-pseudonym-map", cache_policy=NO_CACHE, **IO_RETRIES)
def write_pseudonym_map(lake: str, warehouse: str, secret: str) -> int:
    """Compute the pseudonym map of the lake and write it beside the DuckDB warehouse."""
    from tasks.warehouse.pseudonyms import collect_identifiers, pseudonym_table, read_rules, write_pseudonyms_duckdb

    from tasks.warehouse.dbt import deid_database

    table = pseudonym_table(collect_identifiers(lake, read_rules()), secret)
    with disk_full_reported(Path(warehouse).parent):
        rows = write_pseudonyms_duckdb(deid_database(warehouse), table)
    get_run_logger().info("Pseudonym map: %d identifiers", rows)
    return rows


@task(name="load-snowflake", cache_policy=NO_CACHE, **SNOWFLAKE_RETRIES)
def load_snowflake(connector, lake: str, secret: str, connect_kwargs: dict) -> dict[str, int]:  # noqa: ANN001 - a SnowflakeConnector block
    """Load the lake's raw tables and the pseudonym map into Snowflake (PUT + COPY INTO)."""
    from tasks.warehouse.pseudonyms import collect_identifiers, pseudonym_table, read_rules
    from tasks.warehouse.snowflake import load_raw_tables, snowflake_session, write_pseudonyms_snowflake

    table = pseudonym_table(collect_identifiers(lake, read_rules()), secret)
    with snowflake_session(connector, connect_kwargs) as connection:
        loaded = load_raw_tables(connection, Path(lake))
        loaded["deid_pseudonyms"] = write_pseudonyms_snowflake(connection, table)
    get_run_logger().info("Loaded into Snowflake: %s", loaded)
    return loaded
