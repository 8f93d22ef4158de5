"""The dbt subflow: build the typed and de-identified warehouse from the lake."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from prefect import flow
from prefect.logging import get_run_logger
from prefect_dbt import PrefectDbtRunner, PrefectDbtSettings

from blocks.settings import PipelineConfig, resolve_config, temporary_environment
from tasks.compat import close_dbt_duckdb
from tasks.errors import WarehouseError
from tasks.warehouse.tasks import load_snowflake, write_pseudonym_map
from tasks.warehouse.snowflake import snowflake_session
from tasks.warehouse.dbt import (
    DBT_PROJECT_DIR,
    PROFILE_SNOWFLAKE_BLOCK,
    count_rows,
    count_rows_snowflake,
    dbt_environment,
    remove_compiled_sql,
    select_profile_target,
)


class TargetDbtSettings(PrefectDbtSettings):
    """prefect-dbt settings that hand dbt only the chosen target of profiles.yml."""

    dbt_target: str = "duckdb"
    snowflake_block: str = PROFILE_SNOWFLAKE_BLOCK

    def load_profiles_yml(self) -> dict[str, Any]:
        """profiles.yml with the unused output dropped and the block names of this environment."""
        return select_profile_target(super().load_profiles_yml(), target=self.dbt_target, snowflake_block=self.snowflake_block)


@flow(name="build-warehouse", log_prints=True)
def build_warehouse(
    lake: str | None = None,
    warehouse: str | None = None,
    settings_block: str | None = None,
    command: str = "build",
    config: PipelineConfig | None = None,
) -> dict[str, int]:
    """Load the pseudonym map (and on Snowflake the raw tables), then run dbt on them."""
    config = resolve_config(settings_block, base=config, lake=lake, warehouse=warehouse)
    connect = config.snowflake_connect
    connector = None
    if config.dbt_target == "snowflake":
        from prefect_snowflake import SnowflakeConnector

        connector = SnowflakeConnector.load(config.snowflake_connector_block)
        load_snowflake(connector, config.lake, config.secret, connect)
    else:
        Path(config.warehouse).parent.mkdir(parents=True, exist_ok=True)
        write_pseudonym_map(config.lake, config.warehouse, config.secret)

    env = dbt_environment(
        lake=config.lake,
        warehouse=config.warehouse,
        target=config.dbt_target,
        snowflake_host=config.snowflake_host,
        snowflake_port=config.snowflake_port,
        snowflake_protocol=config.snowflake_protocol,
    )
    settings = TargetDbtSettings(
        project_dir=DBT_PROJECT_DIR,
        profiles_dir=DBT_PROJECT_DIR,
        dbt_target=config.dbt_target,
        snowflake_block=config.snowflake_connector_block,
    )
    with temporary_environment(env):
        runner = PrefectDbtRunner(settings=settings, raise_on_failure=False)
        try:
            result = runner.invoke([command])
        finally:
            close_dbt_duckdb()  # else this process keeps the warehouse file locked
            remove_compiled_sql()
    if not result.success:
        where = config.warehouse if connector is None else f"Snowflake ({config.snowflake_connector_block})"
        msg = f"dbt {command} failed on the warehouse {where}; see the dbt task runs of this flow for the failing model or test"
        raise WarehouseError(msg)
    if connector is None:
        counts = count_rows(Path(config.warehouse))
    else:
        with snowflake_session(connector, connect) as connection:
            counts = count_rows_snowflake(connection)
    get_run_logger().info("Warehouse built: %s", counts)
    return counts
