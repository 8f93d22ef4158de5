"""``python -m flows bench extract``: extraction speed against a bare pydicom loop."""

from __future__ import annotations

import argparse
import os


def register(subparsers: argparse._SubParsersAction) -> None:
    """Add ``bench`` with its ``extract`` benchmark."""
    bench = subparsers.add_parser("bench", help="benchmarks that print figures against a reference")
    kinds = bench.add_subparsers(dest="benchmark", required=True)
    extract = kinds.add_parser(
        "extract",
        help="files/s of extraction (frames + Parquet) vs a bare pydicom.dcmread(stop_before_pixels=True) loop",
    )
    extract.add_argument("--files", type=int, default=2000, help="synthetic files to generate (default 2000)")
    extract.add_argument("--batch-size", type=int, default=250, help="files per extract_batch call (default 250)")
    extract.add_argument(
        "--workers", type=int, default=os.cpu_count() or 1, help="processes for the all-cores figure (default: cpu count)"
    )
    extract.add_argument("--repeats", type=int, default=3, help="interleaved rounds, best of each counts (default 3)")
    extract.add_argument("--keep", default=None, help="folder to keep the generated files and lakes in (default: a temp dir)")
    extract.set_defaults(func=cmd_bench_extract)


def cmd_bench_extract(args: argparse.Namespace) -> int:
    import multiprocessing
    import tempfile
    from concurrent.futures import ProcessPoolExecutor
    from pathlib import Path

    from benchmarks.extract import run_benchmark, warm_up

    executor = None
    if args.workers > 1:
        context = multiprocessing.get_context("forkserver")
        context.set_forkserver_preload(["tasks.dicom.extract"])
        executor = ProcessPoolExecutor(args.workers, mp_context=context)
        list(executor.map(warm_up, [0.5] * args.workers))  # start every worker before timing
    try:
        with tempfile.TemporaryDirectory(prefix="bench-extract-") as tmp:
            root = Path(args.keep) if args.keep else Path(tmp)
            root.mkdir(parents=True, exist_ok=True)
            print(f"generating {args.files} synthetic files...", flush=True)
            result = run_benchmark(
                root, files=args.files, batch_size=args.batch_size, executor=executor, workers=args.workers,
                repeats=args.repeats,
            )
    finally:
        if executor is not None:
            executor.shutdown()
    print(result.report())
    return 0
