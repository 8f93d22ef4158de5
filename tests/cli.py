"""Running `python -m flows` in subprocesses, many cases at once: for tests of its error lines."""

from __future__ import annotations

import subprocess
import sys
from collections.abc import Mapping, Sequence
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]


def one_line_failures(cases: Mapping[Sequence[str], tuple[int, list[str]]], env: Mapping[str, str]) -> list[str]:
    """Run every ``argv`` at once; describe each that did not exit ``code`` with one stderr line holding ``words``."""
    procs = {
        argv: subprocess.Popen([sys.executable, "-m", "flows", *argv], cwd=ROOT, env=dict(env), text=True,
                               stdout=subprocess.PIPE, stderr=subprocess.PIPE)
        for argv in cases
    }
    failures = []
    for argv, proc in procs.items():
        _, err = proc.communicate(timeout=300)
        code, words = cases[argv]
        lines = err.splitlines()
        if proc.returncode != code or len(lines) != 1 or not all(w in lines[0] for w in words):
            failures.append(f"{' '.join(argv)}: exit {proc.returncode}, stderr:\n{err[-1500:]}")
    return failures
