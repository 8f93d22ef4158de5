"""Every use of a library's internals, in one place, each checked by ``tests/unit/test_compat.py``.

Speed (or a clean shutdown) sometimes needs what a library does not publish: pydicom's raw
element dict, the shape of its ``RawDataElement`` tuple, the worker count of an executor,
dbt-duckdb's cached database, the HTTP client inside Prefect's, the end of a Prefect flow
run's heartbeat. Each is reached here and nowhere else, so that a new version that changes
one breaks one function, and the test of that function says which library, which version
and what to update. ``pyproject.toml`` bounds these libraries at the versions tested.
"""

from __future__ import annotations

import logging
import threading
import warnings
from collections.abc import Iterator, MutableMapping
from concurrent.futures import Executor
from contextlib import contextmanager
from typing import Any

from pydicom import config as pydicom_config
from pydicom.dataelem import RawDataElement
from pydicom.dataset import Dataset

# -- pydicom ----------------------------------------------------------------------------


def dataset_elements(ds: Dataset) -> MutableMapping[int, Any]:
    """The elements of a dataset by tag, as stored: raw elements stay unconverted.

    ``Dataset.__getitem__`` converts each raw element it returns (and validates its value,
    which logs it); this is pydicom's own storage, ``Dataset._dict``.
    """
    return ds._dict  # noqa: SLF001


#: ``RawDataElement``'s first fields, in order: :func:`raw_element_factory` fills them.
RAW_ELEMENT_FIELDS = ("tag", "VR", "length", "value", "value_tell", "is_implicit_VR", "is_little_endian")


def raw_element_factory() -> tuple[Any, tuple]:
    """How to build a ``RawDataElement`` fast: ``(new, defaults)`` for ``new(RawDataElement, fields + defaults)``.

    ``tuple.__new__`` skips the namedtuple's Python-level constructor, a third of the cost
    of an element in the lean reader; it needs the tuple's fields in the order of
    :data:`RAW_ELEMENT_FIELDS`, followed by fields with defaults. If pydicom changed that
    shape, the constructor itself is used (slower, still right).
    """
    fields = RawDataElement._fields  # noqa: SLF001 - namedtuple API
    if fields[: len(RAW_ELEMENT_FIELDS)] == RAW_ELEMENT_FIELDS:
        defaults = tuple(RawDataElement._field_defaults[f] for f in fields[len(RAW_ELEMENT_FIELDS) :])  # noqa: SLF001
        return tuple.__new__, defaults

    def construct(cls: type, values: tuple) -> RawDataElement:
        return cls(*values)

    return construct, ()


class _PydicomFilter(logging.Filter):
    """Drops pydicom's log records below CRITICAL: they carry header values and decoder tracebacks."""

    def filter(self, record: logging.LogRecord) -> bool:
        return record.levelno >= logging.CRITICAL


#: Modules whose warnings are ignored: pydicom's carry header values; the decoders' and the
#: pixel code's (numpy on odd pixel data) are reported as a reason per file instead.
QUIET_MODULES = r"(pydicom|pylibjpeg|openjpeg|libjpeg|jpeg_ls|PIL|tasks\.dicom|tasks\.pixels)(\.|$)"
_SILENCED = threading.Lock()
_silenced = False


def silence_pydicom() -> None:
    """Keep pydicom from logging or warning with header values (PHI), for the whole process, once.

    Sets pydicom's reading validation to ignore, filters its logger and ignores the
    warnings raised in pydicom, the decoders and this project's DICOM and pixel code
    (:data:`QUIET_MODULES`). These are process-wide settings: they are set once and
    never restored, so no thread ever turns them back on while another reads a file (a
    save-and-restore per call, from several task threads, did exactly that). The
    caller reports what matters (a reason per rejected file). The warnings filter is
    added again only if something reset the filters since (a test runner does).
    """
    global _silenced  # noqa: PLW0603 - one switch per process, by design
    if _silenced and _warnings_filtered():
        return
    with _SILENCED:
        if not _silenced:
            pydicom_config.settings.reading_validation_mode = pydicom_config.IGNORE
            logging.getLogger("pydicom").addFilter(_PydicomFilter())
            _silenced = True
        if not _warnings_filtered():
            warnings.filterwarnings("ignore", module=QUIET_MODULES)


