"""The pseudonym map: every identifier a de-identification rule replaces, and its pseudonym.

The rules are data: ``dbt_project/seeds/internal_anonymization_rules.csv`` (one row per
entity and column, with a DICOM PS3.15 Annex E action). Columns whose action is ``D``
(replace with a dummy: here a keyed pseudonym) or ``U`` (replace the UID) are read from
the lake's raw tables, and each distinct value gets

- ``pseudonym``: HMAC-SHA256(secret, value) in hex (``tasks.deid.pseudonym``, the same
  function that names the preview files, so previews join the processed rows);
- ``pseudo_uid``: the valid ``2.25.`` UID derived from it (``tasks.deid.pseudo_uid``);
- ``date_offset_days``: 1..365 days, used when the value is a patient key to shift that
  patient's dates (Retain Longitudinal Temporal Information with Modified Dates).

The map is loaded into ``internal.deid_pseudonyms`` before dbt runs (DuckDB: in its own
file beside the warehouse, attached read-only; Snowflake: the target database); the
processed models join it. The secret therefore never reaches dbt (nor its logs, nor its compiled SQL), and
DuckDB and Snowflake get byte-identical pseudonyms.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from pathlib import Path

import duckdb
import pyarrow as pa

from tasks.deid import (  # noqa: F401 - the rules and offsets live beside the pseudonyms; re-exported
    ANNEX_E_ACTIONS,
    MAX_DATE_OFFSET_DAYS,
    PSEUDONYMIZING_ACTIONS,
    RULES_SEED,
    Rule,
    date_offset_days,
    pseudonym,
    read_rules,
)

#: Identifiers derived in the stage layer from several raw columns (see stg_patients.sql).
DERIVED_KEYS = {"patient_key": "coalesce(\"PatientID\", '') || '^' || coalesce(\"IssuerOfPatientID\", '')"}

PSEUDONYM_SCHEMA = pa.schema(
    [
        ("original", pa.string()),
        ("pseudonym", pa.string()),
        ("pseudo_uid", pa.string()),
        ("date_offset_days", pa.int32()),
    ]
)


def identifier_columns(rules: list[Rule]) -> dict[str, list[str]]:
    """Raw columns (or derived keys) per entity whose values need a pseudonym."""
    out: dict[str, list[str]] = {}
    for rule in rules:
        if rule.action in PSEUDONYMIZING_ACTIONS:
            out.setdefault(rule.entity, []).append(rule.column)
    # previews are named by the image pseudonym and joined through the map as well
    return out


def collect_identifiers(lake: str, rules: list[Rule], files: Mapping[str, Sequence[str]] | None = None) -> list[str]:
    """Distinct values of every pseudonymized column in the lake's raw tables.

    Parameters
    ----------
    lake : str
        Lake root, a folder or ``s3://bucket/prefix`` (read through s3fs, which takes the
        endpoint and credentials from the standard AWS environment, as dbt-duckdb does);
        tables are read from ``tables/<entity>/**/*.parquet``.
    rules : list of Rule
    files : mapping of str to sequence of str, optional
        Only these files per entity (paths relative to the lake root): the batches of an
        incremental build. Every file of the lake if None.

    Returns
    -------
    list of str
        Sorted, without nulls and empty strings.
    """
    root = lake.rstrip("/") if "://" in lake else str(Path(lake))
    selects = []
    for entity, columns in identifier_columns(rules).items():
        if files is None:
            source = f"read_parquet('{root}/tables/{entity}/**/*.parquet', union_by_name = true)"
        else:
            paths = [f"{root}/{p}" for p in files.get(entity, ())]
            if not paths:
                continue
            source = f"read_parquet([{', '.join(_sql_string(p) for p in paths)}], union_by_name = true)"
        for column in columns:
            expr = DERIVED_KEYS.get(column, f'"{column}"')
            selects.append(f"select cast({expr} as varchar) as v from {source}")
    if not selects:
        return []
    sql = f"select distinct v from ({' union all '.join(selects)}) where v is not null and trim(v) <> '' order by v"
    with duckdb.connect() as con:
        if lake.startswith("s3://"):  # DuckDB's httpfs cannot be installed offline: fsspec instead
            import s3fs

            con.register_filesystem(s3fs.S3FileSystem(skip_instance_cache=True, use_listings_cache=False))
        return [row[0] for row in con.execute(sql).fetchall()]


def _sql_string(value: str) -> str:
    return "'" + value.replace("'", "''") + "'"


def pseudonym_table(values: list[str], secret: str) -> pa.Table:
    """The pseudonym map of ``values`` under ``secret``.

    Parameters
    ----------
    values : list of str
        Identifiers as written in the raw tables.
    secret : str
        The de-identification key. Same values and key give the same table, in every run.

    Returns
    -------
    pyarrow.Table
        Columns ``original``, ``pseudonym``, ``pseudo_uid``, ``date_offset_days``.
    """
    hexes = [pseudonym(v, secret) for v in values]
    return pa.table(
        {
            "original": values,
            "pseudonym": hexes,
            "pseudo_uid": [f"2.25.{int(h[:32], 16)}" for h in hexes],
            "date_offset_days": [date_offset_days(h) for h in hexes],
        },
        schema=PSEUDONYM_SCHEMA,
    )


def write_pseudonyms_duckdb(database: Path, table: pa.Table, *, schema: str = "internal", replace: bool = True) -> int:
    """Write ``<schema>.deid_pseudonyms`` in a DuckDB file (the map's own file); return the rows added.

    Parameters
    ----------
    database : Path
    table : pyarrow.Table
        Rows of :func:`pseudonym_table`.
    replace : bool
        Replace the map (a full refresh); otherwise add the identifiers it lacks, so an
        increment costs what it adds.
    """
    database.parent.mkdir(parents=True, exist_ok=True)
    with duckdb.connect(str(database)) as con:
        con.execute(f"create schema if not exists {schema}")
        con.register("pseudonyms_arrow", table)
        if replace:
            con.execute(f"create or replace table {schema}.deid_pseudonyms as select * from pseudonyms_arrow")
            added = table.num_rows
        else:
            con.execute(f"create table if not exists {schema}.deid_pseudonyms as select * from pseudonyms_arrow limit 0")
            added = con.execute(
                f"insert into {schema}.deid_pseudonyms select * from pseudonyms_arrow "
                f"where original not in (select original from {schema}.deid_pseudonyms)"
            ).fetchone()[0]
        con.unregister("pseudonyms_arrow")
    return added
