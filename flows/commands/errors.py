"""``python -m flows errors`` and ``python -m flows requeue``: quarantined files, and a second chance.

``errors`` counts (or, with ``--keys``, lists) the files the lake's ``ingest_errors`` holds.
``requeue`` marks quarantined objects in the manifest so the next ``ingest`` processes
them again, after a fix (a new decoder, a raised limit, a corrected file under the same
version). Keys are printed only with ``--keys``: file names may carry PHI.
"""

from __future__ import annotations

import argparse


def register(sub: argparse._SubParsersAction) -> None:
    errors = sub.add_parser("errors", help="quarantined files of a lake, per reason")
    errors.add_argument("--lake", default="data/lake", help="lake folder or s3://bucket/prefix (default data/lake)")
    errors.add_argument("--reason", type=reason_code, default=None, help="only this reason code")
    errors.add_argument("--keys", action="store_true", help="list source keys and details (may show PHI in names)")
    errors.set_defaults(func=run_errors)

    requeue = sub.add_parser("requeue", help="let the next ingest process quarantined files again")
    requeue.add_argument("--lake", default="data/lake", help="lake folder or s3://bucket/prefix (default data/lake)")
    requeue.add_argument("--reason", type=reason_code, default=None, help="only files quarantined for this reason")
    requeue.add_argument("--key", action="append", default=None, help="only this source key (repeatable)")
    requeue.set_defaults(func=run_requeue)


def reason_code(text: str) -> str:
    """``--reason``: one of the reason codes of ``ingest_errors``."""
    from tasks.errors import Reason

    known = [str(r) for r in Reason]
    if text not in known:
        msg = f"unknown reason {text!r}; known reasons: {', '.join(known)}"
        raise argparse.ArgumentTypeError(msg)
    return text


def require_lake(lake: str) -> None:
    """Fail in one line when a local lake folder does not exist or holds no lake."""
    from pathlib import Path

    from tasks.errors import UsageError

    if "://" in lake:
        return
    path = Path(lake)
    if not path.is_dir():
        msg = f"lake {lake!r} does not exist or is not a folder; pass --lake with the folder ingest wrote (default data/lake)"
        raise UsageError(msg)
    if not (path / "tables").is_dir() and not (path / "manifest").is_dir():
        msg = f"{lake!r} is not a lake (no tables/ or manifest/ in it); pass --lake with the folder ingest wrote"
        raise UsageError(msg)


def _select(lake: str, reason: str | None):  # noqa: ANN202 - a polars frame
    from tasks.lake.quarantine import read_errors

    require_lake(lake)
    frame = read_errors(lake)
    return frame if reason is None else frame.filter(frame["reason"] == reason)


def run_errors(args: argparse.Namespace) -> int:
    frame = _select(args.lake, args.reason)
    if frame.is_empty():
        print(f"no quarantined files in {args.lake}")
        return 0
    counts = frame.group_by("stage", "reason").len().sort("stage", "reason")
    from flows.cli import plural

    print(f"{plural(frame.height, 'file')} with errors in {args.lake}:")
    for stage, reason, n in counts.iter_rows():
        print(f"  {stage:<9} {reason:<22} {n}")
    if args.keys:
        for row in frame.iter_rows(named=True):
            print(f"    {row['reason']:<20} {row['source_key']}: {(row['detail'] or '')[:100]}")
    else:
        print("(--keys lists the files; `python -m flows requeue` sends them back after a fix)")
    return 0


def run_requeue(args: argparse.Namespace) -> int:
    from datetime import UTC, datetime

    from tasks.lake.quarantine import requeue

    require_lake(args.lake)
    keys = args.key or list(_select(args.lake, args.reason)["source_key"])
    requeued = requeue(args.lake, keys, requeued_at=datetime.now(UTC))
    if not requeued:
        print("nothing to requeue: no quarantined object matches")
        return 0
    from flows.cli import plural

    print(f"requeued {plural(requeued, 'object')}; the next `python -m flows ingest` processes them again")
    return 0
