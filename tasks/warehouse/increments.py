"""What a warehouse build reads: the lake's batches that arrived since the last build.

The lake is append-only: each batch writes one Parquet file per raw table (and stage),
``tables/<table>/ingest_date=<day>/<stage>-<batch>.parquet``. The warehouse records every
file it has built from (``internal.loaded_files``: path and version, i.e. size and mtime
locally, the ETag on S3). A build

1. lists the lake's table files (one listing; no file is opened);
2. takes every batch with a file the warehouse has not loaded in that version: new
   batches, batches a later stage completed (previews), batches rewritten by a re-run,
   and batches that arrived late in an old date partition alike;
3. hands dbt all files of those batches (``internal.build_files``): the stage models read
   only these and merge them into what they hold, the processed models rebuild only the
   keys they touch;
4. records them as loaded once dbt succeeded, so a failed build is simply done again.

A full refresh takes every batch. Nothing new means no pseudonym map and no dbt run.
"""

from __future__ import annotations

import hashlib
import hmac
import os
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path

import duckdb
import pyarrow as pa

from tasks.errors import WarehouseError
from tasks.lake.storage import TABLES_ZONE

#: The 0-row schema file of each raw table (tasks/lake/tables.py); read with every build.
SCHEMA_FILE = "_empty.parquet"
STATE_SCHEMA = "internal"
FILES_SCHEMA = pa.schema([("table_name", pa.string()), ("path", pa.string()), ("batch_id", pa.string()), ("version", pa.string())])
#: Where the lake records the fingerprint of the de-identification key it was built with.
KEY_FINGERPRINT_FILE = "_deid_key_fingerprint"
FINGERPRINT_MESSAGE = b"dicom-etl de-identification key fingerprint v1"


@dataclass(frozen=True)
class LakeFile:
    """One Parquet file of a raw table, by its path relative to the lake root."""

    table: str
    path: str
    batch_id: str
    version: str


@dataclass(frozen=True)
class BuildPlan:
    """The files a build reads, and whether it rebuilds everything."""

    files: tuple[LakeFile, ...]
    full_refresh: bool
    batches: frozenset[str] = field(default_factory=frozenset)

    @property
    def is_empty(self) -> bool:
        """Nothing arrived since the last build: no dbt run needed."""
        return not self.batches and not self.full_refresh


def batch_of(file_name: str) -> str | None:
    """The batch id in a raw table file name ``<stage>-<batch>.parquet`` (None for other files)."""
    if not file_name.endswith(".parquet") or file_name.startswith(("_", ".")) or "-" not in file_name:
        return None
    return file_name[: -len(".parquet")].split("-", 1)[1]


def list_lake_files(lake: str) -> list[LakeFile]:
    """Every raw table file of a lake (a folder, or ``s3://`` through s3fs), sorted by path.

    Parameters
    ----------
    lake : str
        Lake root. On S3 the endpoint and credentials come from the standard AWS
        environment, as for dbt-duckdb and the pseudonym map.

    Returns
    -------
    list of LakeFile
        Files named ``<stage>-<batch>.parquet`` under ``tables/<table>/<partition>/``;
        the version is ``<size>:<mtime_ns>`` locally and the ETag on S3.
    """
    out: list[LakeFile] = []
    if "://" in lake:
        import s3fs

        fs = s3fs.S3FileSystem(skip_instance_cache=True, use_listings_cache=False)
        root = lake.split("://", 1)[1].rstrip("/")
        for full, info in fs.find(f"{root}/{TABLES_ZONE}", detail=True).items():
            rel = full[len(root) + 1 :]
            parts = rel.split("/")
            bid = batch_of(parts[-1])
            if len(parts) == 4 and bid:
                out.append(LakeFile(parts[1], rel, bid, str(info.get("ETag") or info.get("size")).strip('"')))
        return sorted(out, key=lambda f: f.path)
    tables = Path(lake) / TABLES_ZONE
    if not tables.is_dir():
        return out
    for table in os.scandir(tables):
        if not table.is_dir():
            continue
        for partition in os.scandir(table.path):
            if not partition.is_dir():
                continue
            for entry in os.scandir(partition.path):
                bid = batch_of(entry.name)
                if bid and entry.is_file():
                    st = entry.stat()
                    rel = f"{TABLES_ZONE}/{table.name}/{partition.name}/{entry.name}"
                    out.append(LakeFile(table.name, rel, bid, f"{st.st_size}:{st.st_mtime_ns}"))
    return sorted(out, key=lambda f: f.path)


def plan_build(files: Sequence[LakeFile], loaded: Iterable[tuple[str, str]], *, full_refresh: bool = False) -> BuildPlan:
    """The files of every batch that has a file not yet loaded in its current version.

    Parameters
    ----------
    files : sequence of LakeFile
        The lake's table files (:func:`list_lake_files`).
    loaded : iterable of (path, version)
        What the warehouse has built from (:func:`read_loaded_files`).
    full_refresh : bool
        Take every batch.

    Returns
    -------
    BuildPlan
        All files of the batches to read: a batch is read whole, so a stage model sees
        every row of a batch together whichever of its files changed.
    """
    done = set(loaded)
    batches = {f.batch_id for f in files} if full_refresh else {f.batch_id for f in files if (f.path, f.version) not in done}
    return BuildPlan(tuple(f for f in files if f.batch_id in batches), full_refresh, frozenset(batches))


