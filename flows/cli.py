"""Command line: ``python -m flows {demo,ingest,warehouse,server} --help``."""

from __future__ import annotations

import argparse
import importlib
import logging
import os
import shutil
import socket
import subprocess
import sys
import time
from collections.abc import Iterator
from contextlib import contextmanager
from datetime import date, datetime
from pathlib import Path
from typing import IO, TYPE_CHECKING, NoReturn
from urllib.parse import urlparse

if TYPE_CHECKING:
    from blocks.settings import PipelineConfig

LOCAL_API = "http://127.0.0.1:4200/api"
#: How a server for the deployments should run (defaults; the environment overrides them).
#: A run queued behind the `provider` deployment's concurrency limit of 1 asks for the slot
#: again after this many seconds: Prefect's default, 30 s, left a second burst of arrivals
#: waiting up to 30 s after the first run ended.
SERVER_ENV = {"PREFECT_SERVER_DEPLOYMENTS_CONCURRENCY_SLOT_WAIT_SECONDS": "5"}


def free_port() -> int:
    """A TCP port of 127.0.0.1 that nothing listens on now."""
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def spawn_server(home: str | Path, log: IO | int = subprocess.DEVNULL, **env: str) -> tuple[subprocess.Popen, str]:
    """A Prefect server for a program (a benchmark, the test session), started in the background.

    ``prefect server start`` on a free port of 127.0.0.1, its database under ``home``
    (PREFECT_HOME), with SERVER_ENV's defaults and ``env`` on top. Returns the process and
    its API URL; :func:`wait_for_api` tells when it answers (20-30 s).
    """
    port = free_port()
    server_env = {**SERVER_ENV, **os.environ, "PREFECT_HOME": str(home), **env}
    server_env.pop("PREFECT_API_URL", None)  # it is the server, not a client of another
    proc = subprocess.Popen(
        [sys.executable, "-m", "prefect", "server", "start", "--host", "127.0.0.1", "--port", str(port)],
        stdout=log, stderr=subprocess.STDOUT, env=server_env,
    )
    return proc, f"http://127.0.0.1:{port}/api"


def wait_for_api(api: str, timeout: float) -> bool:
    """Whether the Prefect API at ``api`` answers its health check within ``timeout`` seconds."""
    import urllib.request  # not on every command's start-up path (~40 ms)

    deadline = time.monotonic() + timeout
    while True:
        try:
            with urllib.request.urlopen(f"{api}/health", timeout=2):
                return True
        except OSError:
            if time.monotonic() > deadline:
                return False
            time.sleep(0.5)


def _server_listening(url: str) -> bool:
    parts = urlparse(url)
    try:
        with socket.create_connection((parts.hostname or "127.0.0.1", parts.port or 80), timeout=0.3):
            return True
    except OSError:
        return False


def use_prefect_server() -> str:
    """Pick the Prefect API a run reports to, before Prefect is imported.

    ``PREFECT_API_URL`` if set; else a server already running on 127.0.0.1:4200 (started
    with ``python -m flows server``); else Prefect's temporary local server, which needs
    nothing but takes 20-30 s to start.
    """
    os.environ.setdefault("PREFECT_SERVER_EPHEMERAL_STARTUP_TIMEOUT_SECONDS", "300")  # minutes on a busy machine
    if os.environ.get("PREFECT_API_URL"):
        return os.environ["PREFECT_API_URL"]
    if _server_listening(LOCAL_API):
        os.environ["PREFECT_API_URL"] = LOCAL_API
        return LOCAL_API
    # a temporary server lives for one command: its usage telemetry could only fail (and print so)
    os.environ.setdefault("PREFECT_SERVER_ANALYTICS_ENABLED", "false")
    return "temporary local server (start one with `python -m flows server` to keep runs and the UI)"


