"""Whether the warehouse's server answers at all, asked before a run starts.

A run whose Snowflake is unreachable would otherwise fail after its ingest, inside dbt,
with the connector's retries and a traceback per task; a TCP connect with a few tries of
its own says the same in one line, naming the host and port, before anything is written.
"""

from __future__ import annotations

import socket
import time

from tasks.errors import SnowflakeUnreachable

#: Seconds to wait before the 2nd and 3rd tries: a server restarting gets a few seconds.
RETRY_DELAYS = (1.0, 3.0)


def check_reachable(host: str, port: int, *, timeout: float = 5.0, delays: tuple[float, ...] = RETRY_DELAYS) -> None:
    """Open (and close) a TCP connection to ``host:port``, trying again after each of ``delays``.

    Parameters
    ----------
    host : str
        Snowflake's host (``<account>.snowflakecomputing.com``, or a compatible endpoint).
    port : int
    timeout : float, default 5.0
        Seconds each try may take.
    delays : tuple of float
        Pauses between tries; ``len(delays) + 1`` tries in all.

    Raises
    ------
    SnowflakeUnreachable
        After the last try, naming host, port, the last error and what to check.
    """
    last: OSError | None = None
    for attempt, delay in enumerate((0.0, *delays)):
        time.sleep(delay)
        try:
            with socket.create_connection((host, port), timeout=timeout):
                return
        except OSError as exc:
            last = exc
    why = getattr(last, "strerror", None) or type(last).__name__
    msg = (
        f"Snowflake at {host}:{port} is unreachable ({why}) after {attempt + 1} tries over {sum(delays):.0f} s; "
        "check the host and port (the settings block's snowflake_host/snowflake_port, or the account in its "
        "SnowflakeConnector block), the network, and that the server is up, then run again"
    )
    raise SnowflakeUnreachable(msg)
