"""S3 notifications (via SQS) and local folders -> Prefect events that start deployments.

Self-hosted Prefect has no webhooks, so a small long-running process turns what the
provider did into events: ``python -m flows bridge --queue-url URL`` (S3 -> SQS) or
``python -m flows watch --folder DIR`` (a laptop). Deployment triggers in ``prefect.yaml``
match ``dicom.objects.arrived`` and start ``ingest-dicom/on-arrival``.

Delivery is at least once: a message is deleted only after the API accepted its events
(HTTP 204 on ``POST /api/events``); a crash in between redelivers it, and ingest is
idempotent. Poison messages go to the dead-letter queue with a ``reason`` attribute.
"""

from __future__ import annotations

import logging
import os
import threading
import time
from collections.abc import Callable, Sequence
from datetime import UTC, datetime
from pathlib import Path

from tasks.compat import prefect_http_client
from tasks.events.notifications import (
    CreatedObject,
    PoisonMessage,
    arrival_event,
    dead_letter_attributes,
    group_arrivals,
    object_event,
    parse_s3_notification,
    settled_objects,
)
from tasks.lake.storage import list_local_objects

logger = logging.getLogger("dicom_etl.bridge")

#: Events per ``POST /api/events`` request.
EVENTS_PER_REQUEST = 200

SendEvents = Callable[[Sequence[dict]], None]


def send_events(events: Sequence[dict]) -> None:
    """Send events to the Prefect API and return once it accepted them (raises otherwise).

    ``emit_event`` hands events to a background websocket worker and cannot say whether
    they arrived; the bridge must know before it deletes a message, so it posts them.
    """
    from prefect.client.orchestration import get_client
    from prefect.events import Event

    if not events:
        return
    with get_client(sync_client=True) as client:
        for start in range(0, len(events), EVENTS_PER_REQUEST):
            chunk = [Event(**e).model_dump(mode="json") for e in events[start : start + EVENTS_PER_REQUEST]]
            response = prefect_http_client(client).post("/events", json=chunk)  # raises on 4xx/5xx after retries
            response.raise_for_status()


def sqs_client(endpoint_url: str | None = None, region: str | None = None):  # noqa: ANN201 - boto3 client
    """A boto3 SQS client; honours ``AWS_ENDPOINT_URL`` (moto, LocalStack) and the usual AWS settings."""
    import boto3

    return boto3.client(
        "sqs",
        endpoint_url=endpoint_url or os.environ.get("AWS_ENDPOINT_URL_SQS") or os.environ.get("AWS_ENDPOINT_URL"),
        region_name=region or os.environ.get("AWS_REGION") or os.environ.get("AWS_DEFAULT_REGION") or "us-east-1",
    )


def _receive(sqs, queue_url: str, wait: float, visibility: int) -> list[dict]:  # noqa: ANN001
    response = sqs.receive_message(
        QueueUrl=queue_url,
        MaxNumberOfMessages=10,
        WaitTimeSeconds=max(0, min(20, int(wait))),
        VisibilityTimeout=visibility,
        MessageSystemAttributeNames=["ApproximateReceiveCount"],
    )
    return response.get("Messages", [])


def _delete(sqs, queue_url: str, messages: Sequence[dict]) -> None:  # noqa: ANN001
    for start in range(0, len(messages), 10):
        batch = messages[start : start + 10]
        entries = [{"Id": str(i), "ReceiptHandle": m["ReceiptHandle"]} for i, m in enumerate(batch)]
        failed = sqs.delete_message_batch(QueueUrl=queue_url, Entries=entries).get("Failed", [])
        for f in failed:  # redelivered later; ingest is idempotent
            logger.warning("could not delete message %s: %s", batch[int(f["Id"])]["MessageId"], f.get("Message"))


def _dead_letter(sqs, dlq_url: str | None, message: dict, error: PoisonMessage) -> bool:  # noqa: ANN001
    if not dlq_url:
        logger.error(
            "poison message %s (%s); no --dlq-url, left on the queue for its redrive policy",
            message["MessageId"], error.reason,
        )
        return False
    count = message.get("Attributes", {}).get("ApproximateReceiveCount")
    sqs.send_message(
        QueueUrl=dlq_url,
        MessageBody=message.get("Body") or "<empty>",
        MessageAttributes=dead_letter_attributes(error, int(count) if count else None),
    )
    logger.warning("poison message %s sent to the dead-letter queue: %s", message["MessageId"], error)
    return True