def _ui_hint(api: str) -> str:
    if api.startswith("http"):
        return f"open {api.removesuffix('/api')} to see the run, its task runs and artifacts"
    return "runs went to a temporary server; run `python -m flows server` in another terminal to keep them in the UI"


def plural(n: int, one: str, many: str | None = None) -> str:
    """``1 file``, ``2 files``, ``1,000 batches``."""
    return f"{n:,} {one if n == 1 else (many or one + 's')}"


def print_summary(summary: dict, api: str) -> None:
    files, listed = summary["files"], summary.get("listed", summary["files"])
    print("\n== DICOM ingest ==")
    line = f"listed at the source: {plural(listed, 'object')}; new: {files:,} in {plural(summary['batches'], 'batch', 'batches')}"
    if listed != files:
        line += f"; already in the manifest (skipped): {listed - files:,}"
    print(line)
    print("raw rows per table:")
    for table, n in sorted(summary["raw_rows"].items()):
        print(f"  {table:<18} {n}")
    if summary.get("warehouse_rows"):
        print("warehouse rows (schema processed):")
        for table, n in sorted(summary["warehouse_rows"].items()):
            print(f"  {table:<18} {n}")
    if summary["rejected"]:
        print("files quarantined, by reason:")
        for reason, n in sorted(summary["rejected"].items()):
            print(f"  {reason:<22} {n}")
        shown = summary["quarantined"][:15]
        for err in shown:
            print(f"    {err['reason']:<20} {err['source_key']}: {err['detail']}")
        if len(summary["quarantined"]) > len(shown):
            print(f"    ... and {len(summary['quarantined']) - len(shown)} more (`python -m flows errors --keys` lists them)")
    print(f"lake:      {summary['lake'] if '://' in summary['lake'] else Path(summary['lake']).resolve()}")
    print(f"warehouse: {warehouse_location(summary)}")
    print(f"Prefect:   {_ui_hint(api)}")


def warehouse_location(summary: dict) -> str:
    """Where the run's warehouse tables are: a DuckDB file, or a Snowflake database."""
    if summary.get("warehouse_target") != "snowflake":
        return f"{Path(summary['warehouse']).resolve()}  (duckdb {summary['warehouse']} -c 'from processed.images')"
    block = summary.get("snowflake_block") or "dicom-etl-snowflake"
    return f"Snowflake, schema PROCESSED of the database in SnowflakeConnector block {block!r} (select * from processed.images)"


def cmd_demo(args: argparse.Namespace) -> int:
    from tasks.dicom.synthetic import copy_pydicom_test_files, generate_studies

    from tasks.lake.files import ensure_writable_folder

    ensure_writable_folder(args.data_dir, what="demo folder", option="--data-dir")
    root = Path(args.data_dir)
    incoming = root / "incoming"
    if incoming.exists():
        shutil.rmtree(incoming)
    tests = copy_pydicom_test_files(incoming / "pydicom")
    synth = generate_studies(incoming / "synthetic", patients=args.patients, seed=args.seed)
    print(f"demo input: {len(tests)} pydicom test files + {len(synth)} synthetic files in {incoming}")
    return _run_ingest(
        source=str(incoming), lake=str(root / "lake"), warehouse=str(root / "warehouse.duckdb"), args=args
    )


def cmd_ingest(args: argparse.Namespace) -> int:
    return _run_ingest(source=args.source, lake=args.lake, warehouse=args.warehouse, args=args)


def _run_ingest(*, source: str | None, lake: str | None, warehouse: str | None, args: argparse.Namespace) -> int:
    if not args.dask_address:
        from tasks.pool import warm_process_pool

        # the pool's fork server imports the readers on the other core while Prefect is imported here
        warm_process_pool()
    api = use_prefect_server()  # a settings block is read from this API
    options = _incremental_options(args)
    config = _checked_config(args, source=source, lake=lake, warehouse=warehouse, day=options.get("partition_date"))
    if not args.no_dbt:
        check_warehouse_reachable(config)
    from flows.ingest import ingest_dicom
    from flows.runners import batch_task_runner

    flow = ingest_dicom
    if args.dask_address:
        flow = ingest_dicom.with_options(task_runner=batch_task_runner(args.dask_address))
    with reporting_api_loss(api):
        summary = flow(
            config=config,
            previews=not args.no_previews,
            run_dbt=not args.no_dbt,
            transcode=args.transcode,
            **options,
        )
    print_summary(summary, api)
    return 0


