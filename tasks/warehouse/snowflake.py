"""Load the lake's raw Parquet tables (and the pseudonym map) into Snowflake.

The Snowflake way: ``PUT`` the Parquet files onto an internal stage, then
``COPY INTO <table> ... MATCH_BY_COLUMN_NAME = CASE_INSENSITIVE``. COPY keeps a load
history per staged file, so a re-run loads only files it has not loaded yet; the stage
models deduplicate by key in any case, so a file loaded twice never duplicates a
processed row. Every function takes an open DB-API connection (snowflake-connector's, as
prefect-snowflake's ``SnowflakeConnector.get_connection()`` returns it), so they run the
same against Snowflake and against fakesnow's server.
"""

from __future__ import annotations

import tempfile
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import polars as pl
import pyarrow as pa
import pyarrow.parquet as pq

from tasks.dicom.entities import ALL_TABLES
from tasks.errors import SnowflakeUnreachable, WarehouseError
from tasks.lake.storage import TABLES_ZONE

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
            "status page; then run build-warehouse again: files already loaded are skipped (COPY load history)"
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


def _partitions(lake: Path, table: str) -> list[Path]:
    """Folders of a raw table that hold Parquet files (its ingest_date partitions)."""
    root = lake / TABLES_ZONE / table
    return sorted({p.parent for p in root.glob("**/*.parquet") if not p.name.startswith("_")})


def _execute(cursor: Any, sql: str) -> list[tuple]:
    cursor.execute(sql)
    try:
        return cursor.fetchall()
    except Exception:  # statements without a result set
        return []


def load_raw_tables(
    connection: Any,
    lake: Path,
    *,
    schema: str = RAW_SCHEMA,
    stage: str = LAKE_STAGE,
    tables: tuple[str, ...] | None = None,
) -> dict[str, int]:
    """Load every raw table of a local lake into ``<schema>.<table>``; return rows loaded now.

    Parameters
    ----------
    connection
        An open snowflake-connector connection, its database selected.
    lake : Path
        Lake root; files are read from ``tables/<table>/ingest_date=*/``.
    schema, stage : str
        Target schema and the internal stage the files are put on (created if missing).
    tables : tuple of str, optional
        Raw tables to load; every table of the lake by default.

    Returns
    -------
    dict
        Rows loaded by this call per table (0 for files loaded before).

    Raises
    ------
    WarehouseError
        If Snowflake rejects a file (the COPY result names it).
    """
    cursor = connection.cursor()
    try:
        _execute(cursor, f"create schema if not exists {schema}")
        _execute(cursor, f"create stage if not exists {schema}.{stage} file_format = (type = parquet)")
        loaded: dict[str, int] = {}
        for name in tables or tuple(ALL_TABLES):
            _execute(cursor, create_table_sql(schema, name, ALL_TABLES[name].schema))
            partitions = _partitions(lake, name)
            for folder in partitions:
                target = f"@{schema}.{stage}/{name}/{folder.name.replace('=', '_')}/"
                _execute(cursor, f"put 'file://{folder.resolve()}/*.parquet' {target} auto_compress = false overwrite = true")
            if not partitions:
                loaded[name] = 0
                continue
            result = _execute(
                cursor,
                f"copy into {schema}.{name} from @{schema}.{stage}/{name}/ "
                "file_format = (type = parquet) match_by_column_name = case_insensitive on_error = abort_statement",
            )
            failed = [row for row in result if str(row[1]).upper() not in ("LOADED", "LOAD_SKIPPED")]
            if failed:
                msg = f"Snowflake could not load {len(failed)} file(s) of raw table {name!r}: {failed[0][0]} ({failed[0][1]}); check the file's schema against tasks/dicom/entities.py"
                raise WarehouseError(msg)
            loaded[name] = sum(int(row[ROWS_LOADED] or 0) for row in result if str(row[1]).upper() == "LOADED")
        return loaded
    finally:
        cursor.close()


def write_pseudonyms_snowflake(
    connection: Any, table: pa.Table, *, schema: str = INTERNAL_SCHEMA, stage: str = DEID_STAGE
) -> int:
    """Replace ``<schema>.deid_pseudonyms`` with ``table``; the staged copy is removed afterwards.

    Returns
    -------
    int
        Rows in the map.
    """
    cursor = connection.cursor()
    try:
        _execute(cursor, f"create schema if not exists {schema}")
        _execute(cursor, f"create stage if not exists {schema}.{stage} file_format = (type = parquet)")
        _execute(
            cursor,
            f"create or replace table {schema}.deid_pseudonyms "
            "(original varchar, pseudonym varchar, pseudo_uid varchar, date_offset_days integer)",
        )
        with tempfile.TemporaryDirectory(prefix="deid-") as tmp:
            path = Path(tmp) / "deid_pseudonyms.parquet"
            pq.write_table(table, path)
            _execute(cursor, f"put 'file://{path}' @{schema}.{stage}/ auto_compress = false overwrite = true")
        try:
            _execute(
                cursor,
                f"copy into {schema}.deid_pseudonyms from @{schema}.{stage}/deid_pseudonyms.parquet "
                "file_format = (type = parquet) match_by_column_name = case_insensitive force = true",
            )
        finally:
            # the staged file maps identifiers to pseudonyms: do not leave it lying around
            try:
                _execute(cursor, f"remove @{schema}.{stage}/deid_pseudonyms.parquet")
            except Exception:  # noqa: BLE001 - best effort; fakesnow has no REMOVE
                pass
        return table.num_rows
    finally:
        cursor.close()