def files_table(files: Iterable[LakeFile]) -> pa.Table:
    """Files as an Arrow table (``table_name, path, batch_id, version``) for the warehouse."""
    rows = list(files)
    return pa.table(
        {
            "table_name": [f.table for f in rows],
            "path": [f.path for f in rows],
            "batch_id": [f.batch_id for f in rows],
            "version": [f.version for f in rows],
        },
        schema=FILES_SCHEMA,
    )


def schema_files(tables: Iterable[str]) -> list[LakeFile]:
    """The 0-row schema file of each table: read with every build so each table has its columns."""
    return [LakeFile(t, f"{TABLES_ZONE}/{t}/{SCHEMA_FILE}", "", "") for t in sorted(tables)]


# --- the DuckDB warehouse's record of its builds ---------------------------------------


def read_loaded_files(warehouse: Path) -> set[tuple[str, str]]:
    """``(path, version)`` of every lake file a DuckDB warehouse was built from (empty if none)."""
    if not Path(warehouse).exists():
        return set()
    with duckdb.connect(str(warehouse), read_only=True) as con:
        exists = con.execute(
            "select count(*) from information_schema.tables where table_schema = ? and table_name = 'loaded_files'", [STATE_SCHEMA]
        ).fetchone()[0]
        if not exists:
            return set()
        return set(con.execute(f"select path, version from {STATE_SCHEMA}.loaded_files").fetchall())


def write_build_files(warehouse: Path, plan: BuildPlan, tables: Iterable[str]) -> int:
    """Replace ``internal.build_files`` of a DuckDB warehouse with the files this build reads.

    The schema file of every table is listed too (``batch_id`` empty), so a stage model
    reading a table no new batch wrote still gets its columns. Returns the files listed.
    """
    table = files_table([*plan.files, *schema_files(tables)])
    Path(warehouse).parent.mkdir(parents=True, exist_ok=True)
    with duckdb.connect(str(warehouse)) as con:
        con.execute(f"create schema if not exists {STATE_SCHEMA}")
        con.register("build_files_arrow", table)
        con.execute(f"create or replace table {STATE_SCHEMA}.build_files as select * from build_files_arrow")
        con.unregister("build_files_arrow")
    return table.num_rows


def record_loaded_files(warehouse: Path, plan: BuildPlan, *, loaded_at: datetime | None = None) -> int:
    """Record a successful build's files in ``internal.loaded_files`` (a full refresh replaces it)."""
    table = files_table(plan.files)
    when = loaded_at or datetime.now(UTC)
    with duckdb.connect(str(warehouse)) as con:
        con.execute(f"create schema if not exists {STATE_SCHEMA}")
        con.execute(
            f"create table if not exists {STATE_SCHEMA}.loaded_files "
            "(table_name varchar, path varchar, batch_id varchar, version varchar, loaded_at timestamptz)"
        )
        if plan.full_refresh:
            con.execute(f"delete from {STATE_SCHEMA}.loaded_files")
        con.register("build_files_arrow", table)
        con.execute(f"delete from {STATE_SCHEMA}.loaded_files where path in (select path from build_files_arrow)")
        con.execute(f"insert into {STATE_SCHEMA}.loaded_files select *, ? from build_files_arrow", [when])
        con.unregister("build_files_arrow")
    return table.num_rows


# --- the key a lake was built with ------------------------------------------------------


def key_fingerprint(secret: str) -> str:
    """A check value of the de-identification key: HMAC of a fixed text, 16 hex digits.

    It tells two keys apart without revealing either (a key check value): it can sit in
    the lake beside the data, and in logs.
    """
    if not secret:
        msg = "the de-identification secret is empty; set DICOM_ETL_DEID_SECRET or the settings block"
        raise WarehouseError(msg)
    return hmac.new(secret.encode(), FINGERPRINT_MESSAGE, hashlib.sha256).hexdigest()[:16]


def check_lake_key(lake: str, secret: str) -> str:
    """Record the key's fingerprint in a lake that has none, or check it against the recorded one.

    Parameters
    ----------
    lake : str
        Lake root (folder or ``s3://``, the latter through s3fs).
    secret : str
        The de-identification key of this run.

    Returns
    -------
    str
        The fingerprint.

    Raises
    ------
    WarehouseError
        If the lake records another key's fingerprint: its previews are named, and its
        warehouse pseudonymized, with that key; building with this one would give the same
        patient two pseudonyms.
    """
    mine = key_fingerprint(secret)
    if "://" in lake:
        import s3fs

        fs = s3fs.S3FileSystem(skip_instance_cache=True, use_listings_cache=False)
        path = f"{lake.split('://', 1)[1].rstrip('/')}/{KEY_FINGERPRINT_FILE}"
        recorded = fs.cat_file(path).decode().strip() if fs.exists(path) else None
        if recorded is None:
            fs.pipe_file(path, mine.encode())
    else:
        path = Path(lake) / KEY_FINGERPRINT_FILE
        recorded = path.read_text().strip() if path.is_file() else None
        if recorded is None:
            path.parent.mkdir(parents=True, exist_ok=True)
            path.write_text(mine + "\n")
    if recorded is not None and recorded != mine:
        msg = (
            f"the lake {lake} was built with another de-identification secret (key fingerprint {recorded}; this run's is "
            f"{mine}). Run with the settings block (or DICOM_ETL_DEID_SECRET) that built this lake, or give this run its own lake"
        )
        raise WarehouseError(msg)
    return mine
