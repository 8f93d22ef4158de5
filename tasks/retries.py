"""Retry policies of the project's tasks: I/O only, never a project error.

``retry_on_io`` refuses to retry a project error (a bad input, a missing folder), so a
corrupt file is never retried, nor a full disk: it does not free itself within the
backoff, so every task that writes local files reports it at once as a ``DiskFullError``
naming the folder (``tasks.lake.files.disk_full_reported``).

No task caches (``NO_CACHE``): the lake's manifest decides what is done, some inputs hold
the de-identification secret or credentials, and Prefect's default policy would hash
every input of every task run (the objects of a batch: ~2 s of a 20,000-file run).
"""

from __future__ import annotations

from dataclasses import dataclass, field

from tasks.errors import DicomEtlError, SnowflakeUnreachable
from tasks.lake.files import is_disk_full
from tasks.lake.s3 import is_transient


def _failure(state) -> BaseException | None:  # noqa: ANN001 - a Prefect State
    """The exception a failed task run raised (``None`` if it raised none)."""
    try:
        state.result()
    except Exception as exc:  # noqa: BLE001 - handed to the retry conditions below
        return exc
    return None


def _is_io_blip(exc: BaseException | None) -> bool:
    """An OS-level I/O failure (TimeoutError, ConnectionError...) that is not ours nor a full disk."""
    return isinstance(exc, OSError) and not isinstance(exc, DicomEtlError) and not is_disk_full(exc)


def retry_on_io(task, task_run, state) -> bool:  # noqa: ANN001 - Prefect's hook signature
    """Retry transient I/O failures only, never a project error (bad input or settings) nor a full disk."""
    return _is_io_blip(_failure(state))


IO_RETRIES = {"retries": 3, "retry_delay_seconds": [1, 4, 16], "retry_jitter_factor": 0.5, "retry_condition_fn": retry_on_io}


def retry_on_transient(task, task_run, state) -> bool:  # noqa: ANN001 - Prefect's hook signature
    """Retry S3 throttling, 5xx, timeouts and resets only; never a missing object, a denial or bad input."""
    exc = _failure(state)
    return exc is not None and not isinstance(exc, DicomEtlError) and is_transient(exc)


def retry_on_snowflake(task, task_run, state) -> bool:  # noqa: ANN001 - Prefect's hook signature
    """Retry a lost Snowflake connection (and local I/O blips); never a SQL error or a rejected file."""
    exc = _failure(state)
    return isinstance(exc, SnowflakeUnreachable) or _is_io_blip(exc)


#: botocore already retries each request (standard mode, 3 attempts); these are whole-task tries on top.
S3_RETRIES = {"retries": 3, "retry_delay_seconds": [1, 4, 16], "retry_jitter_factor": 0.5, "retry_condition_fn": retry_on_transient}
#: The connector already retries each request for up to ``network_timeout``; a task retry adds a
#: new session (a fresh login) after one was lost, twice at most.
SNOWFLAKE_RETRIES = {"retries": 2, "retry_delay_seconds": [2, 8], "retry_jitter_factor": 0.5, "retry_condition_fn": retry_on_snowflake}


@dataclass
class BatchOutcome:
    """What one batch produced; small, so it travels between tasks cheaply."""

    batch_id: str
    rows: dict[str, int] = field(default_factory=dict)
    errors: list[dict] = field(default_factory=list)
    pixel_images: list[tuple[str, str, str]] = field(default_factory=list)
