"""The process pool extraction, previews and archive copies share: one per process, started early.

Workers fork from a fork server that has imported extraction and the decoders once, and
stay for the life of the process, so no batch pays a start-up cost. This module imports
nothing heavy: ``python -m flows ingest`` starts the pool before it imports Prefect, so the
fork server imports pydicom, polars and the decoders on the other core while this process
imports Prefect (about 2 s each, side by side instead of one after the other).
"""

from __future__ import annotations

import atexit
import functools
import multiprocessing
import os
import threading
from concurrent.futures import ProcessPoolExecutor

#: What the fork server imports once; workers fork from it with these loaded.
PRELOAD = ["tasks.dicom.extract", "tasks.pixels.preview", "tasks.pixels.transcode"]


def make_process_pool(workers: int) -> ProcessPoolExecutor:
    """A new process pool for extraction and previews (forkserver: safe beside Prefect's threads).

    Workers import extraction and the decoders when they start; reuse the pool across
    batches (:func:`shared_process_pool`).
    """
    if "forkserver" in multiprocessing.get_all_start_methods():
        context = multiprocessing.get_context("forkserver")
        context.set_forkserver_preload(PRELOAD)
    else:
        context = multiprocessing.get_context("spawn")
    return ProcessPoolExecutor(max_workers=workers, mp_context=context, initializer=_warm_worker)


def _warm_worker() -> None:
    """Import the decoders and the JPEG encoder when a worker starts, not in its first batch."""
    import jpeg_ls  # noqa: F401
    import libjpeg  # noqa: F401
    import openjpeg  # noqa: F401
    from PIL import JpegImagePlugin  # noqa: F401
    from pydicom.pixels.decoders import pyjpegls, pylibjpeg  # noqa: F401

    import tasks.pixels.transcode  # noqa: F401


def shared_process_pool(workers: int) -> ProcessPoolExecutor | None:
    """The pool this process's batches share, started on first use; ``None`` for one worker.

    ``workers <= 1``, or inside a daemonic process (a Dask or multiprocessing worker may
    not start children; there the cluster already spreads batches over cores), means the
    caller works in its own thread.
    """
    if workers <= 1 or multiprocessing.current_process().daemon:
        return None
    with _POOL_LOCK:  # batches run on several threads; start one pool, not one each
        return _pool(workers)


def reset_process_pool() -> None:
    """Forget the shared pool (after a worker died and broke it); the next use starts a new one."""
    _pool.cache_clear()


def warm_process_pool(workers: int | None = None) -> None:
    """Start the shared pool's workers in the background and return at once.

    Starting a worker waits for the fork server's imports (1-2 s); a thread does the
    waiting, so the caller goes on (importing Prefect, listing the source) meanwhile.
    """
    n = workers or os.cpu_count() or 1
    pool = shared_process_pool(n)
    if pool is not None:
        threading.Thread(target=_start_workers, args=(pool, n), name="warm-process-pool", daemon=True).start()


def _start_workers(pool: ProcessPoolExecutor, n: int) -> None:
    try:
        for _ in range(n):
            pool.submit(int)
    except RuntimeError:  # the process is exiting and shut the pool down first: nothing to warm
        pass


_POOL_LOCK = threading.Lock()


@functools.cache
def _pool(workers: int) -> ProcessPoolExecutor:
    pool = make_process_pool(workers)
    atexit.register(pool.shutdown, wait=False, cancel_futures=True)
    return pool
