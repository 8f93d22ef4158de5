"""The warehouse's tasks around dbt: what to build, the pseudonym map, the Snowflake load, the record of a build."""

from __future__ import annotations

import logging
from pathlib import Path
from typing import Any

from prefect import task
from prefect.cache_policies import NO_CACHE
from prefect.logging import get_run_logger

from tasks.lake.files import disk_full_reported
from tasks.retries import IO_RETRIES, SNOWFLAKE_RETRIES
from tasks.warehouse.dbt import DbtOutcome
from tasks.warehouse.increments import BuildPlan


def _files_per_table(plan: BuildPlan) -> dict[str, list[str]] | None:
    if plan.full_refresh:
        return None  # every file of the lake
    out: dict[str, list[str]] = {}
    for f in plan.files:
        out.setdefault(f.table, []).append(f.path)
    return out


@task(name="plan-warehouse-build", cache_policy=NO_CACHE, **IO_RETRIES)
def plan_warehouse_build(lake: str, warehouse: str, *, full_refresh: bool = False) -> BuildPlan:
    """The lake's batches the DuckDB warehouse has not been built from; written to internal.build_files."""
    from tasks.dicom.entities import ALL_TABLES
    from tasks.warehouse.increments import list_lake_files, plan_build, read_loaded_files, write_build_files

    loaded = set() if full_refresh else read_loaded_files(Path(warehouse))
    plan = plan_build(list_lake_files(lake), loaded, full_refresh=full_refresh)
    if not plan.is_empty:
        with disk_full_reported(Path(warehouse).parent):
            write_build_files(Path(warehouse), plan, ALL_TABLES)
    get_run_logger().info("Build plan: %d batches, %d files%s", len(plan.batches), len(plan.files), " (full refresh)" if full_refresh else "")
    return plan


@task(name="record-warehouse-build", cache_policy=NO_CACHE, **IO_RETRIES)
def record_warehouse_build(warehouse: str, plan: BuildPlan) -> int:
    """Record the files a successful DuckDB build read, so the next build skips them."""
    from tasks.warehouse.increments import record_loaded_files

    return record_loaded_files(Path(warehouse), plan)


@task(name="write-pseudonym-map", cache_policy=NO_CACHE, **IO_RETRIES)
def write_pseudonym_map(lake: str, warehouse: str, secret: str, plan: BuildPlan) -> int:
    """Add the identifiers of the build's batches to the pseudonym map beside the DuckDB warehouse (a full refresh rewrites it)."""
    from tasks.warehouse.dbt import deid_database
    from tasks.warehouse.pseudonyms import collect_identifiers, pseudonym_table, read_rules, write_pseudonyms_duckdb

    table = pseudonym_table(collect_identifiers(lake, read_rules(), _files_per_table(plan)), secret)
    with disk_full_reported(Path(warehouse).parent):
        rows = write_pseudonyms_duckdb(deid_database(warehouse), table, replace=plan.full_refresh)
    get_run_logger().info("Pseudonym map: %d identifiers added", rows)
    return rows


@task(name="load-snowflake", cache_policy=NO_CACHE, **SNOWFLAKE_RETRIES)
def load_snowflake(connector, lake: str, secret: str, connect_kwargs: dict, *, full_refresh: bool = False) -> BuildPlan:  # noqa: ANN001 - a SnowflakeConnector block
    """Load the batches Snowflake lacks into RAW (by batch: delete, then insert) and their identifiers into the map."""
    from tasks.dicom.entities import ALL_TABLES
    from tasks.warehouse.increments import list_lake_files, plan_build, schema_files
    from tasks.warehouse.pseudonyms import collect_identifiers, pseudonym_table, read_rules
    from tasks.warehouse.snowflake import (
        load_raw_batches,
        read_loaded_files_snowflake,
        snowflake_session,
        write_build_files_snowflake,
        write_pseudonyms_snowflake,
    )

    with snowflake_session(connector, connect_kwargs) as connection:
        loaded_before = set() if full_refresh else read_loaded_files_snowflake(connection)
        plan = plan_build(list_lake_files(lake), loaded_before, full_refresh=full_refresh)
        if plan.is_empty:
            return plan
        loaded = load_raw_batches(connection, Path(lake), plan)
        write_build_files_snowflake(connection, [*plan.files, *schema_files(ALL_TABLES)])
        table = pseudonym_table(collect_identifiers(lake, read_rules(), _files_per_table(plan)), secret)
        loaded["deid_pseudonyms"] = write_pseudonyms_snowflake(connection, table, replace=full_refresh)
    get_run_logger().info("Loaded into Snowflake (%d batches): %s", len(plan.batches), loaded)
    return plan


@task(name="record-snowflake-build", cache_policy=NO_CACHE, **SNOWFLAKE_RETRIES)
def record_snowflake_build(connector, connect_kwargs: dict, plan: BuildPlan) -> int:  # noqa: ANN001 - a SnowflakeConnector block
    """Record the files a successful Snowflake build loaded, so the next build skips them."""
    from tasks.warehouse.snowflake import record_loaded_files_snowflake, snowflake_session

    with snowflake_session(connector, connect_kwargs) as connection:
        return record_loaded_files_snowflake(connection, plan)


@task(name="dbt", cache_policy=NO_CACHE)
def run_dbt(args: list[str], settings: Any, *, project_dir: Path, target_path: Path) -> DbtOutcome:  # noqa: ANN401 - prefect-dbt settings
    """One ``dbt`` invocation as one task run: dbt's messages in its logs, one row per model and test in an artifact.

    Not retried: a failed model or test is data to fix, not a transient error.
    """
    from prefect.artifacts import create_table_artifact

    from tasks.warehouse.dbt import dbt_outcome, invoke_dbt

    logger = get_run_logger()
    levels = {"info": logging.INFO, "warn": logging.WARNING, "error": logging.ERROR}
    with settings.resolve_profiles_yml() as profiles_dir:
        result = invoke_dbt(
            args, project_dir=project_dir, profiles_dir=profiles_dir, target_path=target_path,
            on_log=lambda level, msg: logger.log(levels[level], "%s", msg),
        )
    outcome = dbt_outcome(result)
    if outcome.nodes:
        create_table_artifact(outcome.nodes, key="dbt-nodes", description=f"dbt {args[0]}: status and seconds of each model and test")
    return outcome
