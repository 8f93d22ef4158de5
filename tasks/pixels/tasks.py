"""The pixel tasks: preview JPEGs and archive copies of a batch, here or on a remote deployment."""

from __future__ import annotations

import os
from concurrent.futures.process import BrokenProcessPool
from datetime import datetime
from pathlib import Path

import polars as pl
from prefect import task
from prefect.cache_policies import NO_CACHE
from prefect.logging import get_run_logger

from tasks.dicom.entities import ARCHIVES, INGEST_ERRORS, PREVIEWS
from tasks.dicom.extract import Lineage
from tasks.errors import CompressionError
from tasks.lake.files import disk_full_reported
from tasks.lake.tables import table_path, write_tables
from tasks.pixels.preview import PreviewOptions, render_batch
from tasks.pixels.transcode import archive_batch, storage_saved
from tasks.pool import reset_process_pool, shared_process_pool
from tasks.retries import IO_RETRIES, BatchOutcome


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
    pixel_text: str = "all",
) -> BatchOutcome:
    """Render the preview JPEGs of a batch (and optionally archive copies), write their tables."""
    lineage = Lineage(outcome.batch_id, ingested_at)
    images = [(Path(p), k, u) for p, k, u in outcome.pixel_images]
    lake_path = Path(lake)
    n_workers = workers if workers is not None else (os.cpu_count() or 1)
    options = PreviewOptions(max_size=max_size, quality=quality, frames=frames, pixel_text=pixel_text)  # type: ignore[arg-type]
    with disk_full_reported(lake):  # previews and archive copies are written by the pool's workers
        previews, errors = _on_pool(
            lambda ex: render_batch(lake_path, images, secret=secret, options=options, executor=ex), n_workers
        )
        extra = {"source_etag": None, "batch_id": lineage.batch_id, "ingested_at": lineage.ingested_at, "ingest_date": lineage.ingest_date}
        frames_out = {
            PREVIEWS.name: pl.DataFrame([p | extra for p in previews], schema=PREVIEWS.schema),
            INGEST_ERRORS.name: pl.DataFrame([e | extra for e in errors], schema=INGEST_ERRORS.schema),
        }
        archived = 0
        if transcode:
            archives = _on_pool(lambda ex: archive_batch(lake_path, images, secret=secret, executor=ex), n_workers)
            frames_out[ARCHIVES.name] = pl.DataFrame([a | extra for a in archives], schema=ARCHIVES.schema)
            before, after = storage_saved(archives)
            archived = sum(a["status"] == "archived" for a in archives)
            get_run_logger().info(
                "Batch %s: %d of %d images archived losslessly, %.1f MB -> %.1f MB",
                outcome.batch_id, archived, len(archives), before / 1e6, after / 1e6,
            )
        rows = write_tables(lake_path, frames_out, ingest_date=lineage.ingest_date, stage="preview", batch_id=outcome.batch_id)
    counts = {"previews": rows[PREVIEWS.name], "preview_errors": rows[INGEST_ERRORS.name]}
    if transcode:  # named after its table, as the other counts: rows of archives (the log says how many were archived)
        counts[ARCHIVES.name] = rows[ARCHIVES.name]
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
    pixel_text: str = "all",
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
        "pixel_text": pixel_text,
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
