"""Which failures the task retry conditions retry: judged on real Prefect states and real exception classes."""

from __future__ import annotations

import errno

import pytest
from prefect.states import Completed, Failed
from snowflake.connector import errors as sf

from tasks.errors import DiskFullError, FileRejected, Reason, SnowflakeUnreachable, WarehouseError
from tasks.retries import retry_on_io, retry_on_snowflake, retry_on_transient
from tasks.warehouse.snowflake import is_connection_loss


def _retried(condition, exc: BaseException | None) -> bool:  # noqa: ANN001
    state = Completed() if exc is None else Failed(data=exc)
    return condition(None, None, state)


@pytest.mark.parametrize(
    ("exc", "expected"),
    [
        (ConnectionResetError(errno.ECONNRESET, "reset"), True),
        (TimeoutError("timed out"), True),
        (OSError(errno.ENOSPC, "No space left on device"), False),  # a full disk does not free itself
        (DiskFullError("the disk is full"), False),
        (FileRejected(Reason.NOT_DICOM, "no preamble"), False),
        (ValueError("bad"), False),
        (None, False),
    ],
)
def test_retry_on_io(exc, expected):
    assert _retried(retry_on_io, exc) is expected


def test_retry_on_snowflake_retries_a_lost_connection_only():
    assert _retried(retry_on_snowflake, SnowflakeUnreachable("could not reach Snowflake"))
    assert _retried(retry_on_snowflake, ConnectionResetError(errno.ECONNRESET, "reset"))
    assert not _retried(retry_on_snowflake, WarehouseError("Snowflake could not load 1 file"))
    assert not _retried(retry_on_snowflake, sf.ProgrammingError(msg="SQL compilation error", errno=2003))
    assert not _retried(retry_on_transient, DiskFullError("the disk is full"))


@pytest.mark.parametrize(
    ("exc", "expected"),
    [
        (sf.OperationalError(msg="Could not connect to Snowflake backend after 2 attempt(s).", errno=250001), True),
        (sf.OperationalError(msg="Failed to execute request: ('Connection aborted.')", errno=250003), True),
        (sf.OperationalError(msg="While putting file(s) there was an error: 'PUT ... failed for exceeding maximum retries.'", errno=253003), True),
        (sf.OperationalError(msg="While putting file(s) there was an error: 'Access Denied'", errno=253003), False),
        (sf.ServiceUnavailableError(msg="503"), True),
        (sf.NonRetryableTlsError(msg="certificate verify failed", errno=250003), False),
        (sf.ProgrammingError(msg="Incorrect username or password was specified.", errno=390100), False),
        (sf.DatabaseError(msg="Database 'X' does not exist", errno=2043), False),
        (OSError("not a Snowflake error"), False),
    ],
)
def test_which_snowflake_errors_are_a_connection_loss(exc, expected):
    assert is_connection_loss(exc) is expected
