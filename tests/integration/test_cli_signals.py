"""Ctrl-C stops the long-running commands with exit code 130, without a traceback."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

pytestmark = pytest.mark.integration

ROOT = Path(__file__).resolve().parents[2]


def test_ctrl_c_stops_watch_with_130(prefect_server, tmp_path):
    from prefect.settings import PREFECT_API_URL

    env = {**os.environ, "PREFECT_API_URL": PREFECT_API_URL.value()}
    proc = subprocess.Popen([sys.executable, "-m", "flows", "watch", "--folder", str(tmp_path), "--interval", "0.5"],
                            cwd=ROOT, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    deadline = time.monotonic() + 300
    started = ""
    while time.monotonic() < deadline and "watch" not in started.lower():
        line = proc.stderr.readline()
        assert line or proc.poll() is None, "watch exited before it started"
        started += line
    proc.send_signal(signal.SIGINT)
    out, err = proc.communicate(timeout=60)
    assert proc.returncode == 130, started + err
    assert "Traceback" not in started + err
