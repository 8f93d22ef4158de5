"""The main job: list -> copy to raw -> extract in batches -> previews -> dbt."""

from __future__ import annotations

import importlib
import tempfile
import threading
import uuid
from collections import Counter, deque
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from datetime import UTC, date, datetime
from pathlib import Path
from typing import Any

from prefect import flow
from prefect.artifacts import create_markdown_artifact, create_table_artifact
from prefect.context import FlowRunContext
from prefect.futures import PrefectFuture
from prefect.logging import get_run_logger
from prefect.task_runners import ThreadPoolTaskRunner
from prefect.utilities.annotations import opaque, quote

from blocks.settings import PipelineConfig, resolve_config, resolve_s3_access, temporary_environment
from flows.runners import IN_FLIGHT_BATCHES, TASKS_PER_BATCH, THREADS
from flows.reporting import Progress, emit_ingest_events, report_quarantine
from flows.compress import compression_target, submit_compression
from tasks.compat import end_flow_runs_promptly, max_workers
from tasks.lake.manifest import pending_objects
from tasks.pixels.preview import PreviewOptions
from tasks.dicom.tasks import extract_staged
from tasks.lake.tasks import list_source, prepare_lake, publish_to_lake, read_manifest, stage_to_scratch
from tasks.lake.tables import begin_local_run, end_local_run
from tasks.pool import warm_process_pool
from tasks.lake.storage import ObjectInfo, batch_id, plan_batches
from tasks.lake.staging import staging_lake_for
from tasks.lake.s3 import S3Access, is_s3_url
from tasks.retries import BatchOutcome
from tasks.lake.scope import SourceScope, resolve_scope
from tasks.warehouse.dbt import count_rows
from tasks.warehouse.increments import check_lake_key

end_flow_runs_promptly()  # each flow run ends as soon as it is final (tasks/compat.py)


@flow(name="ingest-dicom", task_runner=ThreadPoolTaskRunner(max_workers=THREADS), log_prints=True)
def ingest_dicom(
    source: str | None = None,
    lake: str | None = None,
    warehouse: str | None = None,
    batch_size: int | None = None,
    batch_bytes: int | None = None,
    previews: bool = True,
    run_dbt: bool = True,
    settings_block: str | None = None,
    since: datetime | None = None,
    partition_date: date | None = None,
    within: str | None = None,
    incremental: bool = True,
    compression: str | None = None,
    transcode: bool = False,
    request_build: bool = False,
    pixel_text: str | None = None,
    export_deid: bool | None = None,
    config: PipelineConfig | None = None,
) -> dict:
    """Ingest new DICOM files (folder or S3 prefix, ZIPs expanded) into the lake and build the warehouse.

    ``within`` narrows what is read (an event's location, a backfill's day) without
    changing keys: they stay relative to ``source``, the provider's root.
    """
    config = resolve_config(
        settings_block, base=config, source=source, lake=lake, warehouse=warehouse,
        batch_size=batch_size, batch_bytes=batch_bytes, compression=compression, pixel_text=pixel_text,
        export_deid=export_deid,
    )
    access = resolve_s3_access(config)
    ingested_at = datetime.now(UTC)
    scope = resolve_scope(config.source, day=partition_date, within=within)
    job = _batch_job(config, access, scope.root, ingested_at, previews=previews, transcode=transcode)
    run_id = _prepare_run(config, access)
    with tempfile.TemporaryDirectory(prefix="dicom-etl-", ignore_cleanup_errors=True) as scratch:
        listed, objects = _list_pending(scope, config, access, scratch, since=since, incremental=incremental)
        if run_dbt and objects:
            _import_dbt_meanwhile()
        results = _run_batches(job, objects, scratch)
    if not is_s3_url(config.lake):
        end_local_run(Path(config.lake), run_id)
    summary = _summarize(listed, objects, results, config)
    if run_dbt:
        summary["warehouse_rows"] = _build_warehouse(config, access, anything_new=bool(objects))
    _report(summary)
    report_quarantine(summary)
    emit_ingest_events(
        summary, results, source=config.source, run_dbt=run_dbt, request_build=request_build, settings_block=config.settings_block
    )
    get_run_logger().info("Ingested %d new of %d listed objects in %d batches", len(objects), len(listed), summary["batches"])
    return summary


