"""``python -m flows bench extract|previews|ingest``: benchmarks that print figures against a reference.

Each benchmark measures the pipeline and a reference on the same files in the same run
(see docs/benchmarks.md). The work is in ``benchmarks/``; this module only declares each
command's options: to add one, add an ``add_argument`` to its ``_add_*`` function below and
read it from ``args`` in the benchmark.
"""

from __future__ import annotations

import argparse
import os


def register(subparsers: argparse._SubParsersAction) -> None:
    """Add ``bench`` and its benchmarks."""
    bench = subparsers.add_parser("bench", help="benchmarks that print figures against a reference measured in the same run")
    kinds = bench.add_subparsers(dest="benchmark", required=True, metavar="{extract,previews,ingest,events}")
    _add_extract(kinds)
    _add_previews(kinds)
    _add_ingest(kinds)
    _add_events(kinds)


def _add_extract(kinds: argparse._SubParsersAction) -> None:
    p = kinds.add_parser(
        "extract",
        help="files/s of extraction (frames + Parquet) vs a bare pydicom.dcmread(stop_before_pixels=True) loop",
    )
    p.add_argument("--files", type=int, default=2000, help="synthetic files to generate (default 2000)")
    p.add_argument("--batch-size", type=int, default=250, help="files per extract_batch call (default 250)")
    p.add_argument(
        "--workers", type=int, default=os.cpu_count() or 1, help="processes for the all-cores figure (default: cpu count)"
    )
    p.add_argument("--repeats", type=int, default=3, help="interleaved rounds, best of each counts (default 3)")
    p.add_argument("--keep", default=None, help="folder to keep the generated files and lakes in (default: a temp dir)")
    p.set_defaults(func=_run("benchmarks.extract"))


def _add_previews(kinds: argparse._SubParsersAction) -> None:
    p = kinds.add_parser(
        "previews", help="preview throughput (images/s, MB/s): the pipeline's preview stage vs a bare single-core loop"
    )
    p.add_argument("--source", default=None, help="folder of DICOM files (default: generated 512x512 CT slices)")
    p.add_argument("--count", type=int, default=200, help="slices to generate when --source is not given")
    p.add_argument("--size", type=int, default=512, help="side of generated slices in pixels")
    p.add_argument("--workers", type=int, default=None, help="pipeline processes (default: every core)")
    p.add_argument("--max-size", type=int, default=512, help="preview longest side")
    p.add_argument("--quality", type=int, default=85, help="JPEG quality")
    p.add_argument("--repeat", type=int, default=2, help="timed rounds of each; the best is reported")
    p.add_argument(
        "--text-images", type=int, default=40,
        help="generated 640x480 ultrasound images with burned-in text, for the cleaned images/s (0: skip)",
    )
    p.set_defaults(func=_run("benchmarks.previews"))


def _add_ingest(kinds: argparse._SubParsersAction) -> None:
    from benchmarks.ingest import VARIANTS

    p = kinds.add_parser(
        "ingest", help="ingest end to end (dbt excluded unless --dbt) vs a naive reference and a bare single-core loop"
    )
    p.add_argument("--files", type=int, nargs="+", default=[2000, 20000], help="corpus sizes (default 2000 20000)")
    p.add_argument("--profile", default="small", choices=["small", "realistic", "ct"],
                   help="corpus profile (ct: 512x512 16-bit CT slices only)")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--variants", nargs="+", default=list(VARIANTS), choices=VARIANTS)
    p.add_argument("--batch-size", type=int, default=None, help="pipeline files per task")
    p.add_argument("--dbt", action="store_true",
                   help="the pipeline variant builds the warehouse too (the whole `python -m flows ingest`)")
    p.add_argument("--workdir", default=None, help="where corpora and outputs go (default: a temp dir)")
    p.add_argument(
        "--s3-latency-ms",
        type=float,
        default=None,
        help="instead of the variants: the same files folder -> folder and s3:// -> s3:// (moto behind a proxy "
        "holding each request this long, e.g. 20), side by side; files/s, ratio, S3 requests per file",
    )
    p.add_argument("--s3-max-concurrency", type=int, default=None, help="s3_max_concurrency of the S3 run (default: the setting's)")
    p.add_argument("--split-cores", action="store_true",
                   help="with --s3-latency-ms: both ingests on core 0, moto and the proxy on core 1 (the stand-in takes none of the ingest's CPU)")
    # one variant in a process of its own (the benchmark starts these)
    p.add_argument("--run-variant", choices=VARIANTS, help=argparse.SUPPRESS)
    p.add_argument("--source", help=argparse.SUPPRESS)
    p.add_argument("--out", help=argparse.SUPPRESS)
    p.add_argument(
        "--increments",
        action="store_true",
        help="instead of the variants: per size, `python -m flows ingest` (dbt included) of the lake, then of 4 new "
        "files, then with nothing new (and `warehouse` with nothing new); wall time and peak RSS side by side",
    )
    p.set_defaults(func=_run("benchmarks.ingest", increments="benchmarks.increments"))


def _add_events(kinds: argparse._SubParsersAction) -> None:
    p = kinds.add_parser(
        "events",
        help="seconds from S3 uploads to warehouse rows, each hop: moto S3/SQS, the bridge, a local server, a process worker",
    )
    p.add_argument("--files", type=int, default=4, help="files uploaded (default 4, small profile)")
    p.add_argument("--window", type=float, default=2.0, help="the bridge's burst window in seconds (default 2)")
    p.add_argument("--poll", type=int, default=2, help="the worker's polling interval in seconds (default 2)")
    p.add_argument("--workdir", default=None, help="where the uploads, lake and logs go (default: a temp dir)")
    p.set_defaults(func=_run("benchmarks.events"))


def _run(module: str, **flags: str):  # noqa: ANN202 - the command function argparse calls
    """The command: import the benchmark only when it runs (``--help`` stays fast), hand it the options.

    ``flags`` name another module for a boolean option (``--increments`` of ``bench ingest``).
    """

    def command(args: argparse.Namespace) -> int:
        import importlib

        chosen = next((m for flag, m in flags.items() if getattr(args, flag, False)), module)
        return importlib.import_module(chosen).main(args)

    return command
