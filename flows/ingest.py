"""The main job: list -> copy to raw -> extract in batches -> previews -> dbt."""

from __future__ import annotations

from collections import Counter
from datetime import UTC, datetime
from pathlib import Path

from prefect import flow
from prefect.artifacts import create_markdown_artifact, create_table_artifact
from prefect.futures import wait
from prefect.logging import get_run_logger
from prefect.task_runners import ThreadPoolTaskRunner

from blocks.settings import resolve_config
from flows.warehouse import build_warehouse
from tasks.lake import ensure_table_schemas, sweep_partials
from tasks.prefect_tasks import copy_to_raw, extract_to_lake, list_source, render_previews
from tasks.storage import batch_id, chunk


@flow(name="ingest-dicom", task_runner=ThreadPoolTaskRunner(max_workers=4), log_prints=True)
def ingest_dicom(
    source: str | None = None,
    lake: str | None = None,
    warehouse: str | None = None,
    batch_size: int | None = None,
    previews: bool = True,
    run_dbt: bool = True,
    settings_block: str | None = None,
) -> dict:
    """Ingest a folder of DICOM files into the lake and build the warehouse."""
    config = resolve_config(settings_block, source=source, lake=lake, warehouse=warehouse, batch_size=batch_size)
    logger = get_run_logger()
    ingested_at = datetime.now(UTC)
    if swept := sweep_partials(Path(config.lake)):
        logger.info("Removed %d partial files left by an interrupted run", swept)
    ensure_table_schemas(Path(config.lake))

    objects = list_source(config.source)
    outcomes = []
    for batch in chunk(objects, config.batch_size):
        bid = batch_id(batch)
        raw = copy_to_raw.with_options(task_run_name=f"copy-{bid}").submit(config.source, config.lake, batch)
        extracted = extract_to_lake.with_options(task_run_name=f"extract-{bid}").submit(
            config.lake, bid, batch, raw, ingested_at
        )
        outcomes.append(extracted)
        if previews:
            outcomes.append(
                render_previews.with_options(task_run_name=f"previews-{bid}").submit(
                    config.lake, extracted, ingested_at, config.deid_secret
                )
            )
    wait(outcomes)
    results = [f.result() for f in outcomes]

    rows: Counter[str] = Counter()
    reasons: Counter[str] = Counter()
    quarantined: list[dict] = []
    for outcome in results:
        rows.update(outcome.rows)
        for err in outcome.errors:
            reasons[err["reason"]] += 1
            quarantined.append(err)
    summary = {
        "files": len(objects),
        "batches": len({o.batch_id for o in results}),
        "raw_rows": dict(rows),
        "rejected": dict(reasons),
        "quarantined": quarantined,
        "lake": config.lake,
        "warehouse": config.warehouse,
    }
    if run_dbt:
        summary["warehouse_rows"] = build_warehouse(
            lake=config.lake, warehouse=config.warehouse, settings_block=settings_block
        )
    _report(summary)
    logger.info("Ingested %d files in %d batches", len(objects), summary["batches"])
    return summary


def _report(summary: dict) -> None:
    """Markdown and table artifacts for the run's page in the Prefect UI (counts only, no PHI)."""
    lines = [
        "# DICOM ingest",
        f"- files listed: **{summary['files']}** in {summary['batches']} batches",
        f"- images: **{summary['raw_rows'].get('images', 0)}**, rejected at extraction: "
        f"**{summary['raw_rows'].get('ingest_errors', 0)}**, previews: {summary['raw_rows'].get('previews', 0)}",
        "",
        "| reason | files |",
        "|---|---|",
        *[f"| {reason} | {n} |" for reason, n in sorted(summary["rejected"].items())],
    ]
    create_markdown_artifact("\n".join(lines), key="ingest-summary", description="DICOM ingest summary")
    table = [{"table": t, "raw_rows": n} for t, n in sorted(summary["raw_rows"].items())]
    for t, n in sorted(summary.get("warehouse_rows", {}).items()):
        table.append({"table": f"processed.{t}", "raw_rows": n})
    create_table_artifact(table, key="ingest-counts", description="Rows per table")
