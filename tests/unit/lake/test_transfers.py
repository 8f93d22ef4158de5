from __future__ import annotations

import threading
import time

import pytest

from tasks.lake.transfers import run_each


def test_run_each_keeps_order_and_bounds_concurrency():
    lock = threading.Lock()
    running, peak = 0, 0

    def work(i: int) -> int:
        nonlocal running, peak
        with lock:
            running += 1
            peak = max(peak, running)
        time.sleep(0.01)
        with lock:
            running -= 1
        return i * i

    assert run_each(work, range(40), max_concurrency=6) == [i * i for i in range(40)]
    assert 2 <= peak <= 6


def test_run_each_stops_at_the_first_error_and_raises_it():
    started = []

    def work(i: int) -> int:
        started.append(i)
        if i == 3:
            raise ConnectionResetError("reset")
        time.sleep(0.02)
        return i

    with pytest.raises(ConnectionResetError):
        run_each(work, range(200), max_concurrency=4)
    assert len(started) < 200  # what had not started was cancelled


def test_run_each_with_one_thread_runs_in_order_here():
    seen = []
    assert run_each(lambda i: seen.append((i, threading.current_thread().name)) or i, [1, 2], max_concurrency=1) == [1, 2]
    assert {name for _, name in seen} == {threading.current_thread().name}
