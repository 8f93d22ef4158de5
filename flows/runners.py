"""Where a flow's tasks run: threads on this machine, or an existing Dask cluster."""

from __future__ import annotations

from prefect.task_runners import TaskRunner, ThreadPoolTaskRunner

#: Batches in flight at once on threads, and the most tasks one batch holds a thread for
#: (stage, extract, previews, publish): a task waiting for its upstream holds its thread.
IN_FLIGHT_BATCHES = 3
TASKS_PER_BATCH = 4
THREADS = IN_FLIGHT_BATCHES * TASKS_PER_BATCH


def batch_task_runner(dask_address: str | None = None, *, threads: int = THREADS) -> TaskRunner:
    """The task runner for the batch fan-out.

    Parameters
    ----------
    dask_address : str, optional
        ``tcp://host:8786`` of a running Dask scheduler: batches then run on its workers
        (prefect-dask). The workers need this project importable and the same Prefect API.
    threads : int, default THREADS
        Threads for the local runner: enough for ``IN_FLIGHT_BATCHES`` batches; CPU-heavy
        steps run on a shared process pool.
    """
    if dask_address:
        from prefect_dask import DaskTaskRunner

        return DaskTaskRunner(address=dask_address)
    return ThreadPoolTaskRunner(max_workers=threads)