def bridge_once(
    sqs,  # noqa: ANN001 - boto3 SQS client
    queue_url: str,
    *,
    dlq_url: str | None = None,
    window_seconds: float = 10.0,
    wait_seconds: float = 20.0,
    max_messages: int = 1000,
    group_depth: int = 1,
    visibility_timeout: int | None = None,
    send: SendEvents = send_events,
) -> dict[str, int]:
    """One grouping window: receive, turn into events, send, then delete. Returns counts."""
    # long enough to gather, send and delete; a crash makes the messages visible again after it
    visibility = visibility_timeout or int(window_seconds + 120)
    messages = _receive(sqs, queue_url, wait_seconds, visibility)
    if messages:
        deadline = time.monotonic() + window_seconds
        while len(messages) < max_messages and (left := deadline - time.monotonic()) > 0:
            more = _receive(sqs, queue_url, min(left, 20), visibility)
            messages += more
            if not more and left < 1:
                break
    done: list[dict] = []
    objects: list[CreatedObject] = []
    poison = 0
    for message in {m["MessageId"]: m for m in messages}.values():
        try:
            objects += parse_s3_notification(message.get("Body", ""))
        except PoisonMessage as error:
            poison += 1
            if _dead_letter(sqs, dlq_url, message, error):
                done.append(message)
            continue
        done.append(message)
    arrivals = group_arrivals(objects, depth=group_depth)
    events = [object_event(o) for o in objects] + [arrival_event(a) for a in arrivals]
    send(events)  # raises if not accepted: nothing is deleted, SQS redelivers
    _delete(sqs, queue_url, done)
    for a in arrivals:
        logger.info("%d objects (%d bytes) arrived under s3://%s/%s", a.count, a.total_bytes, a.bucket, a.prefix)
    return {"messages": len(messages), "objects": len(objects), "arrivals": len(arrivals), "poison": poison}


def run_bridge(
    queue_url: str,
    *,
    dlq_url: str | None = None,
    window_seconds: float = 10.0,
    group_depth: int = 1,
    wait_seconds: float = 20.0,
    stop: threading.Event | None = None,
    sqs=None,  # noqa: ANN001
    send: SendEvents = send_events,
) -> None:
    """Long-poll the queue until ``stop`` is set (or forever); survive API and SQS outages."""
    sqs = sqs or sqs_client()
    stop = stop or threading.Event()
    logger.info("bridge: polling %s (window %.0f s)", queue_url, window_seconds)
    while not stop.is_set():
        try:
            counts = bridge_once(
                sqs, queue_url, dlq_url=dlq_url, window_seconds=window_seconds,
                wait_seconds=wait_seconds, group_depth=group_depth, send=send,
            )
        except Exception as exc:  # keep running: the messages come back after their visibility timeout
            logger.error("bridge: %s: %s; retrying in 5 s", type(exc).__name__, exc)
            stop.wait(5)
            continue
        if counts["messages"]:
            logger.info("bridge: %s", counts)


class FolderWatcher:
    """Polls a folder and sends the same events as the S3 bridge for settled new files."""

    def __init__(self, folder: Path, *, group_depth: int = 1, send: SendEvents = send_events) -> None:
        self.folder = folder.resolve()
        self.group_depth = group_depth
        self.send = send
        self._previous: dict[str, tuple[int, str]] = {}
        self._reported: dict[str, str] = {}

    def poll(self) -> int:
        """One poll; returns how many files were reported."""
        current = [(o.key, o.size, o.etag) for o in list_local_objects(self.folder)]
        settled = settled_objects(self._previous, current, self._reported)
        self._previous = {k: (s, e) for k, s, e in current}
        if not settled:
            return 0
        now = datetime.now(UTC).isoformat()
        objects = [CreatedObject(str(self.folder), k, s, e, now) for k, s, e in settled]
        arrivals = group_arrivals(objects, depth=self.group_depth)
        events = [object_event(o, scheme="file") for o in objects]
        self.send(events + [arrival_event(a, scheme="file") for a in arrivals])
        self._reported.update({k: e for k, _, e in settled})  # only once accepted
        for a in arrivals:
            logger.info("%d files arrived under %s/%s", a.count, self.folder, a.prefix)
        return len(settled)

    def run(self, *, interval: float = 5.0, stop: threading.Event | None = None) -> None:
        stop = stop or threading.Event()
        logger.info("watching %s every %.0f s", self.folder, interval)
        while not stop.is_set():
            try:
                self.poll()
            except Exception as exc:  # noqa: BLE001 - a watcher keeps watching
                logger.error("watch: %s: %s; retrying", type(exc).__name__, exc)
            stop.wait(interval)
