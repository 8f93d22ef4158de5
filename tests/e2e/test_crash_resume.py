"""A real ingest subprocess killed with SIGKILL at random points, then re-run, ends in the
state of an uninterrupted run: same warehouse rows, no duplicates, no partial files."""

from __future__ import annotations

import os
import random
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

import duckdb
import pytest

from tasks.warehouse.dbt import PROCESSED_TABLES

pytestmark = pytest.mark.e2e

ROOT = Path(__file__).resolve().parents[2]
SEEDS = (1, 2)  # kills at 17% (batches) and 63% (late batches or the dbt build) of a clean run


@pytest.fixture(scope="module")
def corpus(pydicom_dir, tmp_path_factory) -> Path:
    from tasks.dicom.corpus import generate_corpus

    root = tmp_path_factory.mktemp("crash-corpus")
    shutil.copytree(pydicom_dir, root / "pydicom")
    generate_corpus(root / "synthetic", files=120, seed=5, images_per_series=20)
    return root


@pytest.fixture(scope="module")
def env(prefect_server) -> dict[str, str]:
    from prefect.settings import PREFECT_API_URL

    return {**os.environ, "PREFECT_API_URL": PREFECT_API_URL.value(), "DICOM_ETL_DEID_SECRET": "crash-secret",
            "PYTHONPATH": str(ROOT)}


def _ingest(corpus: Path, out: Path, env: dict[str, str]) -> subprocess.Popen:
    cmd = [sys.executable, "-m", "flows", "ingest", "--source", str(corpus), "--lake", str(out / "lake"),
           "--warehouse", str(out / "warehouse.duckdb"), "--batch-size", "40"]
    return subprocess.Popen(cmd, cwd=ROOT, env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
                            start_new_session=True)


def _state(out: Path) -> dict[str, list[tuple]]:
    """Every processed row, less the load time (``ingested_at``), which differs between runs by nature."""
    with duckdb.connect(str(out / "warehouse.duckdb"), read_only=True) as con:
        return {
            t: sorted(con.sql(f"select columns(c -> c <> 'ingested_at') from processed.{t}").fetchall(), key=repr)
            for t in PROCESSED_TABLES
        }


@pytest.fixture(scope="module")
def clean_run(corpus, env, tmp_path_factory):
    out = tmp_path_factory.mktemp("clean")
    started = time.monotonic()
    proc = _ingest(corpus, out, env)
    output = proc.communicate(timeout=900)[0].decode(errors="replace")
    assert proc.returncode == 0, output[-3000:]
    return out, time.monotonic() - started


@pytest.mark.parametrize("seed", SEEDS)
def test_killed_and_resumed_run_equals_clean_run(seed, corpus, env, clean_run, tmp_path):
    clean_out, duration = clean_run
    # at most 65% of the clean run: the first (clean) run is slower than later ones (cold caches)
    delay = random.Random(seed).uniform(0.1, 0.65) * duration
    proc = _ingest(corpus, tmp_path, env)
    time.sleep(delay)
    finished_first = proc.poll() is not None
    if not finished_first:
        os.killpg(proc.pid, signal.SIGKILL)
    proc.wait(timeout=60)
    # the kill landed mid-run: the run was still going (in any stage: listing, batches or the dbt build)
    assert not finished_first and proc.returncode == -signal.SIGKILL, f"the run ended before the kill at {delay:.1f}s"

    resumed = _ingest(corpus, tmp_path, env)
    output = resumed.communicate(timeout=900)[0].decode(errors="replace")
    assert resumed.returncode == 0, f"killed after {delay:.1f}s; resume failed:\n{output[-3000:]}"

    expected, got = _state(clean_out), _state(tmp_path)
    for table in PROCESSED_TABLES:
        assert len(got[table]) == len(set(map(repr, got[table]))), f"{table}: duplicate rows"
        assert got[table] == expected[table], f"{table} differs after a kill at {delay:.1f}s"
    assert not list((tmp_path / "lake").rglob("*.partial"))
