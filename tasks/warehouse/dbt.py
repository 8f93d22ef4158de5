"""The warehouse side: what dbt needs to run, and what the warehouse holds afterwards."""

from __future__ import annotations

import shutil
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import duckdb

from tasks.errors import WarehouseError

DBT_PROJECT_DIR = Path(__file__).resolve().parents[2] / "dbt_project"
PROCESSED_TABLES = ("patients", "studies", "series", "devices", "images", "processed_images")
#: Processed tables of opt-in outputs: empty unless the run produced them (ingest --export-deid).
OPTIONAL_TABLES = ("deid_exports",)
DBT_TARGETS = ("duckdb", "snowflake")
#: The SnowflakeConnector block name profiles.yml names; replaced by the configured one.
PROFILE_SNOWFLAKE_BLOCK = "dicom-etl-snowflake"


def dbt_environment(
    *,
    lake: str,
    warehouse: str,
    target: str,
    snowflake_host: str | None = None,
    snowflake_port: int | None = None,
    snowflake_protocol: str | None = None,
) -> dict[str, str]:
    """Environment variables the dbt project reads (profiles.yml and the sources).

    No key material: pseudonyms are computed before dbt runs (tasks/warehouse/pseudonyms.py), so
    neither the secret nor anything derived from it reaches dbt, its logs or target/.
    """
    if target not in DBT_TARGETS:
        msg = f"dbt_target {target!r} is not a target of dbt_project/profiles.yml; use one of {', '.join(DBT_TARGETS)}"
        raise WarehouseError(msg)
    env = {
        "DICOM_ETL_LAKE": str(Path(lake).resolve()) if "://" not in lake else lake,
        "DICOM_ETL_WAREHOUSE": str(Path(warehouse).resolve()),
        "DICOM_ETL_DEID_DB": str(deid_database(warehouse).resolve()),
        "DICOM_ETL_DBT_TARGET": target,
    }
    if target == "snowflake":
        env["DICOM_ETL_SNOWFLAKE_HOST"] = snowflake_host or ""
        env["DICOM_ETL_SNOWFLAKE_PORT"] = str(snowflake_port or 0)
        env["DICOM_ETL_SNOWFLAKE_PROTOCOL"] = snowflake_protocol or ""
    return env


def deid_database(warehouse: str | Path) -> Path:
    """The DuckDB file of the pseudonym map, beside the warehouse (``x.duckdb`` -> ``x.deid.duckdb``).

    Kept apart so the warehouse file can be shared without the map that links its
    pseudonyms back to identifiers; dbt attaches it read-only.
    """
    path = Path(warehouse)
    return path.with_name(f"{path.stem}.deid.duckdb")


def select_profile_target(profiles: dict[str, Any], *, target: str, snowflake_block: str) -> dict[str, Any]:
    """The profiles.yml content with only ``target``'s output, its block names set.

    prefect-dbt resolves every ``{{ prefect.blocks... }}`` placeholder of the file it is
    given: dropping the unused output keeps a DuckDB run from looking up Snowflake blocks,
    and renaming lets each environment name its own SnowflakeConnector block.

    Parameters
    ----------
    profiles : dict
        The parsed profiles.yml.
    target : str
        The output to keep (``duckdb`` or ``snowflake``).
    snowflake_block : str
        Name of the SnowflakeConnector block to read credentials and locations from.

    Raises
    ------
    WarehouseError
        If no profile has an output named ``target``.
    """
    out: dict[str, Any] = {}
    for name, profile in profiles.items():
        outputs = profile.get("outputs", {}) if isinstance(profile, dict) else {}
        if target not in outputs:
            msg = f"profiles.yml profile {name!r} has no output {target!r}; add it or set dbt_target to one of {', '.join(outputs)}"
            raise WarehouseError(msg)
        output = _rename_block(outputs[target], PROFILE_SNOWFLAKE_BLOCK, snowflake_block)
        out[name] = {**profile, "target": target, "outputs": {target: output}}
    return out


def _rename_block(value: Any, old: str, new: str) -> Any:
    if isinstance(value, dict):
        return {k: _rename_block(v, old, new) for k, v in value.items()}
    if isinstance(value, str):
        return value.replace(f"prefect.blocks.snowflake-connector.{old}.", f"prefect.blocks.snowflake-connector.{new}.")
    return value


def dbt_target_dir(warehouse: str, *, target: str, snowflake_block: str | None = None) -> Path:
    """dbt's target path of one warehouse: beside the DuckDB file (``.dbt-<stem>``), one per Snowflake block.

    It keeps dbt's partial parsing state between builds of that warehouse; builds of
    different warehouses never share it (a shared one made each reparse fully, and two
    concurrent builds overwrite each other's files).
    """
    path = Path(warehouse)
    name = path.stem if target == "duckdb" else f"snowflake-{snowflake_block or PROFILE_SNOWFLAKE_BLOCK}"
    return path.parent / f".dbt-{name}"


