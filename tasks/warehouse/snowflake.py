"""Load the lake's raw Parquet tables (and the pseudonym map) into Snowflake.

The Snowflake way: ``PUT`` the Parquet files onto an internal stage, then
``COPY INTO <table> ... MATCH_BY_COLUMN_NAME = CASE_INSENSITIVE``. Loads go by batch
(delete the batch's rows, then COPY its files with FORCE): a load never depends on COPY's
load history, and a batch loaded twice replaces its rows instead of doubling them. Every function takes an open DB-API connection (snowflake-connector's, as
prefect-snowflake's ``SnowflakeConnector.get_connection()`` returns it), so they run the
same against Snowflake and against fakesnow's server.
"""

from __future__ import annotations

import tempfile
import uuid
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import polars as pl
import pyarrow as pa
import pyarrow.parquet as pq

from tasks.dicom.entities import ALL_TABLES
from tasks.errors import SnowflakeUnreachable, WarehouseError
from tasks.warehouse.increments import BuildPlan, LakeFile

RAW_SCHEMA = "RAW"
INTERNAL_SCHEMA = "INTERNAL"
LAKE_STAGE = "LAKE_STAGE"
DEID_STAGE = "DEID_STAGE"
ROWS_LOADED = 3  # column of COPY INTO's result: file, status, rows_parsed, rows_loaded, ...
#: Seconds one statement may take, the connector's own retries of its requests included. The
#: connector's default is no limit: a lost network made a load retry forever instead of failing.
NETWORK_TIMEOUT = 900
#: snowflake-connector ``errno`` values that mean the connection failed, not the statement:
#: could not connect (250001), connection closed (250002), request failed (250003), timeout (251011).
CONNECTION_ERRNOS = frozenset({250001, 250002, 250003, 251011})
UPLOAD_FAILED = 253003


def is_connection_loss(exc: BaseException) -> bool:
    """Whether a snowflake-connector error means Snowflake was unreachable (worth another try).

    Connection failures and the HTTP answers of an overloaded or restarting service are;
    a SQL error, a rejected login or a TLS certificate problem is not.
    """
    from snowflake.connector import errors as sf

    if isinstance(exc, (sf.NonRetryableTlsError, sf.RevocationCheckError)):
        return False
    overloaded = (
        sf.InternalServerError, sf.ServiceUnavailableError, sf.GatewayTimeoutError, sf.BadGatewayError,
        sf.RequestTimeoutError, sf.TooManyRequests, sf.OtherHTTPRetryableError, sf.RequestExceedMaxRetryError,
    )
    if isinstance(exc, overloaded):
        return True
    if not isinstance(exc, sf.OperationalError):
        return False
    code = getattr(exc, "errno", None)
    # a PUT whose uploads failed on every one of the file transfer's own retries
    return code in CONNECTION_ERRNOS or (code == UPLOAD_FAILED and "exceeding maximum retries" in str(exc))


@contextmanager
def reporting_connection_loss(where: str) -> Iterator[None]:
    """Turn a lost Snowflake connection inside the block into :class:`SnowflakeUnreachable`.

    Parameters
    ----------
    where : str
        Which Snowflake, for the message (the connector block's name, the host).

    Raises
    ------
    SnowflakeUnreachable
        Naming Snowflake, ``where`` and what to check.
    """
    try:
        yield
    except Exception as exc:
        if not is_connection_loss(exc):
            raise
        msg = (
            f"could not reach Snowflake, or lost the connection to it ({where}): {exc}. Check that this worker reaches Snowflake "
            "(network, proxy, firewall), the account and host in that SnowflakeConnector block, and Snowflake's "
            "status page; then run build-warehouse again: it loads the batches this one did not record as built"
        )
        raise SnowflakeUnreachable(msg) from exc


@contextmanager
def snowflake_session(connector: Any, connect_kwargs: dict[str, Any]) -> Iterator[Any]:
    """An open connection of a prefect-snowflake ``SnowflakeConnector`` block, closed afterwards.

    A lost connection, on connect or inside the block, raises :class:`SnowflakeUnreachable`
    naming the block; closing is best effort (a lost session cannot be closed).
    """
    name = getattr(connector, "_block_document_name", None) or "unsaved"
    host = connect_kwargs.get("host") or f"{connector.credentials.account}.snowflakecomputing.com"
    where = f"SnowflakeConnector block {name!r}, host {host}"
    kwargs = {"network_timeout": NETWORK_TIMEOUT, **connect_kwargs}
    with reporting_connection_loss(where):
        connection = connector.get_connection(**kwargs)
        try:
            yield connection
        finally:
            try:
                connection.close()
            except Exception:  # noqa: BLE001 - the session is gone with the connection
                pass