def _checked_config(args: argparse.Namespace, *, day: date | None, **paths: str | None) -> PipelineConfig:
    """The run's configuration (flags > settings block > environment > defaults), its paths checked.

    Checked here, before the flow starts, so a missing folder or bucket and an unwritable
    lake fail in one line instead of after a Prefect server started; without a settings
    block no server is asked anything.
    """
    from blocks.settings import ENV_VARS, resolve_config, resolve_s3_access
    from tasks.lake.files import ensure_writable_folder
    from tasks.lake.s3 import is_s3_url
    from tasks.lake.scope import resolve_scope
    from tasks.lake.source import check_source

    config = resolve_config(
        args.settings_block, **paths, batch_size=args.batch_size, batch_bytes=args.batch_bytes,
        compression=args.compression, pixel_text=args.pixel_text, export_deid=args.export_deid or None,
    )
    origin = None
    if paths.get("source") is None and config.settings_block:
        origin = f"the settings block {config.settings_block!r}"
    elif paths.get("source") is None and os.environ.get(ENV_VARS["source"]):
        origin = f"${ENV_VARS['source']}"
    check_source(resolve_scope(config.source, day=day).location, resolve_s3_access(config), origin=origin)
    if not is_s3_url(config.lake):
        ensure_writable_folder(config.lake, what="lake", option="--lake")
    return config


def check_warehouse_reachable(config: PipelineConfig) -> None:
    """Fail in one line, naming host and port, when the Snowflake target does not answer (before any work)."""
    from tasks.errors import ConfigError
    from tasks.warehouse.endpoint import check_reachable

    if config.dbt_target != "snowflake":
        return
    host = config.snowflake_host
    if not host:
        from prefect_snowflake import SnowflakeConnector

        try:
            account = SnowflakeConnector.load(config.snowflake_connector_block).credentials.account
        except ValueError as exc:  # Prefect's "Unable to find block document named ..."
            msg = (
                f"no SnowflakeConnector block named {config.snowflake_connector_block!r} for the Snowflake target; "
                "save it with `python -m flows blocks register --env ENV` (SNOWFLAKE_ACCOUNT...)"
            )
            raise ConfigError(msg) from exc
        host = f"{account}.snowflakecomputing.com"
    check_reachable(host, config.snowflake_port or (80 if config.snowflake_protocol == "http" else 443))


@contextmanager
def reporting_api_loss(api: str) -> Iterator[None]:
    """Say in plain words that the Prefect API was lost, instead of an httpx traceback.

    Prefect's client retries a request itself (``PREFECT_CLIENT_MAX_RETRIES``, 5 by default,
    backing off 2, 4, 8... s), so a short outage costs a pause; this is the longer one.
    """
    import httpx

    from tasks.errors import OrchestrationError

    try:
        yield
    except httpx.HTTPError as exc:
        msg = (
            f"lost the Prefect API at {api} ({type(exc).__name__}: {exc}) and its client gave up retrying "
            "(PREFECT_CLIENT_MAX_RETRIES). The run may still show as Running in the UI. Check that the server "
            "is up and reachable, then run the same command again: batches already in the manifest are not "
            "redone, the others start over, nothing is doubled"
        )
        raise OrchestrationError(msg) from exc


def _incremental_options(args: argparse.Namespace) -> dict:
    """--since / --date / --full-refresh as flow parameters (only when given: demo has none)."""
    out: dict = {}
    if getattr(args, "since", None):
        since = args.since
        out["since"] = since if since.tzinfo else since.astimezone()
    if getattr(args, "date", None):
        out["partition_date"] = args.date
    if getattr(args, "full_refresh", False):
        out["incremental"] = False
    return out


