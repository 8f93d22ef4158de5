"""S3 event notifications (as delivered to SQS) -> arrivals of DICOM objects.

Pure functions: parse a message body, group a burst of created objects into a few
arrivals, and describe the Prefect events for both. The bridge (``flows/bridge.py``)
does the I/O: SQS long polling, emitting, deleting, dead-lettering.
"""

from __future__ import annotations

import json
import posixpath
import uuid
from collections import defaultdict
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from urllib.parse import unquote_plus

from tasks.errors import DicomEtlError

#: Event of one object created at the source (one per S3 record / new file).
OBJECT_CREATED = "dicom.object.created"
#: Event of a burst of objects under one prefix; deployment triggers match this one.
OBJECTS_ARRIVED = "dicom.objects.arrived"
#: Keys listed in an arrival event's payload at most (the prefix and count are complete).
MAX_KEYS_IN_EVENT = 500

_EVENT_NAMESPACE = uuid.UUID("6f1c7b0e-3c1e-4f5e-9a57-2f0c2b1d4a11")


class PoisonMessage(DicomEtlError):
    """An SQS message that can never be turned into events; it goes to the dead-letter queue.

    Parameters
    ----------
    reason : str
        Machine-readable reason (``not_json``, ``no_records``, ``malformed_record``),
        sent as the ``reason`` message attribute of the dead-lettered copy.
    detail : str
        What was wrong, for a person.
    """

    def __init__(self, reason: str, detail: str) -> None:
        super().__init__(f"{reason}: {detail}")
        self.reason = reason
        self.detail = detail


@dataclass(frozen=True, order=True)
class CreatedObject:
    """One object created at the source, from an S3 record or a folder poll."""

    bucket: str
    key: str
    size: int
    etag: str
    event_time: str
    sequencer: str = ""


@dataclass(frozen=True)
class Arrival:
    """Objects that arrived together under one prefix: what starts one ingest run."""

    bucket: str
    prefix: str
    objects: tuple[CreatedObject, ...]

    @property
    def count(self) -> int:
        return len(self.objects)

    @property
    def total_bytes(self) -> int:
        return sum(o.size for o in self.objects)


def parse_s3_notification(body: str) -> list[CreatedObject]:
    """The objects created according to one SQS message body of S3 event notifications.

    Keys are decoded (S3 sends them ``quote_plus``-encoded), ETags unquoted. An
    ``s3:TestEvent`` (sent when a notification is configured) and records of other
    kinds (``ObjectRemoved:*``...) give no objects. A message wrapped by SNS is unwrapped.

    Parameters
    ----------
    body : str
        The SQS message body.

    Returns
    -------
    list of CreatedObject

    Raises
    ------
    PoisonMessage
        If the body is not JSON, has no ``Records``, or a record lacks its bucket or key.
    """
    try:
        message = json.loads(body)
    except (json.JSONDecodeError, TypeError) as exc:
        why = exc.msg if isinstance(exc, json.JSONDecodeError) else exc
        msg = f"the message body is not JSON ({why}); is the queue fed by S3 notifications?"
        raise PoisonMessage("not_json", msg) from exc
    if isinstance(message, dict) and message.get("Type") == "Notification" and "Message" in message:
        return parse_s3_notification(message["Message"])  # delivered through SNS
    if not isinstance(message, dict):
        raise PoisonMessage("no_records", "the message body is JSON but not an object of S3 event records")
    if message.get("Event") == "s3:TestEvent":
        return []
    records = message.get("Records")
    if not isinstance(records, list):
        raise PoisonMessage("no_records", "the message has no 'Records' list; it is not an S3 event notification")
    created: list[CreatedObject] = []
    for i, record in enumerate(records):
        if not isinstance(record, dict):
            raise PoisonMessage("malformed_record", f"record {i} is not an object")
        if not str(record.get("eventName", "")).startswith("ObjectCreated"):
            continue
        try:
            s3 = record["s3"]
            bucket = s3["bucket"]["name"]
            obj = s3["object"]
            key = unquote_plus(obj["key"])
        except (KeyError, TypeError) as exc:
            msg = f"record {i} has no s3.bucket.name or s3.object.key ({exc!r})"
            raise PoisonMessage("malformed_record", msg) from exc
        created.append(
            CreatedObject(
                bucket=bucket,
                key=key,
                size=int(obj.get("size") or 0),
                etag=str(obj.get("eTag") or obj.get("etag") or "").strip('"'),
                event_time=str(record.get("eventTime", "")),
                sequencer=str(obj.get("sequencer", "")),
            )
        )
    return created


def common_prefix(keys: Iterable[str]) -> str:
    """The longest folder (ending in ``/``, or ``""``) that holds every key.

    Examples
    --------
    >>> common_prefix(["a/b/1.dcm", "a/b/c/2.dcm"])
    'a/b/'
    >>> common_prefix(["a/1.dcm", "b/2.dcm"])
    ''
    """
    folders = [posixpath.dirname(k) for k in keys]
    if not folders:
        return ""
    parts = [f.split("/") if f else [] for f in folders]
    shared: list[str] = []
    for level in zip(*parts, strict=False):
        if len(set(level)) != 1:
            break
        shared.append(level[0])
    return "/".join(shared) + "/" if shared else ""


