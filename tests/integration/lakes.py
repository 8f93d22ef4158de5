"""Build a lake from a folder of DICOM files with the pure extraction functions (no Prefect).

What the ingest-dicom flow writes, minus the orchestration: the warehouse tests start
from a real lake without paying for a flow run.
"""

from __future__ import annotations

from datetime import UTC, datetime
from pathlib import Path

import polars as pl

from pydicom.dataset import Dataset

from tasks.deid.export import ExportJob, PixelJudge, PixelOutcome
from tasks.dicom.entities import INGEST_ERRORS, PREVIEWS
from tasks.dicom.extract import Lineage, SourceFile, extract_batch
from tasks.lake.tables import ensure_table_schemas, write_tables
from tasks.pixels.preview import render_batch
from tasks.lake.storage import RAW_ZONE, batch_id, chunk, copy_local_objects, list_local_objects


def build_lake(
    source: Path,
    lake: Path,
    *,
    secret: str,
    batch_size: int = 50,
    ingested_at: datetime | None = None,
    export_judge: PixelJudge | None = None,
) -> dict[str, int]:
    """Extract every file of ``source`` into ``lake`` (tables + previews); return raw rows per table.

    With ``export_judge``, de-identified DICOM files are exported too, pixels judged by it.
    """
    ensure_table_schemas(lake)
    when = ingested_at or datetime.now(UTC)
    totals: dict[str, int] = {}
    objects = list_local_objects(source)
    for batch in chunk(objects, batch_size):
        bid = batch_id(batch)
        lineage = Lineage(bid, when)
        raw = copy_local_objects(source, lake / RAW_ZONE, batch)
        files = [SourceFile(c.path, o.key, o.etag) for o, c in zip(batch, raw, strict=True)]
        export = ExportJob(lake, secret, export_judge) if export_judge is not None else None
        frames = extract_batch(files, lineage, export=export).frames
        for table, n in write_tables(lake, frames, ingest_date=lineage.ingest_date, stage="extract", batch_id=bid).items():
            totals[table] = totals.get(table, 0) + n
        by_key = {f.key: f.path for f in files}
        images = [
            (by_key[k], k, uid)
            for k, uid in frames["images"].filter(pl.col("has_pixel_data")).select("source_key", "SOPInstanceUID").iter_rows()
        ]
        previews, errors = render_batch(lake, images, secret=secret, max_size=64, quality=70)
        extra = {"source_etag": None, "batch_id": bid, "ingested_at": when, "ingest_date": lineage.ingest_date}
        for err in errors:
            err.update(quarantine_key=None, file_size=None, content_hash=None)
        preview_frames = {
            PREVIEWS.name: pl.DataFrame([p | extra for p in previews], schema=PREVIEWS.schema),
            INGEST_ERRORS.name: pl.DataFrame([e | extra for e in errors], schema=INGEST_ERRORS.schema),
        }
        write_tables(lake, preview_frames, ingest_date=lineage.ingest_date, stage="preview", batch_id=bid)
        totals["previews"] = totals.get("previews", 0) + len(previews)
    return totals


def pixels_as_they_are(ds: Dataset) -> PixelOutcome:
    """A pixel judge for header tests: pixels exported untouched (never a production judge)."""
    return PixelOutcome("not_needed", method="unchecked")  # no word a PHI scan could match
