"""The manifest of processed objects: what makes every run incremental and idempotent.

One Parquet file per batch under ``manifest/`` in the lake, written after the batch's
tables, previews and quarantine copies, so a batch that failed half-way is simply done
again by the next run. An object is pending unless the manifest holds its key with the
same ETag: a second run over the same prefix processes nothing, new arrivals are
processed alone, and an object that changed (new ETag) is processed again.
"""

from __future__ import annotations

import io
from collections.abc import Iterable, Mapping, Sequence
from datetime import datetime
from pathlib import Path

import polars as pl

from tasks.lake.storage import ObjectInfo

MANIFEST_ZONE = "manifest"
MANIFEST_SCHEMA = {
    "key": pl.Utf8,
    "etag": pl.Utf8,
    "size": pl.Int64,
    "content_hash": pl.Utf8,
    "batch_id": pl.Utf8,
    "status": pl.Utf8,
    "processed_at": pl.Datetime("us", "UTC"),
}


def manifest_key(batch_id: str) -> str:
    """Lake key of a batch's manifest file."""
    return f"{MANIFEST_ZONE}/{batch_id}.parquet"


def manifest_frame(
    objects: Sequence[ObjectInfo],
    *,
    batch_id: str,
    hashes: Mapping[str, str],
    quarantined: Iterable[str],
    skipped: Iterable[str] = (),
    processed_at: datetime,
) -> pl.DataFrame:
    """Manifest rows of one batch.

    Parameters
    ----------
    objects : sequence of ObjectInfo
        The batch, as listed at the source.
    hashes : mapping
        ``{key: sha256}`` of the bytes processed.
    quarantined : iterable of str
        Source keys with an ``ingest_errors`` row; a ZIP member ``a.zip!/m`` marks its
        archive ``a.zip``. Their status is ``quarantined``, the others ``done``.
    skipped : iterable of str
        Keys that were not processed (missing, access denied): left out, so a later run
        tries them again.
    """
    bad = {k.split("!/", 1)[0] for k in quarantined}
    gone = set(skipped)
    rows = [
        {
            "key": o.key,
            "etag": o.etag,
            "size": o.size,
            "content_hash": hashes.get(o.key),
            "batch_id": batch_id,
            "status": "quarantined" if o.key in bad else "done",
            "processed_at": processed_at,
        }
        for o in objects
        if o.key not in gone
    ]
    return pl.DataFrame(rows, schema=MANIFEST_SCHEMA)


def read_manifest_files(blobs: Iterable[bytes | Path]) -> pl.DataFrame:
    """Concatenate manifest files (paths or bytes) into one frame."""
    frames = [pl.read_parquet(io.BytesIO(b) if isinstance(b, bytes) else b) for b in blobs]
    if not frames:
        return pl.DataFrame(schema=MANIFEST_SCHEMA)
    return pl.concat(frames, how="vertical_relaxed")


def processed_versions(manifest: pl.DataFrame) -> set[tuple[str, str]]:
    """The ``(key, etag)`` pairs already processed.

    A pair whose latest manifest row is ``requeued`` (``python -m flows requeue``) is not:
    the next run processes it again.
    """
    if manifest.is_empty():
        return set()
    latest = manifest.sort("processed_at").unique(subset=["key", "etag"], keep="last")
    return set(latest.filter(pl.col("status") != "requeued").select("key", "etag").iter_rows())


def requeue_frame(
    manifest: pl.DataFrame, keys: Iterable[str], *, requeued_at: datetime, errored: Iterable[str] = ()
) -> pl.DataFrame:
    """Manifest rows that send quarantined objects back to the queue.

    Parameters
    ----------
    manifest : polars.DataFrame
        The lake's manifest (every batch file).
    keys : iterable of str
        Source keys to process again; a ZIP member ``a.zip!/m`` requeues its archive.
    requeued_at : datetime
        Stamped as ``processed_at``, so these rows are the latest of their objects.
    errored : iterable of str
        Source keys with an unresolved ``ingest_errors`` row. Their objects are requeued
        even when ``done``: a file whose pixels could not be decoded (``pixel_decode``)
        has its header rows, so its batch marked it done, yet a fix can redo its preview.

    Returns
    -------
    polars.DataFrame
        One ``requeued`` row per object version named by ``keys`` that is quarantined or
        has an error; other ``done`` objects are left alone (there is nothing to redo).
    """
    wanted = {k.split("!/", 1)[0] for k in keys}
    if manifest.is_empty() or not wanted:
        return pl.DataFrame(schema=MANIFEST_SCHEMA)
    with_errors = sorted({k.split("!/", 1)[0] for k in errored})
    latest = manifest.sort("processed_at").unique(subset=["key", "etag"], keep="last")
    redo = (pl.col("status") == "quarantined") | ((pl.col("status") == "done") & pl.col("key").is_in(with_errors))
    picked = latest.filter(pl.col("key").is_in(sorted(wanted)) & redo)
    return picked.with_columns(
        pl.lit("requeue").alias("batch_id"),
        pl.lit("requeued").alias("status"),
        pl.lit(requeued_at, pl.Datetime("us", "UTC")).alias("processed_at"),
    ).select(list(MANIFEST_SCHEMA))


def pending_objects(objects: Sequence[ObjectInfo], processed: set[tuple[str, str]]) -> list[ObjectInfo]:
    """The objects whose current version is not in the manifest, in listing order."""
    return [o for o in objects if (o.key, o.etag) not in processed]


def read_local_manifest(lake: Path) -> pl.DataFrame:
    """Every manifest file of a local lake."""
    return read_manifest_files(sorted((lake / MANIFEST_ZONE).glob("*.parquet")))
