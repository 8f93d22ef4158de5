"""The warehouse's tasks before dbt runs: the pseudonym map, and the Snowflake load."""

from __future__ import annotations

from pathlib import Path

from prefect import task
from prefect.cache_policies import NO_CACHE
from prefect.logging import get_run_logger

from tasks.lake.files import disk_full_reported
from tasks.retries import IO_RETRIES, SNOWFLAKE_RETRIES


@task(name="write-pseudonym-map", cache_policy=NO_CACHE, **IO_RETRIES)
def write_pseudonym_map(lake: str, warehouse: str, secret: str) -> int:
    """Compute the pseudonym map of the lake and write it beside the DuckDB warehouse."""
    from tasks.warehouse.pseudonyms import collect_identifiers, pseudonym_table, read_rules, write_pseudonyms_duckdb

    from tasks.warehouse.dbt import deid_database

    table = pseudonym_table(collect_identifiers(lake, read_rules()), secret)
    with disk_full_reported(Path(warehouse).parent):
        rows = write_pseudonyms_duckdb(deid_database(warehouse), table)
    get_run_logger().info("Pseudonym map: %d identifiers", rows)
    return rows


@task(name="load-snowflake", cache_policy=NO_CACHE, **SNOWFLAKE_RETRIES)
def load_snowflake(connector, lake: str, secret: str, connect_kwargs: dict) -> dict[str, int]:  # noqa: ANN001 - a SnowflakeConnector block
    """Load the lake's raw tables and the pseudonym map into Snowflake (PUT + COPY INTO)."""
    from tasks.warehouse.pseudonyms import collect_identifiers, pseudonym_table, read_rules
    from tasks.warehouse.snowflake import load_raw_tables, snowflake_session, write_pseudonyms_snowflake

    table = pseudonym_table(collect_identifiers(lake, read_rules()), secret)
    with snowflake_session(connector, connect_kwargs) as connection:
        loaded = load_raw_tables(connection, Path(lake))
        loaded["deid_pseudonyms"] = write_pseudonyms_snowflake(connection, table)
    get_run_logger().info("Loaded into Snowflake: %s", loaded)
    return loaded
