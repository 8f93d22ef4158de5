"""``python -m flows bench-events``: seconds from an S3 upload to warehouse rows, each hop of the real path."""

from __future__ import annotations

import argparse
import os
import tempfile
from pathlib import Path


def register(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser(
        "bench-events",
        help="benchmark upload -> warehouse rows on moto S3/SQS, the bridge, a local server and a process worker",
    )
    p.add_argument("--files", type=int, default=4, help="files uploaded (default 4, small profile)")
    p.add_argument("--window", type=float, default=2.0, help="the bridge's burst window in seconds (default 2)")
    p.add_argument("--poll", type=int, default=2, help="the worker's polling interval in seconds (default 2)")
    p.add_argument("--workdir", default=None)
    p.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    from benchmarks.events import bench_events
    from flows.commands.bench_ingest import _start_server
    from tasks.dicom.corpus import generate_corpus

    work = Path(args.workdir or tempfile.mkdtemp(prefix="dicom-bench-events-"))
    generate_corpus(work / "upload", files=args.files, profile="small", seed=3)
    files = sorted(p for p in (work / "upload").rglob("*") if p.is_file())
    print(f"machine: {os.cpu_count()} cores, load average {' '.join(f'{x:.1f}' for x in os.getloadavg())}; workdir {work}")
    server, api = _start_server()
    try:
        hops = bench_events(work, api, files=files, window=args.window, poll_seconds=args.poll)
    finally:
        if server is not None:
            server.terminate()
            server.wait(timeout=30)
    previous = 0.0
    for label, at in hops:
        print(f"  {label:<52} at {at:6.1f} s  (+{at - previous:5.1f} s)")
        previous = at
    print(f"upload -> rows: {hops[-1][1]:.1f} s (target 30 s); load average after: {' '.join(f'{x:.1f}' for x in os.getloadavg())}")
    return 0
