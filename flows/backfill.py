"""Backfill: ingest a provider whose objects are laid out by date, one date at a time."""

from __future__ import annotations

from datetime import date, timedelta
from pathlib import Path

from prefect import flow
from prefect.logging import get_run_logger

from flows.ingest import ingest_dicom
from flows.warehouse import build_warehouse


def date_prefixes(start: date, end: date, *, pattern: str = "%Y-%m-%d") -> list[str]:
    """The source sub-folders (or S3 prefixes) of the dates from ``start`` to ``end``, inclusive.

    Raises
    ------
    ValueError
        If ``end`` is before ``start``.
    """
    if end < start:
        msg = f"backfill end {end} is before its start {start}; pass start <= end"
        raise ValueError(msg)
    return [(start + timedelta(days=i)).strftime(pattern) for i in range((end - start).days + 1)]


@flow(name="backfill-dicom", log_prints=True)
def backfill_dicom(
    start: date,
    end: date,
    source: str | None = None,
    prefix_pattern: str = "%Y-%m-%d",
    lake: str | None = None,
    warehouse: str | None = None,
    settings_block: str | None = None,
) -> dict[str, dict]:
    """Ingest ``<source>/<date>`` for every date of a range, then build the warehouse once."""
    from blocks.settings import resolve_config

    logger = get_run_logger()
    config = resolve_config(settings_block, source=source, lake=lake, warehouse=warehouse)
    done: dict[str, dict] = {}
    for prefix in date_prefixes(start, end, pattern=prefix_pattern):
        part = f"{config.source.rstrip('/')}/{prefix}"
        if "://" not in part and not Path(part).is_dir():
            logger.info("no folder for %s; nothing to backfill that day", prefix)
            continue
        summary = ingest_dicom.with_options(flow_run_name=f"backfill-{prefix}")(source=part, run_dbt=False, config=config)
        done[prefix] = {"files": summary["files"], "raw_rows": summary["raw_rows"]}
    if done:
        build_warehouse(config=config)
    return done