def _warnings_filtered() -> bool:
    return any(
        action == "ignore" and module is not None and module.pattern == QUIET_MODULES
        for action, _, _, module, _ in warnings.filters
    )


@contextmanager
def quiet_pydicom() -> Iterator[None]:
    """A block in which pydicom logs and warns nothing that could carry PHI.

    Thread-safe: it only makes sure :func:`silence_pydicom` happened, and changes nothing
    on the way out.
    """
    silence_pydicom()
    yield


# -- concurrent.futures and Prefect task runners ------------------------------------------


def max_workers(executor: Executor | object, default: int) -> int:
    """The worker count of a ``concurrent.futures`` executor or a Prefect ``ThreadPoolTaskRunner``.

    Neither publishes it: both keep it as ``_max_workers`` (``None`` when the runner was
    made without one; then ``default``).
    """
    return getattr(executor, "_max_workers", None) or default


def pool_pids(executor: Executor) -> list[int]:
    """The process ids of a ``ProcessPoolExecutor``'s workers (``_processes``), to measure their CPU."""
    return list(getattr(executor, "_processes", None) or {})


# -- Prefect's client ------------------------------------------------------------------------


def prefect_http_client(client: Any) -> Any:  # noqa: ANN401 - httpx client of a Prefect client
    """The ``httpx`` client inside a Prefect ``SyncPrefectClient``, for an endpoint it has no method for.

    Its base URL, authentication and retries are Prefect's (used to POST events and know
    they were accepted, which ``emit_event`` cannot say).
    """
    return client._client  # noqa: SLF001


# -- Prefect's flow engine -------------------------------------------------------------------


def end_flow_runs_promptly() -> None:
    """Let a synchronous flow run end without waiting up to 1 s for its heartbeat thread.

    Prefect's flow engine (``prefect.flow_engine._send_heartbeats``) joins the heartbeat
    thread at the end of every synchronous flow run, subflows included; the thread sleeps in
    1-s steps, so each run ended 0-1 s late (an ingest and its warehouse subflow: up to 2 s).
    Prefect's asynchronous engine already leaves the thread to stop on its own
    (``join_on_exit=False``); this makes the synchronous one do the same. The thread is a
    daemon, checks the stop flag before every step and sends no heartbeat for a final state.
    Idempotent: each flow module calls it when imported.
    """
    from prefect import flow_engine

    original = flow_engine._send_heartbeats  # noqa: SLF001
    if getattr(original, "without_join", False):
        return

    @contextmanager
    def send_heartbeats(engine: Any, join_on_exit: bool = True) -> Iterator[None]:  # noqa: ANN401, ARG001
        with original(engine, join_on_exit=False):
            yield

    send_heartbeats.without_join = True  # type: ignore[attr-defined]
    send_heartbeats.original = original  # type: ignore[attr-defined]
    flow_engine._send_heartbeats = send_heartbeats  # noqa: SLF001


# -- dbt-duckdb ------------------------------------------------------------------------------


def close_dbt_duckdb() -> None:
    """Close the DuckDB database dbt-duckdb keeps open in this process after a run.

    dbt-duckdb caches it on ``DuckDBConnectionManager._ENV`` (under ``_LOCK``) for the
    life of the process; nothing public releases it.
    """
    try:
        from dbt.adapters.duckdb.connections import DuckDBConnectionManager
    except ImportError:  # dbt-duckdb not installed: nothing was opened
        return
    with DuckDBConnectionManager._LOCK:  # noqa: SLF001
        env, DuckDBConnectionManager._ENV = DuckDBConnectionManager._ENV, None  # noqa: SLF001
    if env is not None:
        env.close()
