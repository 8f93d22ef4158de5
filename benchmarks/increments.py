"""Increments against the size of the lake: a lake of N files, then 4 new files, then nothing new.

Each side runs ``python -m flows ingest`` as a user does (extraction, previews and the
warehouse build), in its own process on a running Prefect server, so wall time includes
the process start and peak RSS is that command's (its largest process, pool workers
included). The lakes of the different N are built in the same run, side by side.
"""

from __future__ import annotations

import argparse
import os
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path

#: Files added by the increment (the issue's figure).
INCREMENT_FILES = 4


@dataclass(frozen=True)
class Step:
    """Wall time and peak RSS of one command."""

    label: str
    seconds: float
    peak_rss_mb: float


def run_command(label: str, cmd: list[str], env: dict[str, str], log: Path) -> Step:
    """Run a command to its end; its wall time and the peak RSS of its largest process (``wait4``)."""
    with log.open("ab") as out:
        out.write(f"\n$ {' '.join(cmd)}\n".encode())
        out.flush()
        start = time.perf_counter()
        proc = subprocess.Popen(cmd, env=env, stdout=out, stderr=subprocess.STDOUT)
        _, status, usage = os.wait4(proc.pid, 0)
        seconds = time.perf_counter() - start
        proc.returncode = os.waitstatus_to_exitcode(status)
    if proc.returncode != 0:
        msg = f"{label} failed (exit {proc.returncode}); see {log}"
        raise RuntimeError(msg)
    return Step(label, seconds, usage.ru_maxrss / 1024)


def ingest_command(source: Path, lake: Path, warehouse: Path) -> list[str]:
    """``python -m flows ingest`` on a folder, building the warehouse, as a user runs it."""
    return [sys.executable, "-m", "flows", "ingest", "--source", str(source), "--lake", str(lake), "--warehouse", str(warehouse)]


def synth_command(out: Path, files: int, *, profile: str, seed: int) -> list[str]:
    return [sys.executable, "-m", "flows", "synth", "--out", str(out), "--files", str(files), "--profile", profile, "--seed", str(seed)]


def bench_increments(work: Path, n: int, env: dict[str, str], *, profile: str = "small", seed: int = 0) -> list[Step]:
    """Lake of ``n`` files, then an increment of 4 files, then a run with nothing new; the three steps."""
    root = work / f"increments-{profile}-{n}"
    incoming, lake, warehouse, log = root / "incoming", root / "lake", root / "warehouse.duckdb", root / "commands.log"
    root.mkdir(parents=True, exist_ok=True)
    if not (incoming / "lake").exists():
        run_command("synth", synth_command(incoming / "lake", n, profile=profile, seed=seed), env, log)
    steps = [run_command(f"lake of {n}", ingest_command(incoming, lake, warehouse), env, log)]
    run_command("synth", synth_command(incoming / f"increment-{time.time_ns()}", INCREMENT_FILES, profile=profile, seed=seed + 1), env, log)
    steps.append(run_command(f"+{INCREMENT_FILES} files", ingest_command(incoming, lake, warehouse), env, log))
    steps.append(run_command("nothing new", ingest_command(incoming, lake, warehouse), env, log))
    warehouse_only = [sys.executable, "-m", "flows", "warehouse", "--lake", str(lake), "--warehouse", str(warehouse)]
    steps.append(run_command("warehouse, nothing new", warehouse_only, env, log))
    return steps


def main(args: argparse.Namespace) -> int:
    """``python -m flows bench ingest --increments``: every size of ``--files`` side by side."""
    from benchmarks.ingest import _start_server

    work = Path(args.workdir or tempfile.mkdtemp(prefix="dicom-bench-increments-"))
    server, api = _start_server()
    env = {**os.environ, "PREFECT_API_URL": api}
    env.setdefault("DICOM_ETL_DEID_SECRET", "benchmark-secret")
    print(f"machine: {os.cpu_count()} cores, load average {' '.join(f'{x:.1f}' for x in os.getloadavg())}; workdir {work}")
    results = {}
    try:
        for n in args.files:
            results[n] = bench_increments(work, n, env, profile=args.profile, seed=args.seed)
            for step in results[n]:
                print(f"  N={n:<6} {step.label:<24} {step.seconds:7.1f} s  peak RSS {step.peak_rss_mb:6.0f} MB", flush=True)
    finally:
        if server is not None:
            server.terminate()
            server.wait(timeout=30)
    labels = [s.label.replace(f"lake of {args.files[0]}", "lake of N") for s in results[args.files[0]]]
    print(f"\n{'step':<24}" + "".join(f"{'N=' + str(n):>24}" for n in args.files))
    for i, label in enumerate(labels):
        cells = "".join(f"{results[n][i].seconds:>10.1f} s {results[n][i].peak_rss_mb:>7.0f} MB" for n in args.files)
        print(f"{label:<24}{cells}")
    if len(args.files) >= 2:
        lo, hi = args.files[0], args.files[-1]
        inc_lo, inc_hi = results[lo][1], results[hi][1]
        print(f"+{INCREMENT_FILES} files, N={hi} / N={lo}: time {inc_hi.seconds / inc_lo.seconds:.2f}x, "
              f"peak RSS {inc_hi.peak_rss_mb / inc_lo.peak_rss_mb:.2f}x")
    print(f"load average after: {' '.join(f'{x:.1f}' for x in os.getloadavg())}")
    return 0
