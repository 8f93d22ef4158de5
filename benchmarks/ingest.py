"""``python -m flows bench ingest``: the pipeline end to end vs a naive reference and a bare loop.

Each variant runs in its own subprocess on the same files in the same run, so peak RSS is
its own and the figures are comparable; the Prefect server's start is not timed.
"""

from __future__ import annotations

import argparse
import atexit
import json
import os
import re
import resource
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from flows.cli import spawn_server, wait_for_api

VARIANTS = ("naive", "bare", "pipeline")


#: Options of ``bench ingest`` a variant's own process is given too (``--batch-size``...).
VARIANT_OPTIONS = ("batch_size", "dbt")


def variant_options(args: argparse.Namespace) -> list[str]:
    """The command-line options of :data:`VARIANT_OPTIONS` that were given, for a variant's process."""
    out: list[str] = []
    for name in VARIANT_OPTIONS:
        value = getattr(args, name, None)
        if value is not None and value is not False:
            out += [f"--{name.replace('_', '-')}"] + ([] if value is True else [str(value)])
    return out


def _peak_rss_mb() -> float:
    """Peak RSS of the largest process of the variant: itself or one of its workers.

    Its own peak is VmHWM: ``ru_maxrss`` would carry over the peak of the parent it was
    started from (Linux keeps it through fork and exec).
    """
    status = Path("/proc/self/status")
    found = re.search(r"VmHWM:\s+(\d+) kB", status.read_text()) if status.exists() else None
    own = int(found[1]) if found else resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    children = resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss
    return max(own, children) / 1024


def _run_one(args: argparse.Namespace) -> int:
    """Child process: run one variant, print one JSON line."""
    source, out = Path(args.source), Path(args.out)
    files = sorted(p for p in source.rglob("*") if p.is_file())
    start = time.perf_counter()
    if args.run_variant == "naive":
        from benchmarks.reference import naive_reference

        naive_reference(files, out)
    elif args.run_variant == "bare":
        from benchmarks.reference import bare_loop

        bare_loop(files, out)
    else:  # as a user runs it: `python -m flows ingest [--no-dbt]`, the same process
        from flows.cli import main

        argv = ["ingest", "--source", str(source), "--lake", str(out / "lake"),
                "--warehouse", str(out / "warehouse.duckdb"), *([] if args.dbt else ["--no-dbt"])]
        if main([*argv, "--batch-size", str(args.batch_size)] if args.batch_size else argv) != 0:
            msg = "the pipeline variant failed (its error is above)"
            raise RuntimeError(msg)
    seconds = time.perf_counter() - start
    print(json.dumps({"seconds": seconds, "peak_rss_mb": _peak_rss_mb()}))
    return 0


def _bytecode_compiled() -> bool:
    import importlib.util

    spec = importlib.util.find_spec("prefect")
    folder = Path(spec.origin).parent if spec and spec.origin else None
    return not os.environ.get("PYTHONDONTWRITEBYTECODE") or bool(folder and (folder / "__pycache__").is_dir())


def _compile_project() -> None:
    """Bytecode for this project's own modules, as an installed package has.

    With ``PYTHONDONTWRITEBYTECODE`` set, every process of every variant would otherwise
    compile them from source again (1.5 s per process here), which is no part of the work.
    """
    import compileall

    root = Path(__file__).resolve().parents[1]
    for package in ("benchmarks", "blocks", "flows", "tasks"):
        compileall.compile_dir(root / package, quiet=1)


def _start_server() -> tuple[subprocess.Popen | None, str]:
    """The server of ``PREFECT_API_URL``, or a new one with a database of its own.

    Not the default database (``~/.prefect``): a run left there from earlier work can hold
    a deployment's concurrency slot, and the benchmark's run would wait for it forever.
    """
    if os.environ.get("PREFECT_API_URL"):
        return None, os.environ["PREFECT_API_URL"]
    home = tempfile.mkdtemp(prefix="dicom-bench-prefect-")
    atexit.register(shutil.rmtree, home, ignore_errors=True)  # after the caller has stopped the server
    proc, api = spawn_server(home)
    if wait_for_api(api, 180):
        return proc, api
    proc.terminate()
    msg = "the Prefect server for the benchmark did not start within 180 s"
    raise RuntimeError(msg)


