"""``python -m flows`` ends its process without the interpreter's teardown: its status and its
output must be exactly what they would be otherwise."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]


def _run(argv: list[str]) -> subprocess.CompletedProcess:
    # stdout block-buffered, as for any pipe when PYTHONUNBUFFERED is not set
    env = {k: v for k, v in os.environ.items() if k != "PYTHONUNBUFFERED"} | {"PYTHONPATH": str(ROOT)}
    return subprocess.run(argv, cwd=ROOT, env=env, capture_output=True, text=True, timeout=120, check=False)


def _as_main(body: str) -> subprocess.CompletedProcess:
    """flows/__main__.py run as `python -m flows` runs it, with ``main`` replaced by ``body``."""
    code = "import runpy, flows.cli\ndef main():\n" + "".join(f"    {line}\n" for line in body.splitlines())
    code += "flows.cli.main = main\nrunpy.run_module('flows', run_name='__main__', alter_sys=True)\n"
    return _run([sys.executable, "-c", code])


def test_mains_status_and_buffered_output_survive_the_exit():
    # a pipe buffers stdout: nothing printed may be lost by ending the process early
    done = _as_main("print('x' * 100_000)\nprint('done')\nreturn 3")
    assert done.returncode == 3
    assert done.stdout == "x" * 100_000 + "\ndone\n"


def test_help_and_usage_errors_keep_argparse_status():
    helped = _run([sys.executable, "-m", "flows", "--help"])
    assert helped.returncode == 0 and "bench" in helped.stdout
    wrong = _run([sys.executable, "-m", "flows", "ingest", "--nonsense"])
    assert wrong.returncode == 2 and "unrecognized arguments: --nonsense" in wrong.stderr


def test_an_unexpected_error_keeps_its_traceback_and_status_1():
    failed = _as_main("print('before the failure')\nraise LookupError('a bug')")
    assert failed.returncode == 1
    assert failed.stdout == "before the failure\n"
    assert "Traceback" in failed.stderr and "LookupError: a bug" in failed.stderr