def snowflake_type(dtype: pl.DataType) -> str:
    """Snowflake column type of a raw table's polars type (lists become VARIANT arrays)."""
    if isinstance(dtype, pl.List):
        return "variant"
    if isinstance(dtype, pl.Datetime):
        return "timestamp_tz" if dtype.time_zone else "timestamp_ntz"
    simple = {pl.Utf8: "varchar", pl.Int64: "integer", pl.Int32: "integer", pl.Float64: "float", pl.Boolean: "boolean", pl.Date: "date"}
    for known, name in simple.items():
        if dtype == known:
            return name
    msg = f"no Snowflake type for the raw column type {dtype}; add it to tasks/warehouse/snowflake.py snowflake_type"
    raise WarehouseError(msg)


def create_table_sql(schema: str, table: str, columns: dict[str, pl.DataType]) -> str:
    """``create table if not exists`` for a raw table; columns unquoted in Snowflake's sense (upper case)."""
    cols = ",\n    ".join(f'"{name.upper()}" {snowflake_type(dtype)}' for name, dtype in columns.items())
    return f"create table if not exists {schema}.{table} (\n    {cols}\n)"


def _execute(cursor: Any, sql: str) -> list[tuple]:
    cursor.execute(sql)
    try:
        return cursor.fetchall()
    except Exception:  # statements without a result set
        return []


def load_raw_batches(
    connection: Any,
    lake: Path,
    plan: BuildPlan,
    *,
    schema: str = RAW_SCHEMA,
    stage: str = LAKE_STAGE,
) -> dict[str, int]:
    """Load the batches of a build plan into ``<schema>.<table>``: delete their rows, then insert them.

    Loading by batch makes a load idempotent whatever Snowflake's COPY load history says:
    a batch loaded again (a retried build, a batch rewritten by a re-run) replaces its
    rows, never doubles them; a full refresh empties the tables first.

    Parameters
    ----------
    connection
        An open snowflake-connector connection, its database selected.
    lake : Path
        Lake root; the plan's paths are relative to it.
    plan : BuildPlan
        The files to load (tasks/warehouse/increments.py).
    schema, stage : str
        Target schema and the internal stage the files are put on (created if missing).

    Returns
    -------
    dict
        Rows loaded per table.

    Raises
    ------
    WarehouseError
        If Snowflake rejects a file (the COPY result names it).
    """
    cursor = connection.cursor()
    tag = uuid.uuid4().hex[:12]  # a fresh stage folder per load: COPY sees only this load's files
    try:
        _execute(cursor, f"create schema if not exists {schema}")
        _execute(cursor, f"create stage if not exists {schema}.{stage} file_format = (type = parquet)")
        loaded: dict[str, int] = {}
        for name in ALL_TABLES:
            _execute(cursor, create_table_sql(schema, name, ALL_TABLES[name].schema))
            files = [f for f in plan.files if f.table == name]
            if plan.full_refresh:
                _execute(cursor, f"delete from {schema}.{name}")
            elif plan.batches:
                ids = ", ".join(f"'{b}'" for b in sorted(plan.batches))
                _execute(cursor, f'delete from {schema}.{name} where "BATCH_ID" in ({ids})')
            if not files:
                loaded[name] = 0
                continue
            target = f"@{schema}.{stage}/{tag}/{name}/"
            for folder, batch in sorted({(str(Path(f.path).parent), f.batch_id) for f in files}):
                partition = Path(folder).name.replace("=", "_")
                _execute(cursor, f"put 'file://{(lake / folder).resolve()}/*-{batch}.parquet' {target}{partition}/ auto_compress = false overwrite = true")
            result = _execute(
                cursor,
                f"copy into {schema}.{name} from {target} "
                "file_format = (type = parquet) match_by_column_name = case_insensitive on_error = abort_statement force = true",
            )
            failed = [row for row in result if str(row[1]).upper() not in ("LOADED", "LOAD_SKIPPED")]
            if failed:
                msg = f"Snowflake could not load {len(failed)} file(s) of raw table {name!r}: {failed[0][0]} ({failed[0][1]}); check the file's schema against tasks/dicom/entities.py"
                raise WarehouseError(msg)
            loaded[name] = sum(int(row[ROWS_LOADED] or 0) for row in result if str(row[1]).upper() == "LOADED")
            try:
                _execute(cursor, f"remove {target}")
            except Exception:  # noqa: BLE001 - best effort; fakesnow has no REMOVE
                pass
        return loaded
    finally:
        cursor.close()


