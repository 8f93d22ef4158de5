"""The S3 benchmark's --split-cores: a child (and what it starts) runs on the cores it was given."""

from __future__ import annotations

import os
import subprocess
import sys

import pytest

from benchmarks.s3 import _pinned


@pytest.mark.skipif(len(os.sched_getaffinity(0)) < 2, reason="needs two cores to tell a pinned child apart")
def test_a_pinned_child_and_its_own_children_run_on_the_given_core():
    grandchild = "import subprocess, sys; subprocess.run([sys.executable, '-c', 'import os; print(sorted(os.sched_getaffinity(0)))'])"
    done = subprocess.run([sys.executable, "-c", grandchild], preexec_fn=_pinned({1}), capture_output=True, text=True, check=True)
    assert done.stdout.strip() == "[1]"
    free = subprocess.run([sys.executable, "-c", grandchild], preexec_fn=_pinned(None), capture_output=True, text=True, check=True)
    assert free.stdout.strip() == str(sorted(os.sched_getaffinity(0)))
