"""The object operations of a batch, run concurrently: raw-zone copies, downloads, uploads.

Every request to an object store is a network round trip (10-30 ms in a cloud region), so
the operations of a batch run on a bounded pool of threads sharing one botocore client
(:func:`tasks.lake.s3.make_s3_client` sizes its connection pool for ``max_concurrency``).
Per object the semantics are those of a serial loop: botocore retries a transient failure
(standard mode); a missing or denied object is reported with a reason and not retried; any
other error cancels what has not started, waits for what runs, and is raised for the
task's retry. Every operation is idempotent (same key, same bytes), so a batch retried or
re-run after failing half way redoes its objects without doubling any.

Requests per object are the fewest that do the job: a raw copy is checked against one
listing of the batch's key range (not a ``HeadObject`` each), copied with one
``CopyObject``, downloaded with one ``GetObject`` streamed to disk and uploaded with one
``PutObject``; boto3's managed transfers (a ``HeadObject`` first, then parts in parallel)
only from :data:`MULTIPART_FROM` bytes. Memory stays bounded: bodies stream in
:data:`CHUNK` blocks, so at most ``max_concurrency`` blocks are held at once.
"""

from __future__ import annotations

import os
from collections.abc import Callable, Iterable, Sequence
from concurrent.futures import FIRST_EXCEPTION, ThreadPoolExecutor, wait
from pathlib import Path
from typing import TypeVar

from tasks.lake.files import writing
from tasks.lake.s3 import SOURCE_ETAG_META, S3Location, error_code, is_transient, source_error
from tasks.lake.storage import ObjectInfo

T = TypeVar("T")
R = TypeVar("R")

#: Objects from this size are copied, downloaded and uploaded by boto3's managed transfers
#: (in parts, in parallel); below it one request does each.
MULTIPART_FROM = 64 << 20
#: Bytes read from a response body or a file at a time.
CHUNK = 1 << 20
#: Objects a listing page holds (S3's maximum).
PAGE = 1000


def run_each(fn: Callable[[T], R], items: Iterable[T], *, max_concurrency: int) -> list[R]:
    """``[fn(item) for item in items]`` on at most ``max_concurrency`` threads, in order.

    The first error cancels the calls that have not started, waits for the running ones
    and is raised.

    Parameters
    ----------
    fn : callable
        Called once per item, from a pool thread.
    items : iterable
    max_concurrency : int
        Most calls at once; 1 runs them one after the other in this thread.
    """
    items = list(items)
    workers = max(1, min(max_concurrency, len(items)))
    if workers == 1:
        return [fn(item) for item in items]
    with ThreadPoolExecutor(workers, thread_name_prefix="s3") as pool:
        futures = [pool.submit(fn, item) for item in items]
        done, _ = wait(futures, return_when=FIRST_EXCEPTION)
        failed = [f for f in futures if f in done and f.exception() is not None]
        if failed:
            for future in futures:
                future.cancel()
            raise failed[0].exception()
        return [f.result() for f in futures]


def permanent_reason(exc: BaseException) -> str | None:
    """``missing_object`` or ``access_denied`` for an error no retry cures, else ``None``."""
    code = error_code(exc)
    if code in ("NoSuchKey", "404", "NotFound"):
        return "missing_object"
    if code in ("AccessDenied", "403"):
        return "access_denied"
    return None