class CommandLineParser(argparse.ArgumentParser):
    """argparse that says a usage error in one line on stderr (no usage block) and exits 2."""

    def error(self, message: str) -> NoReturn:
        self.exit(2, f"{self.prog}: error: {message}; see `{self.prog} --help`\n")


def positive_int(text: str) -> int:
    """An option's value that must be a whole number of 1 or more (``--batch-size``)."""
    try:
        value = int(text)
    except ValueError:
        value = 0
    if value < 1:
        msg = f"{text!r} is not a whole number of 1 or more"
        raise argparse.ArgumentTypeError(msg)
    return value


def iso_time(text: str) -> datetime:
    """``--since``: an ISO date or date and time (local time unless it names its zone)."""
    try:
        return datetime.fromisoformat(text)
    except ValueError as exc:
        msg = f"{text!r} is not an ISO date or time{_why(exc)}; write it as 2024-05-01 or 2024-05-01T08:00:00+00:00"
        raise argparse.ArgumentTypeError(msg) from None


def iso_day(text: str) -> date:
    """``--date``: a calendar date written YYYY-MM-DD."""
    try:
        if len(text) != 10 or text[4::3] != "--":  # fromisoformat also takes 20240501
            raise ValueError("Invalid isoformat string")
        return date.fromisoformat(text)
    except ValueError as exc:
        msg = f"{text!r} is not a date written YYYY-MM-DD{_why(exc)}, e.g. 2024-05-01"
        raise argparse.ArgumentTypeError(msg) from None


def _why(exc: ValueError) -> str:
    """`` (day is out of range for month)``; nothing for a string that is not a date at all."""
    return "" if str(exc).startswith("Invalid isoformat") else f" ({exc})"


def cmd_warehouse(args: argparse.Namespace) -> int:
    from blocks.settings import resolve_config
    from flows.commands.errors import require_lake

    api = use_prefect_server()  # asked only for a settings block
    config = resolve_config(args.settings_block, lake=args.lake, warehouse=args.warehouse)
    require_lake(config.lake)
    check_warehouse_reachable(config)
    from flows.warehouse import build_warehouse

    with reporting_api_loss(api):
        counts = build_warehouse(config=config, full_refresh=args.full_refresh)
    for table, n in sorted(counts.items()):
        print(f"processed.{table:<18} {n}")
    return 0


def cmd_server(args: argparse.Namespace) -> int:
    print(f"Starting a Prefect server; `python -m flows` will use it automatically ({LOCAL_API}).")
    print("UI: http://127.0.0.1:4200 . Stop with Ctrl-C.")
    for name, value in SERVER_ENV.items():
        os.environ.setdefault(name, value)
    os.execvp(sys.executable, [sys.executable, "-m", "prefect", "server", "start", "--host", "127.0.0.1", "--port", "4200"])
    return 0  # pragma: no cover - exec does not return


