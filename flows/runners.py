"""Where a flow's tasks run: threads on this machine, or an existing Dask cluster."""

from __future__ import annotations

from prefect.task_runners import TaskRunner, ThreadPoolTaskRunner


def batch_task_runner(dask_address: str | None = None, *, threads: int = 4) -> TaskRunner:
    """The task runner for the batch fan-out.

    Parameters
    ----------
    dask_address : str, optional
        ``tcp://host:8786`` of a running Dask scheduler: batches then run on its workers
        (prefect-dask). The workers need this project importable and the same Prefect API.
    threads : int, default 4
        Threads for the local runner; batches overlap I/O, and CPU-heavy steps use their
        own process pools.
    """
    if dask_address:
        from prefect_dask import DaskTaskRunner

        return DaskTaskRunner(address=dask_address)
    return ThreadPoolTaskRunner(max_workers=threads)