@dataclass(frozen=True)
class _BatchJob:
    """What every batch of a run goes through: stage -> extract -> [previews apart] -> publish, a task each."""

    root: str
    config: PipelineConfig
    access: S3Access
    ingested_at: datetime
    #: previews rendered and de-identified files exported by extraction itself, which has each file parsed
    extract_args: dict[str, Any]
    #: where previews are rendered apart ("local" or a compress-dicom deployment); None: by extraction, or none
    compression: str | None
    transcode: bool

    def submit(self, batch: Sequence[ObjectInfo], *, scratch: str, keep: Callable, pass_result: Callable) -> list[PrefectFuture]:
        """Submit one batch's tasks, in order: its staging, its outcomes, its publication (last)."""
        bid, lake = batch_id(batch), self.config.lake
        staged = stage_to_scratch.with_options(task_run_name=f"stage-{bid}").submit(
            self.root, lake, keep(batch), batch_id=bid, scratch=scratch, access=self.access, ingested_at=self.ingested_at,
        )
        extracted = extract_staged.with_options(task_run_name=f"extract-{bid}").submit(
            pass_result(staged), self.ingested_at, **self.extract_args
        )
        outcomes = [extracted]
        if self.compression is not None:  # in process, or on the compress-dicom deployment (flows/compress.py)
            staging_lake = str(staging_lake_for(lake, Path(scratch), bid))
            outcomes.append(
                submit_compression(
                    self.compression, self.config, extracted, self.ingested_at, bid, transcode=self.transcode,
                    staging_lake=staging_lake,
                )
            )
        published = publish_to_lake.with_options(task_run_name=f"publish-{bid}").submit(
            lake, pass_result(staged), keep(batch), [pass_result(o) for o in outcomes],
            scratch=scratch, access=self.access, processed_at=self.ingested_at,
        )
        return [staged, *outcomes, published]


def _batch_job(
    config: PipelineConfig, access: S3Access, root: str, ingested_at: datetime, *, previews: bool, transcode: bool
) -> _BatchJob:
    """The run's batch job: where previews are rendered, what extraction also does."""
    target = compression_target(config) if previews else "local"
    # previews rendered by extraction itself (one read and one parse per file), unless
    # they go to the compress-dicom deployment or come with archive copies
    fused = previews and target == "local" and not transcode
    preview_args = {"previews": PreviewOptions(pixel_text=config.pixel_text), "secret": config.secret} if fused else {}  # type: ignore[arg-type]
    # the de-identified DICOM export is written by extraction, which has each file parsed
    export_args = {"export_deid": True, "secret": config.secret, "pixel_text": config.pixel_text} if config.export_deid else {}
    compression = target if previews and not fused else None
    return _BatchJob(root, config, access, ingested_at, preview_args | export_args, compression, transcode)


def _prepare_run(config: PipelineConfig, access: S3Access) -> str:
    """Before listing: the run marked in a local lake (an interrupted run's partial files removed),
    extraction workers started, the lake's key checked. Returns the run's mark."""
    run_id = uuid.uuid4().hex
    if not is_s3_url(config.lake) and (swept := begin_local_run(Path(config.lake), run_id)):
        get_run_logger().info("Removed %d partial files left by an interrupted run", swept)
    if isinstance(getattr(FlowRunContext.get(), "task_runner", None), ThreadPoolTaskRunner):
        warm_process_pool()  # workers import their libraries while the source is listed
    with temporary_environment(access.env()):
        # previews are named, and the warehouse pseudonymized, with this key: one key per lake
        check_lake_key(config.lake, config.secret)
    return run_id


def _list_pending(
    scope: SourceScope, config: PipelineConfig, access: S3Access, scratch: str, *, since: datetime | None, incremental: bool
) -> tuple[list[ObjectInfo], list[ObjectInfo]]:
    """The objects at the source, and those of them the lake's manifest has not seen; the lake's schema files meanwhile."""
    prepared = prepare_lake.submit(config.lake, scratch, access=access)
    # the manifest is read while the source is listed (60,000 objects: 0.3 s and 0.7 s here)
    manifest = read_manifest.submit(config.lake, access=access) if incremental else None
    listed = list_source(scope, access=access, since=since).value
    done = manifest.result().value if manifest is not None else set()
    objects = pending_objects(listed, done)
    if listed and not objects:
        get_run_logger().info("Nothing new: all %d objects at the source are already in the manifest", len(listed))
    prepared.result()
    return listed, objects