def list_key_range(
    client,  # noqa: ANN001
    location: S3Location,
    relatives: Sequence[str],
    *,
    page_size: int = PAGE,
) -> tuple[dict[str, tuple[int, str]], set[str]]:
    """Size and ETag of those of ``relatives`` that exist under ``location``, from one listing of their key range.

    A batch's keys are neighbours, so one ``ListObjectsV2`` from the first to the last of
    them usually answers for the whole batch (1,000 keys a page). The listing stops after
    about as many pages as the batch needs: keys it did not reach are returned as unknown
    (the caller asks for them one by one), so a few keys spread over a large zone never
    cost a listing of the zone.

    Parameters
    ----------
    client : botocore S3 client
    location : S3Location
    relatives : sequence of str
        Keys relative to ``location``.
    page_size : int, default PAGE
        Keys per listing page.

    Returns
    -------
    found, unknown : dict, set
        ``{relative: (size, etag)}`` of existing objects, and the relatives not listed.
    """
    wanted = set(relatives)
    if not wanted:
        return {}, set()
    first, last = min(wanted), max(wanted)
    found: dict[str, tuple[int, str]] = {}
    reached = ""
    pages = 0
    # StartAfter is exclusive: the first key less its last character sorts just before it
    params = {"Bucket": location.bucket, "Prefix": location.prefix}
    if before := location.key(first)[:-1]:
        params["StartAfter"] = before
    skip = len(location.prefix)
    try:
        pages_of = client.get_paginator("list_objects_v2").paginate(**params, PaginationConfig={"PageSize": page_size})
        for page in pages_of:
            pages += 1
            for item in page.get("Contents", []):
                rel = item["Key"][skip:]
                if rel > last:
                    return found, set()
                if rel in wanted:
                    found[rel] = (int(item["Size"]), item["ETag"].strip('"'))
                reached = rel
            if pages >= len(wanted) // page_size + 2:
                return found, {k for k in wanted if k > reached} if page.get("IsTruncated") else set()
    except Exception as exc:
        if is_transient(exc) or not error_code(exc):
            raise
        raise source_error(exc, f"listing {location.url()}") from exc
    return found, set()


def _head_says_current(client, raw: S3Location, obj: ObjectInfo) -> bool:  # noqa: ANN001
    """Whether the raw copy of ``obj`` has its size and its ETag, or the provider ETag it was copied from."""
    try:
        head = client.head_object(Bucket=raw.bucket, Key=raw.key(obj.key))
    except Exception as exc:
        if permanent_reason(exc) == "missing_object":  # no raw copy yet: the only expected error
            return False
        if is_transient(exc) or not error_code(exc):
            raise
        raise source_error(exc, f"reading the raw copy {raw.url(obj.key)}") from exc
    current = head.get("ETag", "").strip('"') == obj.etag or head.get("Metadata", {}).get(SOURCE_ETAG_META) == obj.etag
    return current and int(head["ContentLength"]) == obj.size


def copy_s3_objects(
    client,  # noqa: ANN001
    source: S3Location,
    raw: S3Location,
    objects: Sequence[ObjectInfo],
    *,
    max_concurrency: int = 1,
    then: Callable[[ObjectInfo], str | None] | None = None,
) -> dict[str, str]:
    """Server-side copy provider -> raw zone, skipping raw copies that are already current.

    A raw copy is current when its size matches and its ETag (or the provider ETag kept
    in its metadata, for multipart copies) matches the provider's; one listing of the
    batch's key range tells for most objects (:func:`list_key_range`).

    Parameters
    ----------
    client : botocore S3 client
    source, raw : S3Location
    objects : sequence of ObjectInfo
        Keys relative to both locations.
    max_concurrency : int, default 1
        Objects in flight at once.
    then : callable, optional
        Called with each object once its raw copy is current, in the same thread (a
        download, say); returns a reason if the object failed, else ``None``.

    Returns
    -------
    dict
        ``{key: reason}`` for objects that could not be copied (or ``then`` failed) and
        will not be retried (``missing_object``, ``access_denied``).
    """
    listed, unknown = list_key_range(client, raw, [o.key for o in objects])

    def one(obj: ObjectInfo) -> str | None:
        if obj.key in unknown:
            current = _head_says_current(client, raw, obj)
        elif obj.key in listed:  # a copy of a multipart source has an ETag of its own: its metadata tells
            size, etag = listed[obj.key]
            current = size == obj.size and (etag == obj.etag or _head_says_current(client, raw, obj))
        else:
            current = False
        if not current:
            extra = {"Metadata": {SOURCE_ETAG_META: obj.etag}, "MetadataDirective": "REPLACE"}
            src = {"Bucket": source.bucket, "Key": source.key(obj.key)}
            try:
                if obj.size < MULTIPART_FROM:
                    client.copy_object(CopySource=src, Bucket=raw.bucket, Key=raw.key(obj.key), **extra)
                else:
                    client.copy(src, raw.bucket, raw.key(obj.key), ExtraArgs=extra)
            except Exception as exc:
                if (reason := permanent_reason(exc)) is None:
                    raise
                return reason
        return then(obj) if then is not None else None

    reasons = run_each(one, objects, max_concurrency=max_concurrency)
    return {o.key: r for o, r in zip(objects, reasons, strict=True) if r is not None}