def group_arrivals(objects: Iterable[CreatedObject], *, depth: int = 1) -> list[Arrival]:
    """Group a burst of created objects into arrivals, one per bucket and top-level prefix.

    A thousand uploads of a few studies therefore start a few runs, not a thousand. The
    same object reported twice (S3 delivers at least once) counts once.

    Parameters
    ----------
    objects : iterable of CreatedObject
        Everything received during one grouping window.
    depth : int, default 1
        Folder levels that separate arrivals: with 1, ``siteA/...`` and ``siteB/...``
        are two arrivals; with 0, one arrival per bucket.

    Returns
    -------
    list of Arrival
        Sorted by bucket and prefix; each prefix is the common folder of its keys.
    """
    if depth < 0:
        msg = f"depth must be 0 or more, got {depth}; pass --group-depth N"
        raise ValueError(msg)
    groups: dict[tuple[str, str], dict[tuple[str, str], CreatedObject]] = defaultdict(dict)
    for obj in objects:
        top = "/".join(obj.key.split("/")[:-1][:depth])
        groups[(obj.bucket, top)][(obj.key, obj.etag)] = obj
    return [
        Arrival(bucket=bucket, prefix=common_prefix(k for k, _ in members), objects=tuple(sorted(members.values())))
        for (bucket, _top), members in sorted(groups.items())
    ]


def object_event(obj: CreatedObject, *, scheme: str = "s3") -> dict:
    """The ``dicom.object.created`` event of one object, as keyword arguments of ``emit_event``."""
    return {
        "event": OBJECT_CREATED,
        "id": uuid.uuid5(_EVENT_NAMESPACE, f"{obj.bucket}\x1f{obj.key}\x1f{obj.etag}\x1f{obj.sequencer}"),
        "resource": {
            "prefect.resource.id": _location(scheme, obj.bucket, obj.key),
            "prefect.resource.name": posixpath.basename(obj.key),
            "dicom.bucket": obj.bucket,
        },
        "payload": {
            "bucket": obj.bucket,
            "key": obj.key,
            "size": obj.size,
            "etag": obj.etag,
            "event_time": obj.event_time,
        },
    }


def arrival_event(arrival: Arrival, *, scheme: str = "s3", source: str | None = None) -> dict:
    """The ``dicom.objects.arrived`` event of an arrival, as keyword arguments of ``emit_event``.

    Parameters
    ----------
    arrival : Arrival
    scheme : {"s3", "file"}
        ``s3``: ``bucket`` is a bucket; ``file``: ``bucket`` is a local folder.
    source : str, optional
        What the ingest run should read (``payload.source``, the trigger's ``within``
        parameter): ``s3://bucket/prefix/`` for S3, ``folder/prefix`` for ``file``. Keys
        do not depend on it: they stay relative to the ingest run's configured source.
    """
    if source is None:
        source = _location(scheme, arrival.bucket, arrival.prefix) if scheme == "s3" else posixpath.join(arrival.bucket, arrival.prefix)
    keys = [o.key for o in arrival.objects]
    times = sorted(o.event_time for o in arrival.objects if o.event_time)
    ident = "\x1e".join(f"{o.key}\x1f{o.etag}" for o in arrival.objects)
    return {
        "event": OBJECTS_ARRIVED,
        "id": uuid.uuid5(_EVENT_NAMESPACE, f"{arrival.bucket}\x1d{ident}"),
        "resource": {
            "prefect.resource.id": _location(scheme, arrival.bucket, arrival.prefix),
            "prefect.resource.name": arrival.prefix or "/",
            "dicom.source.kind": scheme,
            "dicom.bucket": arrival.bucket,
            "dicom.prefix": arrival.prefix,
        },
        "payload": {
            "source": source,
            "bucket": arrival.bucket,
            "prefix": arrival.prefix,
            "count": arrival.count,
            "bytes": arrival.total_bytes,
            "first_event_time": times[0] if times else None,
            "last_event_time": times[-1] if times else None,
            "keys": keys[:MAX_KEYS_IN_EVENT],
            "keys_truncated": len(keys) > MAX_KEYS_IN_EVENT,
        },
    }


def _location(scheme: str, bucket: str, key: str) -> str:
    if scheme == "s3":
        return f"s3://{bucket}/{key}"
    return f"file://{posixpath.join(bucket, key)}" if key else f"file://{bucket}"


def dead_letter_attributes(error: PoisonMessage, receive_count: int | None = None) -> dict:
    """SQS message attributes of a dead-lettered copy: the reason and what was wrong."""
    attrs = {
        "reason": {"DataType": "String", "StringValue": error.reason},
        "detail": {"DataType": "String", "StringValue": error.detail[:1000]},
    }
    if receive_count is not None:
        attrs["receive_count"] = {"DataType": "Number", "StringValue": str(receive_count)}
    return attrs


def settled_objects(
    previous: dict[str, tuple[int, str]], current: Sequence[tuple[str, int, str]], reported: dict[str, str]
) -> list[tuple[str, int, str]]:
    """Files of a watched folder that are new or changed and no longer being written.

    A file counts once its size and version (``etag``) are the same in two polls in a
    row, so a half-copied file is not ingested; it is reported again only if its
    version changes.

    Parameters
    ----------
    previous : dict
        ``key -> (size, etag)`` at the previous poll.
    current : sequence of (key, size, etag)
        What the folder holds now.
    reported : dict
        ``key -> etag`` of what was already reported.

    Returns
    -------
    list of (key, size, etag)
    """
    return [
        (key, size, etag)
        for key, size, etag in current
        if previous.get(key) == (size, etag) and reported.get(key) != etag
    ]
