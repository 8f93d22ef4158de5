"""What the Prefect server recorded of a run: for tests that assert on run and task-run states."""

from __future__ import annotations

import json
import time
from pathlib import Path
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


def flow_run_into(lake: Path):  # noqa: ANN201 - a FlowRun
    """The last top-level flow run started on the server whose parameters name ``lake``.

    Not the last run on the server: the other worker's runs are there too.
    """
    from prefect.client.orchestration import get_client
    from prefect.client.schemas.sorting import FlowRunSort

    with get_client(sync_client=True) as client:
        runs = client.read_flow_runs(sort=FlowRunSort.START_TIME_DESC, limit=200)
    return next(r for r in runs if r.parent_task_run_id is None and str(lake) in json.dumps(r.parameters, default=str))
