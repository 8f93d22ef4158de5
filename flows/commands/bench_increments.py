"""``python -m flows bench-increments``: a lake of N files, +4 files, nothing new; wall time and peak RSS side by side."""

from __future__ import annotations

import argparse
import os
import tempfile
from pathlib import Path


def register(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser(
        "bench-increments",
        help="benchmark increments: ingest a lake of N files, then 4 new files, then nothing new (dbt included)",
    )
    p.add_argument("--files", type=int, nargs="+", default=[6000, 60000], help="lake sizes (default 6000 60000)")
    p.add_argument("--profile", default="small", choices=["small", "realistic"], help="corpus profile")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--workdir", default=None, help="where corpora, lakes and warehouses go (default: a temp dir)")
    p.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    from benchmarks.increments import INCREMENT_FILES, bench_increments
    from flows.commands.bench_ingest import _start_server

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
