"""What the Prefect server recorded of a run: for tests that assert on run and task-run states."""

from __future__ import annotations

from uuid import UUID


def task_runs(flow_run_id: UUID) -> list:
    """Every task run of a flow run, as the server has it."""
    from prefect.client.orchestration import get_client
    from prefect.client.schemas.filters import FlowRunFilter, FlowRunFilterId

    with get_client(sync_client=True) as client:
        return client.read_task_runs(flow_run_filter=FlowRunFilter(id=FlowRunFilterId(any_=[flow_run_id])))


def latest_flow_run():  # noqa: ANN201 - a FlowRun
    """The flow run started last on the server."""
    from prefect.client.orchestration import get_client
    from prefect.client.schemas.sorting import FlowRunSort

    with get_client(sync_client=True) as client:
        [run] = client.read_flow_runs(sort=FlowRunSort.START_TIME_DESC, limit=1)
    return run
