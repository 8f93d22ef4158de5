"""Thin Prefect ``@task`` wrappers around the pure functions: retries, names, logging.

Retries apply to I/O only: ``retry_on_io`` refuses to retry a project error (a bad
input, a missing folder), so a corrupt file is never retried.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field
from datetime import datetime
from pathlib import Path

import polars as pl
from prefect import task
from prefect.cache_policies import NO_CACHE
from prefect.logging import get_run_logger

from tasks.entities import INGEST_ERRORS, PREVIEWS
from tasks.errors import DicomEtlError
from tasks.extract import Lineage, SourceFile, extract_batch
from tasks.lake import quarantine_copy, write_tables
from tasks.preview import render_batch
from tasks.storage import RAW_ZONE, ObjectInfo, copy_local_objects, list_local_objects


def retry_on_io(task, task_run, state) -> bool:  # noqa: ANN001 - Prefect's hook signature
    """Retry transient I/O failures only, never a project error (bad input or settings)."""
    try:
        state.result()
    except DicomEtlError:
        return False
    except (OSError, TimeoutError, ConnectionError):
        return True
    except Exception:
        return False
    return False


IO_RETRIES = {"retries": 3, "retry_delay_seconds": [1, 4, 16], "retry_jitter_factor": 0.5, "retry_condition_fn": retry_on_io}


@dataclass
class BatchOutcome:
    """What one batch produced; small, so it travels between tasks cheaply."""

    batch_id: str
    rows: dict[str, int] = field(default_factory=dict)
    errors: list[dict] = field(default_factory=list)
    pixel_images: list[tuple[str, str, str]] = field(default_factory=list)


@task(name="list-source", **IO_RETRIES)
def list_source(source: str) -> list[ObjectInfo]:
    """List every object at the source."""
    objects = list_local_objects(Path(source))
    get_run_logger().info("Listed %d objects at the source", len(objects))
    return objects


@task(name="copy-to-raw", **IO_RETRIES)
def copy_to_raw(source: str, lake: str, objects: Sequence[ObjectInfo]) -> list[str]:
    """Copy a batch of source objects into the lake's raw zone."""
    paths = copy_local_objects(Path(source), Path(lake) / RAW_ZONE, objects)
    return [str(p) for p in paths]


@task(name="extract-batch", **IO_RETRIES)
def extract_to_lake(
    lake: str, batch_id: str, objects: Sequence[ObjectInfo], raw_paths: Sequence[str], ingested_at: datetime
) -> BatchOutcome:
    """Extract a batch into entity tables, quarantine rejected files, write Parquet."""
    lineage = Lineage(batch_id, ingested_at)
    files = [SourceFile(Path(p), o.key, o.etag) for o, p in zip(objects, raw_paths, strict=True)]
    frames = extract_batch(files, lineage).frames
    lake_path = Path(lake)
    errors = frames[INGEST_ERRORS.name]
    if errors.height:
        raw_by_key = {f.key: f.path for f in files}
        qkeys = [
            quarantine_copy(lake_path, raw_by_key[key], key, reason)
            for key, reason in errors.select("source_key", "reason").iter_rows()
        ]
        frames[INGEST_ERRORS.name] = errors.with_columns(pl.Series("quarantine_key", qkeys, pl.Utf8))
    rows = write_tables(lake_path, frames, ingest_date=lineage.ingest_date, stage="extract", batch_id=batch_id)
    raw_by_key = {f.key: str(f.path) for f in files}
    pixel_images = [
        (raw_by_key[key], key, uid)
        for key, uid in frames["images"].filter(pl.col("has_pixel_data")).select("source_key", "SOPInstanceUID").iter_rows()
    ]
    get_run_logger().info(
        "Batch %s: %d images, %d rejected", batch_id, rows["images"], rows[INGEST_ERRORS.name]
    )
    return BatchOutcome(
        batch_id=batch_id,
        rows=rows,
        errors=frames[INGEST_ERRORS.name].select("source_key", "reason", "detail").to_dicts(),
        pixel_images=pixel_images,
    )


@task(name="render-previews", **IO_RETRIES)
def render_previews(
    lake: str, outcome: BatchOutcome, ingested_at: datetime, secret: str, max_size: int = 512, quality: int = 85
) -> BatchOutcome:
    """Render the preview JPEGs of a batch and write the previews table."""
    lineage = Lineage(outcome.batch_id, ingested_at)
    images = [(Path(p), k, u) for p, k, u in outcome.pixel_images]
    previews, errors = render_batch(Path(lake), images, secret=secret, max_size=max_size, quality=quality)
    lake_path = Path(lake)
    extra = {"source_etag": None, "batch_id": lineage.batch_id, "ingested_at": lineage.ingested_at, "ingest_date": lineage.ingest_date}
    for err in errors:
        err["quarantine_key"] = None  # metadata rows are kept; the raw copy stays in place
        err.update(file_size=None, content_hash=None)
    frames = {
        PREVIEWS.name: pl.DataFrame([p | extra for p in previews], schema=PREVIEWS.schema),
        INGEST_ERRORS.name: pl.DataFrame([e | extra for e in errors], schema=INGEST_ERRORS.schema),
    }
    rows = write_tables(lake_path, frames, ingest_date=lineage.ingest_date, stage="preview", batch_id=outcome.batch_id)
    return BatchOutcome(
        batch_id=outcome.batch_id,
        rows={"previews": rows[PREVIEWS.name], "preview_errors": rows[INGEST_ERRORS.name]},
        errors=[{k: e[k] for k in ("source_key", "reason", "detail")} for e in errors],
    )


# --- warehouse (issue 6): pseudonym map and Snowflake load, before dbt runs ----------------
# NO_CACHE: the inputs hold the de-identification secret and a credentials block.


@task(name="write-pseudonym-map", cache_policy=NO_CACHE, **IO_RETRIES)
def write_pseudonym_map(lake: str, warehouse: str, secret: str) -> int:
    """Compute the pseudonym map of the lake and write it beside the DuckDB warehouse."""
    from tasks.pseudonyms import collect_identifiers, pseudonym_table, read_rules, write_pseudonyms_duckdb

    from tasks.warehouse import deid_database

    table = pseudonym_table(collect_identifiers(lake, read_rules()), secret)
    rows = write_pseudonyms_duckdb(deid_database(warehouse), table)
    get_run_logger().info("Pseudonym map: %d identifiers", rows)
    return rows


@task(name="load-snowflake", cache_policy=NO_CACHE, **IO_RETRIES)
def load_snowflake(connector, lake: str, secret: str, connect_kwargs: dict) -> dict[str, int]:  # noqa: ANN001 - a SnowflakeConnector block
    """Load the lake's raw tables and the pseudonym map into Snowflake (PUT + COPY INTO)."""
    from tasks.pseudonyms import collect_identifiers, pseudonym_table, read_rules
    from tasks.snowflake import load_raw_tables, write_pseudonyms_snowflake

    connection = connector.get_connection(**connect_kwargs)
    try:
        loaded = load_raw_tables(connection, Path(lake))
        table = pseudonym_table(collect_identifiers(lake, read_rules()), secret)
        loaded["deid_pseudonyms"] = write_pseudonyms_snowflake(connection, table)
    finally:
        connection.close()
    get_run_logger().info("Loaded into Snowflake: %s", loaded)
    return loaded
