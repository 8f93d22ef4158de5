"""``python -m flows watch``: new files in a local folder -> Prefect events (the laptop bridge)."""

from __future__ import annotations

import argparse
import logging
from pathlib import Path


def register(subparsers: argparse._SubParsersAction) -> None:
    p = subparsers.add_parser(
        "watch",
        help="poll a folder and send the same events as the S3 bridge for new files",
        description=(
            "Every --interval seconds, lists the folder; a new or changed file is reported once its "
            "size and modification time held still for one poll (no half-copied files). Files "
            "already there at start are reported too (ingest skips what it already has)."
        ),
    )
    p.add_argument("--folder", required=True, help="folder to watch (the ingest source)")
    p.add_argument("--interval", type=float, default=5.0, help="seconds between polls (default 5)")
    p.add_argument("--group-depth", type=int, default=1, help="folder levels that separate arrivals (default 1)")
    p.set_defaults(func=cmd_watch)


def cmd_watch(args: argparse.Namespace) -> int:
    from flows.cli import use_prefect_server
    from flows.commands.bridge import require_server
    from tasks.errors import SourceError

    folder = Path(args.folder)
    if not folder.is_dir():
        msg = f"folder {args.folder!r} does not exist or is not a folder; pass --folder DIR"
        raise SourceError(msg)
    require_server(use_prefect_server())
    from flows.bridge import FolderWatcher

    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(message)s")
    logging.getLogger("httpx").setLevel(logging.WARNING)
    try:
        FolderWatcher(folder, group_depth=args.group_depth).run(interval=args.interval)
    except KeyboardInterrupt:  # Ctrl-C: the usual way to stop it, and the usual exit code
        return 130
    return 0