def read_loaded_files_snowflake(connection: Any, *, schema: str = INTERNAL_SCHEMA) -> set[tuple[str, str]]:
    """``(path, version)`` of every lake file the Snowflake warehouse was built from."""
    cursor = connection.cursor()
    try:
        _execute(cursor, f"create schema if not exists {schema}")
        _execute(cursor, f"create table if not exists {schema}.loaded_files ({_FILES_COLUMNS}, loaded_at timestamp_tz)")
        return {(r[0], r[1]) for r in _execute(cursor, f"select path, version from {schema}.loaded_files")}
    finally:
        cursor.close()


_FILES_COLUMNS = "table_name varchar, path varchar, batch_id varchar, version varchar"


def write_build_files_snowflake(connection: Any, files: Sequence[LakeFile], *, schema: str = INTERNAL_SCHEMA) -> int:
    """Replace ``<schema>.build_files`` with the files this build reads (the stage models filter on their batches)."""
    cursor = connection.cursor()
    try:
        _execute(cursor, f"create schema if not exists {schema}")
        _execute(cursor, f"create or replace table {schema}.build_files ({_FILES_COLUMNS})")
        _insert_files(cursor, f"{schema}.build_files", files, extra=())
        return len(files)
    finally:
        cursor.close()


def record_loaded_files_snowflake(connection: Any, plan: BuildPlan, *, schema: str = INTERNAL_SCHEMA) -> int:
    """Record a successful build's files in ``<schema>.loaded_files`` (a full refresh replaces it)."""
    cursor = connection.cursor()
    try:
        if plan.full_refresh:
            _execute(cursor, f"delete from {schema}.loaded_files")
        elif plan.batches:
            ids = ", ".join(f"'{b}'" for b in sorted(plan.batches))
            _execute(cursor, f"delete from {schema}.loaded_files where batch_id in ({ids})")
        _insert_files(cursor, f"{schema}.loaded_files", plan.files, extra=(datetime.now(UTC),))
        return len(plan.files)
    finally:
        cursor.close()


def _insert_files(cursor: Any, table: str, files: Sequence[LakeFile], *, extra: tuple) -> None:
    rows = [(f.table, f.path, f.batch_id, f.version, *extra) for f in files]
    marks = ", ".join(["%s"] * (4 + len(extra)))
    for start in range(0, len(rows), 1000):
        cursor.executemany(f"insert into {table} values ({marks})", rows[start : start + 1000])


def write_pseudonyms_snowflake(
    connection: Any, table: pa.Table, *, schema: str = INTERNAL_SCHEMA, stage: str = DEID_STAGE, replace: bool = True
) -> int:
    """Write ``<schema>.deid_pseudonyms``; the staged copy is removed afterwards.

    Parameters
    ----------
    replace : bool
        Replace the map (a full refresh); otherwise add the identifiers it lacks.

    Returns
    -------
    int
        Rows added to the map.
    """
    cursor = connection.cursor()
    try:
        _execute(cursor, f"create schema if not exists {schema}")
        _execute(cursor, f"create stage if not exists {schema}.{stage} file_format = (type = parquet)")
        columns = "(original varchar, pseudonym varchar, pseudo_uid varchar, date_offset_days integer)"
        _execute(cursor, f"create {'or replace' if replace else ''} table {'' if replace else 'if not exists'} {schema}.deid_pseudonyms {columns}")
        _execute(cursor, f"create or replace transient table {schema}.deid_pseudonyms_new {columns}")
        with tempfile.TemporaryDirectory(prefix="deid-") as tmp:
            path = Path(tmp) / "deid_pseudonyms.parquet"
            pq.write_table(table, path)
            _execute(cursor, f"put 'file://{path}' @{schema}.{stage}/ auto_compress = false overwrite = true")
        try:
            _execute(
                cursor,
                f"copy into {schema}.deid_pseudonyms_new from @{schema}.{stage}/deid_pseudonyms.parquet "
                "file_format = (type = parquet) match_by_column_name = case_insensitive force = true",
            )
            added = _execute(
                cursor,
                f"insert into {schema}.deid_pseudonyms select * from {schema}.deid_pseudonyms_new "
                f"where original not in (select original from {schema}.deid_pseudonyms)",
            )
        finally:
            # the staged file maps identifiers to pseudonyms: do not leave it lying around
            try:
                _execute(cursor, f"remove @{schema}.{stage}/deid_pseudonyms.parquet")
            except Exception:  # noqa: BLE001 - best effort; fakesnow has no REMOVE
                pass
            _execute(cursor, f"drop table if exists {schema}.deid_pseudonyms_new")
        return int(added[0][0]) if added and added[0] else table.num_rows
    finally:
        cursor.close()
