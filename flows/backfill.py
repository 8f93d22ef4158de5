"""Backfill: ingest a provider whose objects are laid out by date, one date at a time."""

from __future__ import annotations

from datetime import date, timedelta
from pathlib import Path

from prefect import flow
from prefect.logging import get_run_logger

from flows.ingest import ingest_dicom
from flows.warehouse import build_warehouse
from tasks.lake.s3 import is_s3_url
from tasks.lake.scope import resolve_scope


def date_range(start: date, end: date) -> list[date]:
    """The dates from ``start`` to ``end``, inclusive.

    Raises
    ------
    ValueError
        If ``end`` is before ``start``.
    """
    if end < start:
        msg = f"backfill end {end} is before its start {start}; pass start <= end"
        raise ValueError(msg)
    return [start + timedelta(days=i) for i in range((end - start).days + 1)]


@flow(name="backfill-dicom", log_prints=True)
def backfill_dicom(
    start: date,
    end: date,
    source: str | None = None,
    prefix_pattern: str = "%Y-%m-%d",
    lake: str | None = None,
    warehouse: str | None = None,
    settings_block: str | None = None,
    run_dbt: bool = True,
) -> dict[str, dict]:
    """Ingest ``<source>/<date>`` (or a ``{date:...}`` source's partition) for every date of a range, then build the warehouse once."""
    from blocks.settings import resolve_config

    logger = get_run_logger()
    config = resolve_config(settings_block, source=source, lake=lake, warehouse=warehouse)
    templated = "{date" in config.source
    done: dict[str, dict] = {}
    for day in date_range(start, end):
        # keys stay relative to the source: a day's objects get the keys an hourly run over
        # the whole source gives them (2024-01-01/IM1, not IM1)
        options = {"partition_date": day} if templated else {"within": day.strftime(prefix_pattern)}
        scope = resolve_scope(config.source, day=options.get("partition_date"), within=options.get("within"))
        label = scope.prefix.rstrip("/") or day.isoformat()
        if not is_s3_url(scope.location) and not Path(scope.location).is_dir():
            logger.info("no folder for %s; nothing to backfill that day", label)
            continue
        summary = ingest_dicom.with_options(flow_run_name=f"backfill-{label.replace('/', '-')}")(
            run_dbt=False, config=config, **options
        )
        done[label] = {"files": summary["files"], "raw_rows": summary["raw_rows"]}
    if done and run_dbt:
        build_warehouse(config=config)
    return done
