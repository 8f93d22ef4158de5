"""The warehouse side: what dbt needs to run, and what the warehouse holds afterwards."""

from __future__ import annotations

from pathlib import Path

import duckdb

from tasks.deid import hmac_pads

DBT_PROJECT_DIR = Path(__file__).resolve().parent.parent / "dbt_project"
PROCESSED_TABLES = ("patients", "studies", "series", "devices", "images", "processed_images")


def dbt_environment(*, lake: str, warehouse: str, target: str, secret: str) -> dict[str, str]:
    """Environment variables the dbt project reads (profiles.yml and the de-id macros).

    The secret itself is not passed: only its HMAC pad keys, which the macros need.
    """
    ipad, opad = hmac_pads(secret)
    return {
        "DICOM_ETL_LAKE": str(Path(lake).resolve()) if "://" not in lake else lake,
        "DICOM_ETL_WAREHOUSE": str(Path(warehouse).resolve()),
        "DICOM_ETL_DBT_TARGET": target,
        "DICOM_ETL_DEID_IPAD": ipad,
        "DICOM_ETL_DEID_OPAD": opad,
    }


def release_dbt_duckdb() -> None:
    """Close the DuckDB database dbt-duckdb keeps open in this process after a run.

    Otherwise a long-lived process (a worker, a test session) holds the warehouse file
    and every other reader or writer is refused.
    """
    try:
        from dbt.adapters.duckdb.connections import DuckDBConnectionManager
    except ImportError:  # dbt-duckdb not installed: nothing was opened
        return
    with DuckDBConnectionManager._LOCK:
        env, DuckDBConnectionManager._ENV = DuckDBConnectionManager._ENV, None
    if env is not None:
        env.close()


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
