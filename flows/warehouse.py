"""The dbt subflow: build the typed and de-identified warehouse from the lake."""

from __future__ import annotations

import os
from contextlib import contextmanager
from pathlib import Path

from prefect import flow
from prefect.logging import get_run_logger

from blocks.settings import resolve_config
from tasks.errors import WarehouseError
from tasks.warehouse import DBT_PROJECT_DIR, count_rows, dbt_environment, release_dbt_duckdb


@contextmanager
def _environment(values: dict[str, str]):
    saved = {k: os.environ.get(k) for k in values}
    os.environ.update(values)
    try:
        yield
    finally:
        for key, old in saved.items():
            if old is None:
                os.environ.pop(key, None)
            else:
                os.environ[key] = old


@flow(name="build-warehouse", log_prints=True)
def build_warehouse(
    lake: str | None = None,
    warehouse: str | None = None,
    settings_block: str | None = None,
    command: str = "build",
) -> dict[str, int]:
    """Run dbt (seeds, stage, processed models and their tests) on the lake's raw tables."""
    from prefect_dbt import PrefectDbtRunner, PrefectDbtSettings

    config = resolve_config(settings_block, lake=lake, warehouse=warehouse)
    Path(config.warehouse).parent.mkdir(parents=True, exist_ok=True)
    env = dbt_environment(
        lake=config.lake, warehouse=config.warehouse, target=config.dbt_target, secret=config.deid_secret
    )
    settings = PrefectDbtSettings(project_dir=DBT_PROJECT_DIR, profiles_dir=DBT_PROJECT_DIR)
    with _environment(env):
        runner = PrefectDbtRunner(settings=settings, raise_on_failure=False)
        try:
            result = runner.invoke([command])
        finally:
            release_dbt_duckdb()
    if not result.success:
        msg = f"dbt {command} failed on the warehouse {config.warehouse!r}; see the dbt task runs of this flow for the failing model or test"
        raise WarehouseError(msg)
    counts = count_rows(Path(config.warehouse)) if config.dbt_target == "duckdb" else {}
    get_run_logger().info("Warehouse built: %s", counts)
    return counts
