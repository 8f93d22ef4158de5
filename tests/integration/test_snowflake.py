"""Snowflake end to end against fakesnow's server: raw Parquet -> PUT/COPY -> dbt-snowflake.

The build-warehouse flow runs on a real Prefect server with its blocks saved there:
prefect-snowflake loads the lake over HTTP, prefect-dbt resolves the SnowflakeConnector
block placeholders of profiles.yml, and dbt-snowflake builds the same models as on DuckDB.
"""

from __future__ import annotations

import shutil
from pathlib import Path

import duckdb
import pytest

from tasks.deid import pseudo_uid, pseudonym
from tasks.warehouse import PROCESSED_TABLES
from tests.integration.lakes import build_lake
from tests.integration.phi import collect_phi, find_phi

pytestmark = pytest.mark.integration
SECRET = "snowflake-test-secret"


@pytest.fixture(scope="module")
def fakesnow_server():
    """fakesnow's Snowflake server on 127.0.0.1 (HTTP), with an empty DICOM database."""
    fakesnow = pytest.importorskip("fakesnow")
    import snowflake.connector

    with fakesnow.server() as kwargs:
        with snowflake.connector.connect(**kwargs) as con:
            con.cursor().execute("create database if not exists DICOM")
        yield kwargs


@pytest.fixture(scope="module")
def snowflake_lake(tmp_path_factory, synthetic_dir, pydicom_dir) -> dict:
    root = tmp_path_factory.mktemp("snowflake")
    source = root / "incoming"
    shutil.copytree(synthetic_dir, source / "synthetic")
    shutil.copytree(pydicom_dir, source / "pydicom")
    build_lake(source, root / "lake", secret=SECRET)
    return {"source": source, "lake": root / "lake"}


@pytest.fixture(scope="module")
def snowflake_built(prefect_server, fakesnow_server, snowflake_lake) -> dict:
    """Blocks saved on the Prefect server, then build-warehouse run twice (idempotence)."""
    from prefect_snowflake import SnowflakeConnector, SnowflakeCredentials

    from blocks.settings import DicomPipelineSettings
    from flows.warehouse import build_warehouse

    credentials = SnowflakeCredentials(
        account=fakesnow_server["account"], user=fakesnow_server["user"], password=fakesnow_server["password"]
    )
    SnowflakeConnector(credentials=credentials, database="DICOM", warehouse="COMPUTE_WH", schema="PUBLIC").save(
        "test-fakesnow", overwrite=True
    )
    DicomPipelineSettings(
        environment="dev",
        lake=str(snowflake_lake["lake"]),
        dbt_target="snowflake",
        deid_secret=SECRET,
        snowflake_connector_block="test-fakesnow",
        snowflake_host=fakesnow_server["host"],
        snowflake_port=fakesnow_server["port"],
        snowflake_protocol=fakesnow_server["protocol"],
    ).save("test-snowflake-env", overwrite=True)
    first = build_warehouse(settings_block="test-snowflake-env")
    second = build_warehouse(settings_block="test-snowflake-env")
    return {"first": first, "second": second}


def _query(server: dict, sql: str) -> list[tuple]:
    import snowflake.connector

    with snowflake.connector.connect(**server, database="DICOM") as con:
        return con.cursor().execute(sql).fetchall()


def test_processed_tables_built_on_snowflake(snowflake_built, fakesnow_server):
    for table in PROCESSED_TABLES:
        assert snowflake_built["first"][table] > 0, table
    # a second run of the same lake duplicates nothing
    assert snowflake_built["second"] == snowflake_built["first"]
    n, distinct = _query(fakesnow_server, "select count(*), count(distinct sop_instance_pseudo_uid) from processed.images")[0]
    assert n == distinct


def test_snowflake_pseudonyms_match_python(snowflake_built, fakesnow_server, snowflake_lake):
    """The same HMAC as the preview names and as on DuckDB: computed once, in Python."""
    raw = duckdb.sql(
        f"select distinct StudyInstanceUID from read_parquet('{snowflake_lake['lake']}/tables/studies/**/*.parquet')"
    ).fetchall()
    expected = {pseudo_uid(u, SECRET) for (u,) in raw if u}
    got = {r[0] for r in _query(fakesnow_server, "select study_pseudo_uid from processed.studies")}
    assert got == expected
    # previews were named in Python by the same pseudonym: the join found them
    previews = duckdb.sql(
        f"select distinct SOPInstanceUID from read_parquet('{snowflake_lake['lake']}/tables/previews/**/*.parquet')"
    ).fetchall()
    expected_keys = {pseudonym(u, SECRET) for (u,) in previews}
    keys = {r[0] for r in _query(fakesnow_server, "select preview_key from processed.processed_images where preview_key is not null")}
    assert {Path(k).stem for k in keys} == expected_keys

def test_no_phi_in_snowflake_processed_tables(snowflake_built, fakesnow_server, snowflake_lake):
    phi = collect_phi(snowflake_lake["source"])
    import snowflake.connector

    hits = []
    with snowflake.connector.connect(**fakesnow_server, database="DICOM") as con:
        for table in PROCESSED_TABLES:
            cur = con.cursor().execute(f"select * from processed.{table}")
            hits += find_phi(phi, table, [d[0].lower() for d in cur.description], cur.fetchall(), typed_dates=False)
    assert not hits
