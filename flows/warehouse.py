"""The dbt subflow: build the typed and de-identified warehouse from what arrived in the lake.

Incremental (tasks/warehouse/increments.py): a build reads the batches the warehouse has
not been built from; with nothing new it ends before dbt or the pseudonym map is touched,
and before dbt is even imported. ``full_refresh`` rebuilds everything from the lake.
"""

from __future__ import annotations

import time
from pathlib import Path
from typing import Any

from prefect import flow
from prefect.logging import get_run_logger

from blocks.settings import PipelineConfig, resolve_config, temporary_environment
from flows.reporting import StepTimes
from tasks.compat import close_dbt_duckdb, end_flow_runs_promptly
from tasks.errors import WarehouseError
from tasks.warehouse.increments import check_lake_key
from tasks.warehouse.tasks import (
    load_snowflake,
    plan_warehouse_build,
    record_snowflake_build,
    record_warehouse_build,
    run_dbt,
    write_pseudonym_map,
)
from tasks.warehouse.dbt import (
    DBT_PROJECT_DIR,
    PROFILE_SNOWFLAKE_BLOCK,
    count_rows,
    count_rows_snowflake,
    DbtOutcome,
    dbt_environment,
    dbt_failure_message,
    dbt_outcome,
    dbt_target_dir,
    remove_compiled_sql,
    select_profile_target,
)

end_flow_runs_promptly()  # each flow run ends as soon as it is final (tasks/compat.py)


def _dbt_settings(**kwargs: Any) -> Any:
    """prefect-dbt settings that hand dbt only the chosen target of profiles.yml (dbt imported here, when a build needs it)."""
    from prefect_dbt import PrefectDbtSettings

    class TargetDbtSettings(PrefectDbtSettings):
        dbt_target: str = "duckdb"
        snowflake_block: str = PROFILE_SNOWFLAKE_BLOCK

        def load_profiles_yml(self) -> dict[str, Any]:
            """profiles.yml with the unused output dropped and the block names of this environment."""
            return select_profile_target(super().load_profiles_yml(), target=self.dbt_target, snowflake_block=self.snowflake_block)

    return TargetDbtSettings(**kwargs)


@flow(name="build-warehouse", log_prints=True)
def build_warehouse(
    lake: str | None = None,
    warehouse: str | None = None,
    settings_block: str | None = None,
    command: str = "build",
    full_refresh: bool = False,
    config: PipelineConfig | None = None,
) -> dict[str, int]:
    """Build the warehouse from the lake's batches that arrived since the last build (every batch with full_refresh)."""
    logger = get_run_logger()
    steps = StepTimes()
    with steps("configuration"):
        config = resolve_config(settings_block, base=config, lake=lake, warehouse=warehouse)
        check_lake_key(config.lake, config.secret)
    connector = None
    if config.dbt_target == "snowflake":
        from prefect_snowflake import SnowflakeConnector

        with steps("plan and Snowflake load"):
            connector = SnowflakeConnector.load(config.snowflake_connector_block)
            plan = load_snowflake(connector, config.lake, config.secret, config.snowflake_connect, full_refresh=full_refresh)
    else:
        with steps("plan"):
            plan = plan_warehouse_build(config.lake, config.warehouse, full_refresh=full_refresh)
    if plan.is_empty:
        logger.info("Nothing new since the last build: no batch arrived in %s; no dbt run, no pseudonym map", config.lake)
        counts = _count(config, connector)
        logger.info("Warehouse unchanged (%s)", steps.line())
        return counts
    if connector is None:
        with steps("pseudonym map"):
            write_pseudonym_map(config.lake, config.warehouse, config.secret, plan)
    result = _run_dbt(config, command, full_refresh=full_refresh, steps=steps)
    if not result.success:
        where = config.warehouse if connector is None else f"Snowflake ({config.snowflake_connector_block})"
        raise WarehouseError(dbt_failure_message(result, command, where))
    with steps("record build"):
        if connector is None:
            record_warehouse_build(config.warehouse, plan)
        else:
            record_snowflake_build(connector, config.snowflake_connect, plan)
    with steps("count rows"):
        counts = _count(config, connector)
    logger.info("Warehouse built from %d batches: %s", len(plan.batches), counts)
    logger.info("Build steps: %s", steps.line())
    steps.report(key="warehouse-build-steps", description="Wall time of each step of the warehouse build")
    return counts


def _run_dbt(config: PipelineConfig, command: str, *, full_refresh: bool, steps: StepTimes) -> DbtOutcome:
    """``dbt <command>`` in one task (or prefect-dbt's task per model and test); dbt's parse and execution timed apart."""
    start = time.perf_counter()
    import dbt.cli.main  # noqa: F401 - seconds of imports: only when there is something to build

    steps.add("import dbt", time.perf_counter() - start)
    env = dbt_environment(
        lake=config.lake,
        warehouse=config.warehouse,
        target=config.dbt_target,
        snowflake_host=config.snowflake_host,
        snowflake_port=config.snowflake_port,
        snowflake_protocol=config.snowflake_protocol,
    )
    target_dir = dbt_target_dir(config.warehouse, target=config.dbt_target, snowflake_block=config.snowflake_connector_block)
    settings = _dbt_settings(
        project_dir=DBT_PROJECT_DIR,
        profiles_dir=DBT_PROJECT_DIR,
        target_path=target_dir,
        dbt_target=config.dbt_target,
        snowflake_block=config.snowflake_connector_block,
    )
    args = [command, *(["--full-refresh"] if full_refresh else [])]
    start = time.perf_counter()
    with temporary_environment(env):
        try:
            if config.dbt_node_tasks:  # a task run per model and test: ~10 s of API work per build
                from prefect_dbt import PrefectDbtRunner

                result = dbt_outcome(PrefectDbtRunner(settings=settings, raise_on_failure=False).invoke(args))
            else:
                result = run_dbt(args, settings, project_dir=DBT_PROJECT_DIR, target_path=target_dir)
        finally:
            close_dbt_duckdb()
            remove_compiled_sql(target_dir)
    total = time.perf_counter() - start
    executed = result.elapsed
    steps.add("dbt parse and start", max(0.0, total - executed))
    steps.add(f"dbt {command} (models and tests)", executed)
    return result


def _count(config: PipelineConfig, connector: Any) -> dict[str, int]:  # noqa: ANN401 - a SnowflakeConnector block
    if connector is None:
        return count_rows(Path(config.warehouse)) if Path(config.warehouse).exists() else {}
    from tasks.warehouse.snowflake import snowflake_session

    with snowflake_session(connector, config.snowflake_connect) as connection:
        return count_rows_snowflake(connection)
