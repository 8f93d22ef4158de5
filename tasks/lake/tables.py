"""Write raw tables and quarantine copies into the lake.

Layout of a local lake::

    raw/<source key>                                   copies of the source objects
    tables/<table>/ingest_date=YYYY-MM-DD/<stage>-<batch>.parquet
    tables/<table>/_empty.parquet                      0 rows, the schema (dbt reads a glob)
    previews/<xx>/<image id>.jpg
    quarantine/<reason>/<source key>
"""

from __future__ import annotations

import os
import shutil
from collections.abc import Mapping
from datetime import date
from pathlib import Path

import polars as pl

from tasks.dicom.entities import ALL_TABLES
from tasks.lake.files import is_temporary, writing
from tasks.lake.storage import QUARANTINE_ZONE, TABLES_ZONE


def write_parquet_atomic(frame: pl.DataFrame, path: Path) -> Path:
    """Write a frame to ``path`` through a temporary name, so readers never see half a file."""
    with writing(path) as tmp:
        frame.write_parquet(tmp, compression="zstd", statistics=True)
    return path


def table_path(lake: Path, table: str, ingest_date: date, stage: str, batch_id: str) -> Path:
    """Where one batch's rows of one table live."""
    partition = f"ingest_date={ingest_date.isoformat()}"
    return lake / TABLES_ZONE / table / partition / f"{stage}-{batch_id}.parquet"


def write_tables(
    lake: Path,
    frames: Mapping[str, pl.DataFrame],
    *,
    ingest_date: date,
    stage: str,
    batch_id: str,
) -> dict[str, int]:
    """Write one Parquet file per table for a batch; return rows written per table.

    Empty frames are written too, so a later reader of a table's files always finds
    the batch's schema.

    Raises
    ------
    ValueError
        For a table missing from :data:`tasks.dicom.entities.ALL_TABLES`: it would get no
        schema file, no dbt source and no Snowflake load.
    """
    if unknown := sorted(set(frames) - set(ALL_TABLES)):
        msg = f"tables {unknown} are not in the table registry (tasks.dicom.entities.ALL_TABLES); register them there"
        raise ValueError(msg)
    counts: dict[str, int] = {}
    for table, frame in frames.items():
        write_parquet_atomic(frame, table_path(lake, table, ingest_date, stage, batch_id))
        counts[table] = frame.height
    return counts


def ensure_table_schemas(lake: Path) -> None:
    """Give every raw table a 0-row schema file, so dbt can read a table no batch wrote yet."""
    for name, entity in ALL_TABLES.items():
        path = lake / TABLES_ZONE / name / "_empty.parquet"
        if not path.exists():
            write_parquet_atomic(pl.DataFrame(schema=entity.schema), path)


def quarantine_copy(lake: Path, src: str | Path, key: str, reason: str) -> str:
    """Copy a rejected file to ``quarantine/<reason>/<key>``; return the quarantine key."""
    qkey = f"{QUARANTINE_ZONE}/{reason}/{key}"
    dst = lake / qkey
    if os.path.exists(src):
        with writing(dst) as tmp:
            shutil.copy2(src, tmp)
    else:
        dst.parent.mkdir(parents=True, exist_ok=True)
    return qkey


#: One empty file per ingest run writing to a local lake, removed when its batches are done:
#: a file left here means a run was cut short, and may have left partial files.
RUNS_ZONE = "_runs"


def begin_local_run(lake: Path, run_id: str) -> int:
    """Mark a run as writing to ``lake``; sweep partial files first if a run may have been cut short.

    Walking the whole lake costs ~0.5 s at 60,000 images, so it is done only when another
    run's mark is there (a run that was killed or failed), or when the lake predates marks;
    the marks found are removed with what their runs left. Like :func:`sweep_partials`,
    this assumes one run per lake at a time. Returns the number of partial files removed.
    """
    runs = lake / RUNS_ZONE
    stale = list(runs.iterdir()) if runs.is_dir() else None
    swept = sweep_partials(lake) if stale is None or stale else 0
    for mark in stale or ():  # swept: one run per lake at a time, as for sweep_partials
        mark.unlink(missing_ok=True)
    runs.mkdir(parents=True, exist_ok=True)
    (runs / run_id).touch()
    return swept


def end_local_run(lake: Path, run_id: str) -> None:
    """The run's batches are all written: remove its mark (a failed run keeps it, so the next run sweeps)."""
    (lake / RUNS_ZONE / run_id).unlink(missing_ok=True)


def sweep_partials(lake: Path) -> int:
    """Delete temporary ``.*.partial`` files a killed run left behind; return how many.

    Only safe while no other run writes to the same lake (the ingest deployment has a
    concurrency limit of one).
    """
    removed = 0
    if lake.is_dir():
        for path in lake.rglob(".*.partial"):
            if is_temporary(path.name):
                path.unlink(missing_ok=True)
                removed += 1
    return removed
