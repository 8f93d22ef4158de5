"""Running `python -m flows`: in this process (most cases), or in subprocesses, many at once (exit codes, Ctrl-C)."""

from __future__ import annotations

import logging
import subprocess
import sys
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import IO

import pytest

ROOT = Path(__file__).resolve().parents[1]


def run_main(argv: Sequence[str], capsys: pytest.CaptureFixture[str]) -> tuple[int, str, str]:
    """``python -m flows ARGV`` in this process: its exit code, stdout and stderr.

    The code is ``main``'s return value, or that of the ``SystemExit`` argparse raises (usage
    errors, ``--help``): what the process would exit with.
    """
    from flows.cli import main

    capsys.readouterr()
    try:
        code = main(list(argv))
    except SystemExit as exc:
        code = exc.code if isinstance(exc.code, int) else (0 if exc.code is None else 1)
    finally:
        # main silences warnings once it has printed its error line (for the exit); not for the next test
        logging.disable(logging.NOTSET)
    out, err = capsys.readouterr()
    return code, out, err


def one_line_failure(argv: Sequence[str], code: int, words: Sequence[str], result: tuple[int, str, str]) -> str | None:
    """Why ``result`` (exit code, stdout, stderr) is not exit ``code`` with one stderr line holding ``words``."""
    got, _, err = result
    lines = err.splitlines()
    if got != code or len(lines) != 1 or not all(w in lines[0] for w in words):
        return f"{' '.join(argv)}: exit {got}, stderr:\n{err[-1500:]}"
    return None


def one_line_failures(cases: Mapping[Sequence[str], tuple[int, list[str]]], env: Mapping[str, str]) -> list[str]:
    """Run every ``argv`` at once in a subprocess; describe each that did not exit ``code`` with one stderr line holding ``words``."""
    procs = {
        argv: subprocess.Popen([sys.executable, "-m", "flows", *argv], cwd=ROOT, env=dict(env), text=True,
                               stdout=subprocess.PIPE, stderr=subprocess.PIPE)
        for argv in cases
    }
    failures = []
    for argv, proc in procs.items():
        _, err = proc.communicate(timeout=300)
        code, words = cases[argv]
        failure = one_line_failure(argv, code, words, (proc.returncode, "", err))
        if failure:
            failures.append(failure)
    return failures


def stop(proc: subprocess.Popen, log: IO | None = None, timeout: float = 30) -> None:
    """End a process a test started: SIGTERM, SIGKILL if it is still up after ``timeout`` s; close its log."""
    proc.terminate()
    try:
        proc.wait(timeout=timeout)
    except subprocess.TimeoutExpired:
        proc.kill()
        proc.wait()
    if log is not None:
        log.close()
