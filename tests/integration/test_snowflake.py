"""Snowflake end to end against fakesnow's server: raw Parquet -> PUT/COPY -> dbt-snowflake.

The build-warehouse flow runs on a real Prefect server with its blocks saved there:
prefect-snowflake loads the lake over HTTP, prefect-dbt resolves the SnowflakeConnector
block placeholders of profiles.yml, and dbt-snowflake builds the same models as on DuckDB.
"""

from __future__ import annotations

import shutil
import threading
import time
from pathlib import Path

import duckdb
import pytest

from tasks.deid import pseudo_uid, pseudonym
from tasks.warehouse.dbt import PROCESSED_TABLES
from tests.integration.conftest import SECRET
from tests.integration.phi import collect_phi, find_phi
from tests.runs import task_runs

# the module fixture builds the warehouse three times (tens of seconds each on fakesnow)
pytestmark = [pytest.mark.integration, pytest.mark.timeout(1800)]


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
def snowflake_lake(tmp_path_factory, first_lake) -> dict:
    """A copy of the session's lake of pydicom's files + the synthetic set (with de-identified exports)."""
    root = tmp_path_factory.mktemp("snowflake")
    shutil.copytree(first_lake["lake"], root / "lake")
    return {"source": first_lake["source"], "lake": root / "lake"}


def _save_blocks(server: dict, lake: Path, *, name: str, database: str, connector: str | None = None, **snowflake) -> None:  # noqa: ANN003
    """A SnowflakeConnector block on ``database`` and a settings block ``name`` that uses it."""
    from prefect_snowflake import SnowflakeConnector, SnowflakeCredentials

    from blocks.settings import DicomPipelineSettings

    connector = connector or f"fakesnow-{database.lower().replace('_', '-')}"
    credentials = SnowflakeCredentials(account=server["account"], user=server["user"], password=server["password"])
    SnowflakeConnector(credentials=credentials, database=database, warehouse="COMPUTE_WH", schema="PUBLIC").save(
        connector, overwrite=True
    )
    DicomPipelineSettings(
        environment="dev", lake=str(lake), dbt_target="snowflake", deid_secret=SECRET,
        snowflake_connector_block=connector, snowflake_host=server["host"],
        snowflake_port=server["port"], snowflake_protocol=server["protocol"], **snowflake,
    ).save(name, overwrite=True)


@pytest.fixture(scope="module")
def snowflake_built(prefect_server, fakesnow_server, snowflake_lake, snowflake_proxy) -> dict:
    """Blocks saved on the Prefect server, build-warehouse run twice (idempotence), then a full
    refresh whose load loses Snowflake mid-way, for longer than the connector retries (through
    the proxy): the load task must reconnect, and RAW must not double."""
    from flows.warehouse import build_warehouse

    _save_blocks(fakesnow_server, snowflake_lake["lake"], name="test-snowflake-env", database="DICOM")
    first = build_warehouse(settings_block="test-snowflake-env")
    raw_after_first = _query(fakesnow_server, "select count(*), count(distinct source_key) from raw.images")[0]
    second = build_warehouse(settings_block="test-snowflake-env")
    raw_after_second = _query(fakesnow_server, "select count(*), count(distinct source_key) from raw.images")[0]
    proxy, via_proxy = snowflake_proxy
    refreshed = _build_through_an_outage(proxy, via_proxy, snowflake_lake)
    raw_after_refresh = _query(fakesnow_server, "select count(*), count(distinct source_key) from raw.images")[0]
    return {
        "first": first, "second": second, "refreshed": refreshed, "resets": proxy.resets,
        "raw": [raw_after_first, raw_after_second, raw_after_refresh],
    }


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


def test_raw_tables_hold_each_lake_row_once_however_often_built(snowflake_built, snowflake_lake):
    """Loads go by batch: a second build and a full refresh (its load retried) leave RAW as the lake holds it."""
    lake_rows = duckdb.sql(
        f"select count(*), count(distinct source_key) from read_parquet('{snowflake_lake['lake']}/tables/images/**/*.parquet')"
    ).fetchone()
    assert lake_rows[0] > 0
    assert snowflake_built["raw"] == [lake_rows] * 3  # the refresh's load was retried: nothing doubled
    assert snowflake_built["refreshed"].result() == snowflake_built["first"]


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
    """A TCP proxy in front of fakesnow; blocks reach it through the proxy (database DICOM_FAULTS)."""
    from tests.integration.fault_proxy import TcpFaultProxy

    _query(fakesnow_server, "create database if not exists DICOM_FAULTS")
    with TcpFaultProxy((fakesnow_server["host"], fakesnow_server["port"])) as proxy:
        yield proxy, {**fakesnow_server, "port": proxy.port}


