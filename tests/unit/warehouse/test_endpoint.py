"""The pre-run check of the Snowflake endpoint: one error naming host and port, after a few tries."""

from __future__ import annotations

import socket
import time

import pytest

from tasks.errors import SnowflakeUnreachable
from tasks.warehouse.endpoint import check_reachable


def test_a_listening_port_passes_and_a_closed_one_fails_after_its_tries():
    with socket.socket() as listener:
        listener.bind(("127.0.0.1", 0))
        listener.listen()
        check_reachable("127.0.0.1", listener.getsockname()[1])
        closed = listener.getsockname()[1]
    started = time.monotonic()
    with pytest.raises(SnowflakeUnreachable, match=f"127.0.0.1:{closed} is unreachable .* after 3 tries"):
        check_reachable("127.0.0.1", closed, delays=(0.05, 0.05))
    assert time.monotonic() - started >= 0.1