def main(args: argparse.Namespace) -> int:
    """Run the benchmark with the options of ``bench ingest`` and print its figures (or run one variant)."""
    if args.run_variant:
        return _run_one(args)
    from tasks.dicom.corpus import generate_corpus

    work = Path(args.workdir or tempfile.mkdtemp(prefix="dicom-bench-"))
    if args.s3_latency_ms is not None:
        return _run_s3(args, work)
    server, api = _start_server() if "pipeline" in args.variants else (None, "")
    env = {**os.environ, "PREFECT_API_URL": api} if api else dict(os.environ)
    env.setdefault("DICOM_ETL_DEID_SECRET", "benchmark-secret")
    print(f"machine: {os.cpu_count()} cores; python {sys.version.split()[0]}; workdir {work}")
    _compile_project()
    if not _bytecode_compiled():
        print("note: Prefect has no compiled bytecode here and PYTHONDONTWRITEBYTECODE is set, so every "
              "process compiles it again (seconds each); run `uv sync --compile-bytecode` first")
    rows = []
    # outputs go to a folder of this run, removed at the end: deleting tens of thousands of
    # files just before a variant runs slows its file creation (ext4 skips recently freed inodes)
    work.mkdir(parents=True, exist_ok=True)
    outputs = Path(tempfile.mkdtemp(prefix="outputs-", dir=work))
    try:
        for n in args.files:
            corpus = work / f"corpus-{args.profile}-{n}"
            if not corpus.exists():
                started = time.perf_counter()
                info = generate_corpus(corpus, files=n, profile=args.profile, seed=args.seed)
                print(f"generated {info.files} files, {info.bytes / 1e6:.1f} MB in {time.perf_counter() - started:.0f} s")
            mb = sum(p.stat().st_size for p in corpus.rglob("*") if p.is_file()) / 1e6
            results = {}
            for variant in args.variants:
                out = outputs / f"{variant}-{n}"
                cmd = [sys.executable, "-m", "flows", "bench", "ingest", "--run-variant", variant,
                       "--source", str(corpus), "--out", str(out), *variant_options(args)]
                done = subprocess.run(cmd, env=env, capture_output=True, text=True, check=False)
                if done.returncode != 0:
                    print(done.stdout[-2000:], done.stderr[-4000:], file=sys.stderr)
                    msg = f"benchmark variant {variant} failed on {n} files (output above)"
                    raise RuntimeError(msg)
                figures = json.loads(done.stdout.strip().splitlines()[-1])
                results[variant] = figures
                rows.append((n, variant, figures["seconds"], n / figures["seconds"], mb / figures["seconds"], figures["peak_rss_mb"]))
                print(f"  N={n:<6} {variant:<9} {figures['seconds']:8.1f} s {n / figures['seconds']:8.1f} files/s "
                      f"{mb / figures['seconds']:7.2f} MB/s  peak RSS {figures['peak_rss_mb']:7.0f} MB", flush=True)
            if "pipeline" in results:
                for ref, label in (("naive", "c/a (vs naive)"), ("bare", "c/b (vs bare loop)")):
                    if ref in results:
                        print(f"  N={n:<6} speed-up {label}: {results[ref]['seconds'] / results['pipeline']['seconds']:.2f}x")
    finally:
        shutil.rmtree(outputs, ignore_errors=True)
        if server is not None:
            server.terminate()
            server.wait(timeout=30)
    sizes = sorted(set(args.files))
    seconds = {(n, v): t for n, v, t, *_ in rows}
    rss = {(n, v): r for n, v, *_, r in rows}
    if len(sizes) >= 2:
        lo, hi = sizes[0], sizes[-1]
        for variant in args.variants:
            if (lo, variant) in rss and (hi, variant) in rss:
                print(f"{variant:<9} peak RSS N={hi} / N={lo}: {rss[hi, variant] / rss[lo, variant]:.2f}x; "
                      f"ms per file {seconds[hi, variant] / hi * 1e3:.2f} vs {seconds[lo, variant] / lo * 1e3:.2f}")
    return 0


def _run_s3(args: argparse.Namespace, work: Path) -> int:
    """``--s3-latency-ms``: folder -> folder against s3:// -> s3:// at that latency (benchmarks/s3.py)."""
    from benchmarks.s3 import report, run_side_by_side
    from tasks.dicom.corpus import generate_corpus

    server, api = _start_server()
    env = {**os.environ, "PREFECT_API_URL": api}
    env.setdefault("DICOM_ETL_DEID_SECRET", "benchmark-secret")
    print(f"machine: {os.cpu_count()} cores; python {sys.version.split()[0]}; workdir {work}; "
          f"S3 latency {args.s3_latency_ms:g} ms per request")
    _compile_project()
    work.mkdir(parents=True, exist_ok=True)
    try:
        for n in args.files:
            corpus = work / f"corpus-{args.profile}-{n}"
            if not corpus.exists():
                generate_corpus(corpus, files=n, profile=args.profile, seed=args.seed)
            outputs = Path(tempfile.mkdtemp(prefix="outputs-", dir=work))
            try:
                figures = run_side_by_side(corpus, outputs, latency_ms=args.s3_latency_ms, env=env,
                                           batch_size=args.batch_size, max_concurrency=args.s3_max_concurrency,
                                           split_cores=args.split_cores)
            finally:
                shutil.rmtree(outputs, ignore_errors=True)
            print(f"N={n} ({args.profile})")
            print(report(*figures), flush=True)
    finally:
        if server is not None:
            server.terminate()
            server.wait(timeout=30)
    return 0