def remove_compiled_sql(target_dir: Path) -> None:
    """Delete dbt's compiled and run SQL (``compiled/``, ``run/`` of the target path).

    They hold no key material, but they do hold the literal SQL of every model; the
    warehouse is the place for data. The parsing state (``partial_parse.msgpack``,
    ``manifest.json``) stays: it holds the project's files and hashes, no data.
    """
    for sub in ("compiled", "run"):
        shutil.rmtree(target_dir / sub, ignore_errors=True)


def count_rows(warehouse: Path, schema: str = "processed") -> dict[str, int]:
    """Rows per table of a schema in a DuckDB warehouse file (opened read-only)."""
    with duckdb.connect(str(warehouse), read_only=True) as con:
        names = [
            r[0]
            for r in con.execute(
                "select table_name from information_schema.tables where table_schema = ? order by 1",
                [schema],
            ).fetchall()
        ]
        return {n: con.execute(f'select count(*) from "{schema}"."{n}"').fetchone()[0] for n in names}


def count_rows_snowflake(connection: Any, schema: str = "PROCESSED") -> dict[str, int]:
    """Rows per processed table in Snowflake, through an open connection."""
    cursor = connection.cursor()
    try:
        return {
            t: cursor.execute(f"select count(*) from {schema}.{t}").fetchone()[0] for t in PROCESSED_TABLES + OPTIONAL_TABLES
        }
    finally:
        cursor.close()


#: dbt's info messages not forwarded: a START line per node (its result line follows)
_QUIET_DBT_EVENTS = frozenset({"LogStartLine"})


def invoke_dbt(
    args: list[str],
    *,
    project_dir: Path,
    profiles_dir: str | Path,
    target_path: Path,
    on_log: Any = None,  # noqa: ANN401 - a callable(level, message)
) -> Any:  # noqa: ANN401 - dbt's dbtRunnerResult
    """``dbt <args>`` through dbt-core's programmatic runner, in this process and thread.

    dbt's own console output is off; its info, warning and error messages go to
    ``on_log(level, message)`` (the run's logger), so they reach the Prefect UI.
    """
    from dbt.cli.main import dbtRunner

    def forward(event: Any) -> None:  # noqa: ANN401 - dbt's EventMsg
        level = event.info.level
        quiet = event.info.name in _QUIET_DBT_EVENTS
        if on_log is not None and level in ("info", "warn", "error") and not quiet and event.info.msg.strip():
            on_log(level, event.info.msg)

    runner = dbtRunner(callbacks=[forward])
    # as flags: dbt checks its default ~/.dbt before keyword arguments replace it
    return runner.invoke([
        *args, "--project-dir", str(project_dir), "--profiles-dir", str(profiles_dir), "--target-path", str(target_path),
        "--log-level", "none", "--no-use-colors",
    ])


@dataclass(frozen=True)
class DbtOutcome:
    """What a flow needs of a dbt invocation, read once from dbt's result (plain data, no dbt objects)."""

    success: bool
    #: one row per node that ran: node, type, status, seconds, and the message of a failing test
    nodes: list[dict[str, Any]]
    #: dbt's own error when it stopped before any node ran (a project or connection error)
    error: str | None
    #: seconds dbt spent running nodes (parse and start excluded)
    elapsed: float


def dbt_outcome(result: Any) -> DbtOutcome:  # noqa: ANN401 - dbt's dbtRunnerResult
    """The :class:`DbtOutcome` of a ``dbtRunner`` (or prefect-dbt) result."""
    run = getattr(result, "result", None)
    nodes = []
    for r in getattr(run, "results", None) or []:
        status = str(getattr(r.status, "value", r.status))
        kind = str(getattr(r.node.resource_type, "value", r.node.resource_type))
        # a failing test's message is a count ("Got 4 results"); a model's database error may quote a value
        message = (r.message or "") if kind == "test" and status == "fail" else ""
        nodes.append({"node": r.node.name, "type": kind, "status": status, "seconds": round(float(r.execution_time or 0.0), 3), "message": message})
    exception = getattr(result, "exception", None)
    error = str(exception).strip().splitlines()[0] if exception and str(exception).strip() else None
    return DbtOutcome(bool(result.success), nodes, error, float(getattr(run, "elapsed_time", 0.0) or 0.0))


def dbt_failure_message(outcome: DbtOutcome, command: str, where: str) -> str:
    """One line for a failed dbt invocation: the failing models and tests, or dbt's own error."""
    failed = [
        f"{r['type']} {r['node']} ({r['status']}{': ' + r['message'] if r['message'] else ''})"
        for r in outcome.nodes if r["status"] in ("error", "fail")
    ]
    if failed:
        cause = "; ".join(failed[:5]) + (f" and {len(failed) - 5} more" if len(failed) > 5 else "")
    else:  # dbt stopped before any node ran
        cause = outcome.error or "see the dbt task's log"
    return f"dbt {command} failed on the warehouse {where}: {cause}; dbt's log is in this flow run's dbt task runs (Prefect UI)"