def _run_batches(job: _BatchJob, objects: Sequence[ObjectInfo], scratch: str) -> list[BatchOutcome]:
    """Every batch through its tasks, a bounded number in flight; the outcome of each task of each batch."""
    batches = list(plan_batches(objects, job.config.batch_size, job.config.batch_bytes))
    progress = Progress(len(batches))
    # a bounded number of batches in flight on threads: a task waiting for its upstream
    # holds a thread, and staging far ahead would fill the scratch disk (S3 downloads)
    window = _in_flight_limit()
    # quote/opaque: Prefect would otherwise walk every object of these lists for futures
    # (on threads; Dask serializes the annotations' contents into plain tuples)
    keep, pass_result = (quote, opaque) if window else (_as_is, _as_is)
    outcomes: list[PrefectFuture] = []
    in_flight: deque[tuple[PrefectFuture, PrefectFuture]] = deque()  # (staging, publication) per batch
    failed_staging: list[PrefectFuture] = []

    def finish_one() -> None:
        staged, published = in_flight.popleft()
        published.wait()
        if staged.state.is_failed():
            failed_staging.append(staged)
        progress.advance()

    try:
        for batch in batches:
            while window and len(in_flight) >= window:
                finish_one()
            staged, *batch_outcomes = job.submit(batch, scratch=scratch, keep=keep, pass_result=pass_result)
            outcomes += batch_outcomes
            in_flight.append((staged, batch_outcomes[-1]))
        while in_flight:
            finish_one()
    finally:
        progress.close()
    # a batch whose staging failed fails the run with staging's error, not with the
    # "Run is in PENDING state" of the extraction that never started
    if failed_staging:
        failed_staging[0].result()
    return [f.result() for f in outcomes]


def _summarize(listed: Sequence[ObjectInfo], objects: Sequence[ObjectInfo], results: Sequence[BatchOutcome], config: PipelineConfig) -> dict:
    """The run's summary: counts per table and reason, the files quarantined, where things went."""
    rows: Counter[str] = Counter()
    reasons: Counter[str] = Counter()
    quarantined: list[dict] = []
    for outcome in results:
        rows.update(outcome.rows)
        for err in outcome.errors:
            reasons[err["reason"]] += 1
            quarantined.append(err)
    return {
        "listed": len(listed),
        "files": len(objects),
        "batches": len({o.batch_id for o in results}),
        "raw_rows": dict(rows),
        "rejected": dict(reasons),
        "quarantined": quarantined,
        "lake": config.lake,
        "warehouse": config.warehouse,
        "warehouse_target": config.dbt_target,
        "snowflake_block": config.snowflake_connector_block,
    }


def _build_warehouse(config: PipelineConfig, access: S3Access, *, anything_new: bool) -> dict:
    """The build-warehouse subflow on this run's configuration; its rows per processed table.

    When this run added nothing and the DuckDB warehouse already holds every batch of the
    lake, no subflow is started (a no-op run saves its ~1 s of bookkeeping).
    """
    with temporary_environment(access.env()):
        if not anything_new and config.dbt_target == "duckdb" and _warehouse_is_current(config):
            get_run_logger().info("Nothing new since the last build: the warehouse holds every batch of the lake; no build")
            return count_rows(Path(config.warehouse))
        from flows.warehouse import build_warehouse

        return build_warehouse(config=config)


def _warehouse_is_current(config: PipelineConfig) -> bool:
    """Whether the DuckDB warehouse was built from every file of the lake, in its current version."""
    from tasks.warehouse.increments import list_lake_files, plan_build, read_loaded_files

    warehouse = Path(config.warehouse)
    return warehouse.exists() and plan_build(list_lake_files(config.lake), read_loaded_files(warehouse)).is_empty


def _import_dbt_meanwhile() -> None:
    """Import dbt-core (2-3 s) on a thread while the batches run, so the build starts at once."""
    threading.Thread(target=importlib.import_module, args=("dbt.cli.main",), name="import-dbt", daemon=True).start()


def _as_is(value: object) -> object:
    return value


def _in_flight_limit() -> int | None:
    """How many batches to keep in flight: bounded on threads, unbounded on a cluster (Dask)."""
    runner = getattr(FlowRunContext.get(), "task_runner", None)
    if isinstance(runner, ThreadPoolTaskRunner):
        return max(1, min(IN_FLIGHT_BATCHES, max_workers(runner, THREADS) // TASKS_PER_BATCH))
    return None


def _report(summary: dict) -> None:
    """Markdown and table artifacts for the run's page in the Prefect UI (counts only, no PHI)."""
    lines = [
        "# DICOM ingest",
        f"- objects listed: {summary.get('listed', summary['files'])}, new: **{summary['files']}** in "
        f"{summary['batches']} {'batch' if summary['batches'] == 1 else 'batches'}",
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
