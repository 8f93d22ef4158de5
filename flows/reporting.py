"""What a run tells the Prefect UI and the automations: artifacts, progress, events.

Counts and reason codes only: source keys may carry PHI (patient names in folder names),
so they appear in the quarantine artifact only when the run logs at DEBUG.
"""

from __future__ import annotations

import logging
import sys
import time
from collections import Counter
from collections.abc import Iterator, Sequence
from contextlib import contextmanager

from prefect.artifacts import create_progress_artifact, create_table_artifact, update_progress_artifact
from prefect.context import get_run_context
from prefect.events import emit_event
from prefect.logging import get_run_logger

#: Event of one batch written to the lake.
BATCH_WRITTEN = "dicom.batch.written"
#: Event of a finished ingest run, with its new-row counts; starts the dbt deployment.
INGEST_COMPLETED = "dicom.ingest.completed"


class Progress:
    """Batches done, as a progress artifact in the UI and a progress bar on a terminal."""

    def __init__(self, total: int, *, label: str = "batches") -> None:
        self.total, self.done = total, 0
        self.artifact_id = create_progress_artifact(0.0, description=f"{label} done") if total > 1 else None
        self.bar = None
        if total and sys.stderr.isatty():
            from rich.progress import Progress as Bar

            self.bar = Bar(transient=True)
            self.bar.start()
            self.bar_task = self.bar.add_task(label, total=total)

    def advance(self) -> None:
        self.done += 1
        if self.artifact_id is not None and (self.done == self.total or self.done % max(1, self.total // 20) == 0):
            update_progress_artifact(self.artifact_id, 100.0 * self.done / self.total)
        if self.bar is not None:
            self.bar.update(self.bar_task, completed=self.done)

    def close(self) -> None:
        if self.bar is not None:
            self.bar.stop()
            self.bar = None


def report_quarantine(summary: dict, *, lake_hint: str = "quarantine/<reason>/") -> None:
    """A table artifact of the files quarantined: counts per reason and where the copies are."""
    quarantined = summary.get("quarantined", [])
    reasons = Counter(q["reason"] for q in quarantined)
    rows: list[dict] = [
        {"reason": r, "files": n, "location": f"{summary['lake']}/{lake_hint.replace('<reason>', r)}"}
        for r, n in sorted(reasons.items())
    ]
    if get_run_logger().isEnabledFor(logging.DEBUG):
        rows += [{"reason": q["reason"], "files": 1, "location": q["source_key"]} for q in quarantined]
    if not rows:
        rows = [{"reason": "-", "files": 0, "location": "nothing quarantined"}]
    description = "Files quarantined, by reason (no keys: they may hold PHI)"
    create_table_artifact(rows, key="ingest-quarantine", description=description)


def emit_ingest_events(
    summary: dict, results: Sequence, *, source: str, run_dbt: bool, request_build: bool = False, settings_block: str | None = None
) -> None:
    """``dicom.batch.written`` per batch and ``dicom.ingest.completed`` with the run's new rows.

    ``dicom.build_requested`` is true only for a run that left the warehouse to the
    ``rebuild`` deployment on purpose (``request_build``): a benchmark, a day of a
    backfill or ``ingest --no-dbt`` start no build.
    """
    ctx = get_run_context()
    run_id = str(ctx.flow_run.id) if getattr(ctx, "flow_run", None) else "local"
    for batch_id, rows in _rows_per_batch(results).items():
        emit_event(
            BATCH_WRITTEN,
            resource={"prefect.resource.id": f"dicom.batch.{batch_id}", "dicom.lake": str(summary["lake"])},
            payload={"batch_id": batch_id, "rows": rows},
        )
    new_rows = {t: n for t, n in summary.get("new_rows", summary["raw_rows"]).items() if n}
    emit_event(
        INGEST_COMPLETED,
        resource={
            "prefect.resource.id": f"dicom.ingest.{run_id}",
            "dicom.has_new_rows": "true" if new_rows else "false",
            "dicom.warehouse_built": "true" if run_dbt else "false",
            "dicom.build_requested": "true" if request_build and not run_dbt else "false",
        },
        payload={
            "source": source,
            "lake": str(summary["lake"]),
            "warehouse": str(summary["warehouse"]),
            # the build must use this run's settings (its de-identification key)
            "settings_block": settings_block or "",
            "files": summary["files"],
            "new_rows": new_rows,
            "rejected": summary["rejected"],
        },
    )


def _rows_per_batch(results: Sequence) -> dict[str, dict[str, int]]:
    per: dict[str, Counter] = {}
    for outcome in results:
        per.setdefault(outcome.batch_id, Counter()).update(outcome.rows)
    return {b: dict(c) for b, c in per.items()}


class StepTimes:
    """Wall time of each step of a run, for its log and a table artifact."""

    def __init__(self) -> None:
        self.seconds: dict[str, float] = {}

    @contextmanager
    def __call__(self, step: str) -> Iterator[None]:
        start = time.perf_counter()
        try:
            yield
        finally:
            self.seconds[step] = self.seconds.get(step, 0.0) + time.perf_counter() - start

    def add(self, step: str, seconds: float) -> None:
        self.seconds[step] = self.seconds.get(step, 0.0) + seconds

    def line(self) -> str:
        return ", ".join(f"{step} {s:.2f} s" for step, s in self.seconds.items())

    def report(self, *, key: str, description: str) -> None:
        rows = [{"step": step, "seconds": round(s, 3)} for step, s in self.seconds.items()]
        rows.append({"step": "total", "seconds": round(sum(self.seconds.values()), 3)})
        create_table_artifact(rows, key=key, description=description)