def _faulty_build(server: dict, snowflake_lake: dict, name: str, *, database: str = "DICOM_FAULTS", **build):  # noqa: ANN003, ANN202 - a Prefect State
    from flows.warehouse import build_warehouse

    # the connector retries a statement by itself for 4 s (network_timeout), then the task takes over
    _save_blocks(server, snowflake_lake["lake"], name=name, database=database, connector=f"{name}-connector",
                 snowflake_network_timeout=4)
    return build_warehouse(settings_block=name, return_state=True, **build)


def _load_runs(state) -> list:  # noqa: ANN001 - the flow run's load-snowflake task runs
    return [r for r in task_runs(state.state_details.flow_run_id) if r.name.startswith("load-snowflake")]


def _clear_when_load_retries(proxy, stop: threading.Event) -> None:  # noqa: ANN001 - a TcpFaultProxy
    """End the outage once the server has the load task awaiting its retry (polled from a thread)."""
    from prefect.client.orchestration import get_client
    from prefect.client.schemas.filters import TaskRunFilter, TaskRunFilterName, TaskRunFilterState, TaskRunFilterStateName

    wanted = TaskRunFilter(
        name=TaskRunFilterName(like_="load-snowflake"),
        state=TaskRunFilterState(name=TaskRunFilterStateName(any_=["AwaitingRetry", "Retrying"])),
    )
    with get_client(sync_client=True) as client:
        while not stop.wait(0.2):
            if client.read_task_runs(task_run_filter=wanted):
                proxy.clear()
                return


def _build_through_an_outage(proxy, server: dict, snowflake_lake: dict):  # noqa: ANN001, ANN202 - a TcpFaultProxy; a State
    """A full refresh of database DICOM through the proxy, Snowflake unreachable from the load's first statements."""
    # from the load's first statements on (the login is ~1 kB) until the connector has given
    # up and the task awaits its retry: the outage ends on the server's word, not on a timer
    # that a slow machine could outlast or a fast one undercut
    proxy.outage(float("inf"), after_bytes=1_500)
    stop = threading.Event()
    watcher = threading.Thread(target=_clear_when_load_retries, args=(proxy, stop), daemon=True)
    watcher.start()
    try:
        return _faulty_build(server, snowflake_lake, "test-snowflake-blip", database="DICOM", full_refresh=True)
    finally:
        stop.set()
        watcher.join(timeout=10)
        proxy.clear()


def test_a_connection_lost_mid_load_is_retried_and_the_load_completes(snowflake_built):
    """Snowflake unreachable mid-load for longer than the connector retries: the task reconnects, same rows."""
    state = snowflake_built["refreshed"]
    assert state.is_completed(), state.message
    assert snowflake_built["resets"] > 0
    [load] = _load_runs(state)
    assert load.run_count >= 2  # the connector gave up on the statement; the task retry got it done
    assert state.result() == snowflake_built["first"]  # the same processed rows as an undisturbed build


def test_snowflake_gone_for_good_fails_the_run_with_what_to_check(snowflake_proxy, snowflake_lake):
    proxy, server = snowflake_proxy
    proxy.down()
    try:
        state = _faulty_build(server, snowflake_lake, "test-snowflake-down")
    finally:
        proxy.clear()
    assert state.is_failed()
    assert "Snowflake" in state.message and "Check" in state.message and "test-snowflake-down-connector" in state.message, state.message
    # task run states reach the server as events: on a busy machine the last attempt lands late
    deadline = time.monotonic() + 60
    while True:
        [load] = _load_runs(state)
        if load.run_count >= 3 or time.monotonic() > deadline:
            break
        time.sleep(1)
    assert load.run_count == 3  # retried, but boundedly
