"""``python -m flows bridge``: S3 event notifications on an SQS queue -> Prefect events."""

from __future__ import annotations

import argparse
import logging


def register(subparsers: argparse._SubParsersAction) -> None:
    p = subparsers.add_parser(
        "bridge",
        help="long-poll an SQS queue of S3 notifications and send Prefect events that start ingest runs",
        description=(
            "Turns S3 ObjectCreated notifications into 'dicom.object.created' events and groups each "
            "burst into 'dicom.objects.arrived' events (one per top-level prefix), which the "
            "ingest-dicom/on-arrival deployment's trigger matches. A message is deleted only after "
            "Prefect accepted its events. AWS settings come from the environment (AWS_ENDPOINT_URL "
            "for moto or LocalStack); the Prefect API from PREFECT_API_URL."
        ),
    )
    p.add_argument("--queue-url", required=True, help="SQS queue that receives the bucket's event notifications")
    p.add_argument("--dlq-url", default=None, help="dead-letter queue for messages that are not S3 notifications")
    p.add_argument("--window", type=float, default=10.0, help="seconds to gather a burst into one event (default 10)")
    p.add_argument("--group-depth", type=int, default=1, help="folder levels that separate arrivals (default 1)")
    p.set_defaults(func=cmd_bridge)


def cmd_bridge(args: argparse.Namespace) -> int:
    from flows.cli import use_prefect_server

    require_server(use_prefect_server())
    from flows.bridge import run_bridge

    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(message)s")
    logging.getLogger("httpx").setLevel(logging.WARNING)
    try:
        run_bridge(args.queue_url, dlq_url=args.dlq_url, window_seconds=args.window, group_depth=args.group_depth)
    except KeyboardInterrupt:  # Ctrl-C: the usual way to stop it, and the usual exit code
        return 130
    return 0


def require_server(api: str) -> None:
    """A bridge outlives any temporary server: it needs a real Prefect API."""
    from tasks.errors import DicomEtlError

    if not api.startswith("http"):
        msg = (
            "no Prefect server found: events must go to the server your deployments and workers use; "
            "set PREFECT_API_URL or start one with `python -m flows server`"
        )
        raise DicomEtlError(msg)