def _add_run_options(p: argparse.ArgumentParser) -> None:
    p.add_argument("--batch-size", type=positive_int, default=None, help="most files per batch (default 1000)")
    p.add_argument(
        "--batch-bytes", type=positive_int, default=None, help="most bytes per batch (default 1 GiB; the first batches are smaller)"
    )
    p.add_argument("--no-previews", action="store_true", help="skip rendering preview JPEGs")
    p.add_argument("--no-dbt", action="store_true", help="write the lake only; do not build the warehouse")
    p.add_argument(
        "--compression",
        default=None,
        help="where previews are rendered: local (default), deployment (compress-dicom/remote) or compress-dicom/NAME",
    )
    p.add_argument(
        "--pixel-text",
        choices=("all", "sensitive", "none"),
        default=None,
        help="burned-in text on at-risk images: all (default: remove every text box), sensitive (only what looks "
        "like PHI), none (cleaned upstream); see docs/images-and-privacy.md",
    )
    p.add_argument(
        "--transcode", action="store_true", help="also keep lossless JPEG-LS archive copies (archive/ zone, verified)"
    )
    p.add_argument(
        "--export-deid",
        action="store_true",
        help="also write de-identified DICOM files (deid/ zone) with the warehouse's pseudonyms; see docs/deid-export.md",
    )
    p.add_argument(
        "--dask-address",
        default=os.environ.get("DICOM_ETL_DASK_ADDRESS"),
        help="tcp://host:8786 of a Dask scheduler to run the batches on (default $DICOM_ETL_DASK_ADDRESS; threads if unset)",
    )
    p.add_argument(
        "--settings-block",
        default=None,
        help="name of a saved DicomPipelineSettings block (the environment); local defaults if omitted",
    )


def build_parser() -> argparse.ArgumentParser:
    parser = CommandLineParser(prog="python -m flows", description="DICOM ETL on Prefect.")
    sub = parser.add_subparsers(dest="command", required=True)

    demo = sub.add_parser("demo", help="ingest a bundled sample (pydicom test files + synthetic studies)")
    demo.add_argument("--data-dir", default="data/demo", help="where the sample, lake and warehouse go")
    demo.add_argument("--patients", type=int, default=4, help="synthetic patients to generate")
    demo.add_argument("--seed", type=int, default=7, help="seed of the synthetic studies")
    _add_run_options(demo)
    demo.set_defaults(func=cmd_demo)

    ingest = sub.add_parser("ingest", help="ingest a folder of DICOM files into the lake and warehouse")
    ingest.add_argument("--source", default=None, help="folder of DICOM files (default data/incoming)")
    ingest.add_argument("--lake", default=None, help="lake folder for raw copies, Parquet, previews (default data/lake)")
    ingest.add_argument("--warehouse", default=None, help="DuckDB file to build (default data/warehouse.duckdb)")
    ingest.add_argument(
        "--since", type=iso_time, default=None,
        help="only objects (S3) or files (folder, by modification time) modified at or after this ISO time",
    )
    ingest.add_argument("--date", type=iso_day, default=None, help="partition date YYYY-MM-DD for a source like s3://b/in/{date:%%Y/%%m/%%d}/")
    ingest.add_argument("--full-refresh", action="store_true", help="ignore the manifest: process every listed object again")
    _add_run_options(ingest)
    ingest.set_defaults(func=cmd_ingest)

    wh = sub.add_parser("warehouse", help="build the warehouse (dbt) from the lake's batches that arrived since the last build")
    wh.add_argument("--lake", default=None)
    wh.add_argument("--warehouse", default=None)
    wh.add_argument("--settings-block", default=None)
    wh.add_argument("--full-refresh", action="store_true", help="rebuild every table (and the pseudonym map) from every batch of the lake")
    wh.set_defaults(func=cmd_warehouse)

    server = sub.add_parser("server", help="start a local Prefect server and UI on 127.0.0.1:4200")
    server.set_defaults(func=cmd_server)

    from flows.commands import MODULES

    for name in MODULES:
        importlib.import_module(name).register(sub)
    return parser


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    try:
        return args.func(args)
    except KeyboardInterrupt:  # Ctrl-C while starting or running: no traceback, the shell's code
        print("interrupted", file=sys.stderr)
        return 130
    except Exception as exc:
        from tasks.errors import DicomEtlError

        if isinstance(exc, DicomEtlError):
            # one line: what was wrong, which input, what to do (the messages say all three)
            print(f"error: {' '.join(str(exc).split())}", file=sys.stderr)
            # Prefect's background workers (events of the blocks read) drain at exit and, on a
            # busy machine, warn that they still are: the line above is the news
            logging.disable(logging.WARNING)
            return exc.exit_code
        raise
