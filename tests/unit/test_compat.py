"""Each library internal tasks/compat.py reaches for is still there, in the shape it expects.

A failure names the library, its installed version and the function of tasks/compat.py
to update; pyproject.toml bounds these libraries at the versions this passed with.
"""

from __future__ import annotations

import logging
import threading
from concurrent.futures import ProcessPoolExecutor, ThreadPoolExecutor
from importlib.metadata import version

import pydicom
import pytest
from pydicom.dataelem import DataElement, RawDataElement
from pydicom.dataset import Dataset

from tasks import compat


def _changed(library: str, what: str, function: str) -> str:
    return f"{library} {version(library)} changed {what}: update tasks.compat.{function}"


def test_pydicom_dataset_keeps_raw_elements_in_its_dict():
    ds = Dataset()
    raw = RawDataElement(0x00100010, "PN", 4, b"Doe^", 0, False, True)
    ds[0x00100010] = raw
    elements = compat.dataset_elements(ds)
    assert elements.get(0x00100010) is raw, _changed("pydicom", "Dataset._dict", "dataset_elements")
    ds.PatientID = "X"
    assert isinstance(elements.get(0x00100020), DataElement), _changed("pydicom", "Dataset._dict", "dataset_elements")


def test_pydicom_raw_element_is_built_without_its_constructor():
    new, defaults = compat.raw_element_factory()
    assert new is tuple.__new__, _changed("pydicom", "RawDataElement's fields", "raw_element_factory")
    element = new(RawDataElement, (0x00080060, "CS", 2, b"CT", 10, False, True, *defaults))
    expected = RawDataElement(0x00080060, "CS", 2, b"CT", 10, False, True)
    assert element == expected and element.value == b"CT" and element.VR == "CS", _changed(
        "pydicom", "RawDataElement's fields", "raw_element_factory"
    )


def test_pydicom_validation_mode_and_logger_are_where_silence_pydicom_sets_them():
    compat.silence_pydicom()
    assert pydicom.config.settings.reading_validation_mode == pydicom.config.IGNORE, _changed(
        "pydicom", "config.settings.reading_validation_mode", "silence_pydicom"
    )
    assert any(isinstance(f, compat._PydicomFilter) for f in logging.getLogger("pydicom").filters)


def test_a_thread_leaving_its_quiet_block_does_not_unsilence_another(monkeypatch, caplog):
    """The race of a save-and-restore per call: B leaves its block while A is still in its own."""
    monkeypatch.setattr(compat, "_silenced", False)
    monkeypatch.setattr(pydicom.config.settings, "reading_validation_mode", pydicom.config.WARN)
    entered, left, done = threading.Barrier(2), threading.Barrier(2), threading.Barrier(2)
    inside: list[int] = []

    def b() -> None:
        with compat.quiet_pydicom():
            entered.wait()
            left.wait()  # A is in its block now
        done.wait()

    def a() -> None:
        entered.wait()
        with compat.quiet_pydicom():
            left.wait()
            done.wait()  # B has left its block
            inside.append(pydicom.config.settings.reading_validation_mode)
            logging.getLogger("pydicom").warning("Invalid value for VR PN: 'Doe^Jane'")

    threads = [threading.Thread(target=f) for f in (a, b)]
    with caplog.at_level(logging.DEBUG):
        for t in threads:
            t.start()
        for t in threads:
            t.join()
    assert inside == [pydicom.config.IGNORE]
    assert "Doe" not in caplog.text


def test_executor_worker_counts():
    with ThreadPoolExecutor(3) as threads:
        assert compat.max_workers(threads, 1) == 3, "concurrent.futures changed _max_workers: update tasks.compat.max_workers"
    with ProcessPoolExecutor(2) as processes:
        list(processes.map(abs, range(4)))
        assert compat.max_workers(processes, 1) == 2
        assert len(compat.pool_pids(processes)) == 2, "concurrent.futures changed _processes: update tasks.compat.pool_pids"


def test_prefect_thread_pool_task_runner_keeps_its_worker_count():
    from prefect.task_runners import ThreadPoolTaskRunner

    assert compat.max_workers(ThreadPoolTaskRunner(max_workers=5), 1) == 5, _changed(
        "prefect", "ThreadPoolTaskRunner._max_workers", "max_workers"
    )


def test_prefect_sync_client_has_an_httpx_client():
    import httpx
    from prefect.client.orchestration import SyncPrefectClient

    client = SyncPrefectClient("http://127.0.0.1:9/api")
    assert isinstance(compat.prefect_http_client(client), httpx.Client), _changed(
        "prefect", "SyncPrefectClient._client", "prefect_http_client"
    )


class _FakeFlowRunEngine:
    """What ``_send_heartbeats`` reads of a flow run engine; counts the heartbeats it is asked to send."""

    heartbeat_seconds = 30
    flow_run = None
    logger = logging.getLogger("test-heartbeat")

    def __init__(self) -> None:
        self.sent = 0
        self.first = threading.Event()

    def _build_heartbeat_event_template(self) -> tuple[dict, list]:
        return {}, []

    def _emit_flow_run_heartbeat(self, resource: dict, related: list) -> None:  # noqa: ARG002
        self.sent += 1
        self.first.set()


def test_prefect_flow_run_ends_without_joining_its_heartbeat_thread():
    import inspect

    from prefect import flow_engine

    compat.end_flow_runs_promptly()
    compat.end_flow_runs_promptly()  # each flow module calls it: wrapped once
    patched = flow_engine._send_heartbeats
    changed = _changed("prefect", "flow_engine._send_heartbeats", "end_flow_runs_promptly")
    assert patched.without_join and not getattr(patched.original, "without_join", False)
    assert list(inspect.signature(patched.original).parameters) == ["engine", "join_on_exit"], changed
    assert "_send_heartbeats(self)" in inspect.getsource(flow_engine.FlowRunEngine), changed  # looked up at call time

    engine, before = _FakeFlowRunEngine(), set(threading.enumerate())
    with patched(engine):
        assert engine.first.wait(10), changed
        [heartbeat] = set(threading.enumerate()) - before
    assert heartbeat.is_alive()  # not joined: the run goes on while the thread finishes its 1-s step
    heartbeat.join(5)
    assert not heartbeat.is_alive() and engine.sent == 1, changed  # it stopped, and sent nothing more


def test_dbt_duckdb_caches_its_database_where_close_dbt_duckdb_looks():
    from dbt.adapters.duckdb.connections import DuckDBConnectionManager

    message = _changed("dbt-duckdb", "DuckDBConnectionManager._ENV/_LOCK", "close_dbt_duckdb")
    assert hasattr(DuckDBConnectionManager, "_ENV") and hasattr(DuckDBConnectionManager, "_LOCK"), message
    compat.close_dbt_duckdb()
    assert DuckDBConnectionManager._ENV is None, message


def test_the_libraries_compat_reaches_into_are_bounded_at_the_tested_versions():
    import tomllib
    from pathlib import Path

    from packaging.requirements import Requirement

    pyproject = tomllib.loads((Path(__file__).resolve().parents[2] / "pyproject.toml").read_text())
    requirements = {Requirement(r).name: Requirement(r) for r in pyproject["project"]["dependencies"]}
    for name in ("pydicom", "dbt-core", "dbt-duckdb", "dbt-snowflake", "prefect"):
        spec = requirements[name].specifier
        assert any(s.operator == "<" for s in spec), f"{name} has no upper bound in pyproject.toml"
        assert spec.contains(version(name)), f"{name} {version(name)} is outside {spec}: re-lock with `uv lock`"
