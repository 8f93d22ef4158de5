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


@pytest.fixture(scope="module")
def snowflake_proxy(prefect_server, fakesnow_server):
    """A TCP proxy in front of fakesnow, and blocks that reach Snowflake through it (database DICOM_FAULTS)."""
    from prefect_snowflake import SnowflakeConnector, SnowflakeCredentials

    from blocks.settings import DicomPipelineSettings
    from tests.integration.fault_proxy import TcpFaultProxy

    _query(fakesnow_server, "create database if not exists DICOM_FAULTS")
    credentials = SnowflakeCredentials(
        account=fakesnow_server["account"], user=fakesnow_server["user"], password=fakesnow_server["password"]
    )
    SnowflakeConnector(credentials=credentials, database="DICOM_FAULTS", warehouse="COMPUTE_WH", schema="PUBLIC").save(
        "test-fakesnow-faults", overwrite=True
    )
    with TcpFaultProxy((fakesnow_server["host"], fakesnow_server["port"])) as proxy:
        yield proxy, {
            "snowflake_connector_block": "test-fakesnow-faults",
            "snowflake_host": fakesnow_server["host"],
            "snowflake_port": proxy.port,
            "snowflake_protocol": fakesnow_server["protocol"],
            "snowflake_network_timeout": 4,  # seconds the connector retries a statement by itself
        }


def _faulty_build(snowflake_lake, settings: dict, name: str):  # noqa: ANN202 - a Prefect State
    from blocks.settings import DicomPipelineSettings
    from flows.warehouse import build_warehouse

    DicomPipelineSettings(
        environment="dev", lake=str(snowflake_lake["lake"]), dbt_target="snowflake", deid_secret=SECRET, **settings
    ).save(name, overwrite=True)
    return build_warehouse(settings_block=name, return_state=True)


def _load_runs(state) -> list:  # noqa: ANN001 - the flow run's load-snowflake task runs
    from prefect.client.orchestration import get_client
    from prefect.client.schemas.filters import FlowRunFilter, FlowRunFilterId

    with get_client(sync_client=True) as client:
        runs = client.read_task_runs(flow_run_filter=FlowRunFilter(id=FlowRunFilterId(any_=[state.state_details.flow_run_id])))
    return [r for r in runs if r.name.startswith("load-snowflake")]


def test_a_connection_lost_mid_load_is_retried_and_the_load_completes(snowflake_built, snowflake_proxy, snowflake_lake):
    """Snowflake unreachable for longer than the connector retries, mid-load: the task reconnects, same rows."""
    proxy, settings = snowflake_proxy
    # from the load's first statements on (the login is ~1 kB): longer than the connector retries a
    # statement (network_timeout 4 s), shorter than the task's retries; a PUT's uploads retry for ~30 s
    proxy.outage(6, after_bytes=1_500)
    state = _faulty_build(snowflake_lake, settings, "test-snowflake-blip")
    proxy.clear()
    assert state.is_completed(), state.message
    assert proxy.resets > 0
    [load] = _load_runs(state)
    assert load.run_count >= 2  # the connector gave up on the statement; the task retry got it done
    assert state.result() == snowflake_built["first"]  # the same processed rows as an undisturbed build


def test_snowflake_gone_for_good_fails_the_run_with_what_to_check(snowflake_proxy, snowflake_lake):
    proxy, settings = snowflake_proxy
    proxy.down()
    try:
        state = _faulty_build(snowflake_lake, settings, "test-snowflake-down")
    finally:
        proxy.clear()
    assert state.is_failed()
    assert "Snowflake" in state.message and "Check" in state.message and "test-fakesnow-faults" in state.message, state.message
    [load] = _load_runs(state)
    assert load.run_count == 3  # retried, but boundedly
