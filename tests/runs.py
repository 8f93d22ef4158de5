"""What the Prefect server recorded of a run: for tests that assert on run and task-run states."""

from __future__ import annotations

import time
from uuid import UUID


def task_runs(flow_run_id: UUID, settle: float = 30) -> list:
    """Every task run of a flow run that has ended, as the server has it once it has recorded them.

    Task-run states reach the server as events, which it records a moment later: read right
    after the flow run ends, a failed task run can still show as Running. This waits (up to
    ``settle`` seconds) until there are task runs and none is Running (a task that never
    started stays Pending).
    """
    from prefect.client.orchestration import get_client
    from prefect.client.schemas.filters import FlowRunFilter, FlowRunFilterId

    deadline = time.monotonic() + settle
    with get_client(sync_client=True) as client:
        while True:
            runs = client.read_task_runs(flow_run_filter=FlowRunFilter(id=FlowRunFilterId(any_=[flow_run_id])))
            if (runs and not any(r.state and r.state.is_running() for r in runs)) or time.monotonic() > deadline:
                return runs
            time.sleep(0.2)


def latest_flow_run():  # noqa: ANN201 - a FlowRun
    """The flow run started last on the server."""
    from prefect.client.orchestration import get_client
    from prefect.client.schemas.sorting import FlowRunSort

    with get_client(sync_client=True) as client:
        [run] = client.read_flow_runs(sort=FlowRunSort.START_TIME_DESC, limit=1)
    return run