def download_s3_object(client, location: S3Location, obj: ObjectInfo, path: str | Path) -> str | None:  # noqa: ANN001
    """Download one object to ``path`` (written under a temporary name, then renamed).

    Returns
    -------
    str or None
        ``missing_object`` or ``access_denied`` if it could not be read (not retried).
    """
    try:
        with writing(Path(path)) as tmp:
            if obj.size >= MULTIPART_FROM:
                client.download_file(location.bucket, location.key(obj.key), str(tmp))
            else:
                body = client.get_object(Bucket=location.bucket, Key=location.key(obj.key))["Body"]
                with open(tmp, "wb") as fh:
                    for block in body.iter_chunks(CHUNK):
                        fh.write(block)
    except Exception as exc:
        if (reason := permanent_reason(exc)) is None:
            raise
        return reason
    return None


def download_s3_objects(
    client,  # noqa: ANN001
    location: S3Location,
    objects: Sequence[ObjectInfo],
    dest: Path,
    *,
    max_concurrency: int = 1,
) -> tuple[dict[str, Path], dict[str, str]]:
    """Download objects into ``dest`` under safe local names (their index), not their keys.

    Returns
    -------
    paths, failed : dict, dict
        ``{key: local path}`` of downloaded objects and ``{key: reason}`` of objects
        that are missing or denied (not retried).
    """
    dest.mkdir(parents=True, exist_ok=True)
    paths = {o.key: dest / f"{i:06d}" for i, o in enumerate(objects)}
    reasons = run_each(lambda o: download_s3_object(client, location, o, paths[o.key]), objects, max_concurrency=max_concurrency)
    failed = {o.key: r for o, r in zip(objects, reasons, strict=True) if r is not None}
    return {k: p for k, p in paths.items() if k not in failed}, failed


def upload_s3_objects(
    client,  # noqa: ANN001
    pairs: Iterable[tuple[Path, str]],
    bucket: str,
    *,
    metadata: dict[str, dict[str, str]] | None = None,
    max_concurrency: int = 1,
) -> int:
    """Upload ``(local path, key)`` pairs, ``max_concurrency`` at once; return how many were uploaded."""

    def one(pair: tuple[Path, str]) -> None:
        path, key = pair
        extra = {"Metadata": metadata[key]} if metadata and key in metadata else {}
        if os.path.getsize(path) >= MULTIPART_FROM:
            client.upload_file(str(path), bucket, key, ExtraArgs=extra or None)
            return
        with open(path, "rb") as body:  # a file, not its bytes: botocore streams it
            client.put_object(Bucket=bucket, Key=key, Body=body, **extra)

    return len(run_each(one, pairs, max_concurrency=max_concurrency))


def upload_tree(client, root: Path, lake: S3Location, *, max_concurrency: int = 1) -> int:  # noqa: ANN001
    """Upload every file under a local staging lake to the S3 lake, whatever its zone.

    Temporary ``.partial`` files are skipped. Returns the number of files uploaded.
    """
    pairs = []
    root_dir = os.fspath(root)
    for dirpath, _, filenames in os.walk(root_dir):
        folder = os.path.relpath(dirpath, root_dir).replace(os.sep, "/")
        for name in sorted(filenames):
            if not name.endswith(".partial"):
                rel = name if folder == "." else f"{folder}/{name}"
                pairs.append((Path(dirpath, name), lake.key(rel)))
    return upload_s3_objects(client, pairs, lake.bucket, max_concurrency=max_concurrency)


def missing_keys(client, lake: S3Location, relatives: Sequence[str], *, max_concurrency: int = 1) -> list[str]:  # noqa: ANN001
    """Which of ``relatives`` do not exist under the lake prefix (one ``HeadObject`` each, concurrently)."""

    def absent(rel: str) -> bool:
        try:
            client.head_object(Bucket=lake.bucket, Key=lake.key(rel))
        except Exception as exc:
            if permanent_reason(exc) != "missing_object":
                raise
            return True
        return False

    flags = run_each(absent, relatives, max_concurrency=max_concurrency)
    return [rel for rel, gone in zip(relatives, flags, strict=True) if gone]


def read_s3_objects(client, location: S3Location, relatives: Sequence[str], *, max_concurrency: int = 1) -> list[bytes]:  # noqa: ANN001
    """The bytes of small objects (manifest files), read concurrently, in order."""
    return run_each(
        lambda rel: client.get_object(Bucket=location.bucket, Key=location.key(rel))["Body"].read(),
        relatives,
        max_concurrency=max_concurrency,
    )
