"""One batch from the source to local files ready for extraction, and back to the lake.

``stage_batch`` brings a batch's objects into the raw zone and onto local disk (server-side
copy + download for S3, a file copy for folders), hashes them and expands ZIP archives;
``publish_batch`` uploads what the batch wrote locally to an S3 lake and records the batch
in the manifest. A local lake is written in place, so publishing only writes the manifest.

Where things are written while a batch runs (``scratch`` is a temporary folder the flow
removes at the end, even on failure)::

    scratch/<batch>/download/<n>        downloaded objects (generated names)
    scratch/<batch>/zip/<n>/<m>         expanded ZIP members (generated names)
    scratch/<batch>/lake/...            tables, previews, quarantine of an S3 lake, before upload
"""

from __future__ import annotations

import contextlib
import shutil
import threading
from collections.abc import Callable, Mapping, Sequence
from contextlib import AbstractContextManager
from dataclasses import dataclass, field
from datetime import datetime
from pathlib import Path

import polars as pl

from tasks.lake.zips import ZIP_MAGIC, ArchiveLimits, expand_archive, is_zip
from tasks.dicom.entities import ALL_TABLES, INGEST_ERRORS, ingest_error
from tasks.errors import FileRejected, Reason
from tasks.lake.files import sha256_file
from tasks.lake.tables import quarantine_copy, write_parquet_atomic, write_tables
from tasks.lake.manifest import manifest_frame, manifest_key
from tasks.lake.storage import RAW_ZONE, TABLES_ZONE, ObjectInfo, copy_local_objects
from tasks.lake.s3 import S3Access, S3Location, is_s3_url, make_s3_client, parse_s3_url
from tasks.lake.transfers import (
    copy_s3_objects,
    download_s3_object,
    list_key_range,
    missing_keys,
    read_s3_objects,
    run_each,
    upload_s3_objects,
    upload_tree,
)


@dataclass
class StagedBatch:
    """A batch on local disk: the files to extract and what was rejected before extraction."""

    batch_id: str
    staging_lake: str
    files: list[ObjectInfo] = field(default_factory=list)
    paths: list[str] = field(default_factory=list)
    hashes: dict[str, str] = field(default_factory=dict)
    errors: list[dict] = field(default_factory=list)
    skipped: list[str] = field(default_factory=list)


def _unsafe_key(key: str) -> bool:
    return key.startswith("/") or ".." in key.split("/")


def batch_dir(scratch: Path, batch_id: str) -> Path:
    """The scratch folder of one batch."""
    return scratch / batch_id


def staging_lake_for(lake: str, scratch: Path, batch_id: str) -> Path:
    """Where a batch writes its tables: the lake itself if local, else a scratch folder."""
    return batch_dir(scratch, batch_id) / "lake" if is_s3_url(lake) else Path(lake)


def staging_turn(source: str) -> AbstractContextManager:
    """Wait for this process's turn to stage a batch from ``source``; hold it for the block.

    Batches from a folder are staged one at a time in a process: their copies all need
    the process's interpreter, so side by side they only slow each other, and the first
    batch reaches the idle extraction workers later (0.8 s instead of 0.3 s at 1,000
    files). S3 batches overlap: they mostly wait on the network.
    """
    return contextlib.nullcontext() if is_s3_url(source) else _FOLDER_STAGING


_FOLDER_STAGING = threading.Lock()


def stage_batch(
    source: str,
    lake: str,
    objects: Sequence[ObjectInfo],
    *,
    batch_id: str,
    scratch: Path,
    access: S3Access,
    ingested_at: datetime,
    limits: ArchiveLimits = ArchiveLimits(),
) -> StagedBatch:
    """Copy a batch to the raw zone, bring it to local disk, hash it and expand its ZIPs.

    Parameters
    ----------
    source, lake : str
        Folders or ``s3://bucket/prefix`` locations.
    objects : sequence of ObjectInfo
        The batch, keys relative to the source.
    batch_id : str
    scratch : Path
        The run's scratch folder.
    access : S3Access
        How to reach S3 (unused for folders).
    ingested_at : datetime
        Lineage timestamp of rows written for rejected objects.

    Returns
    -------
    StagedBatch
        Rejected objects and members are already written to the staging lake's
        ``ingest_errors`` (stage ``archive`` or ``fetch``) and quarantined when there
        are bytes to keep.
    """
    work = batch_dir(scratch, batch_id)
    staging = staging_lake_for(lake, scratch, batch_id)
    fetchable, refused = _screen(source, objects)
    fetch = _FETCHES[is_s3_url(source), is_s3_url(lake)]
    fetched = fetch(source, lake, fetchable, work=work, access=access)
    failed = refused | fetched.failed
    out = StagedBatch(batch_id, str(staging), skipped=sorted(failed))
    out.errors += [ingest_error(key, reason, _fetch_detail(reason), stage="fetch") for key, reason in failed.items()]
    _hash_and_expand(objects, fetched, out, work=work, staging=staging, limits=limits)
    if out.errors:
        # a link's row has no source_etag: its listed version ("symlink-<mtime>") names no content
        etags = {o.key: o.etag for o in objects if failed.get(o.key) != Reason.SYMLINK}
        _write_errors(staging, out, etags, ingested_at=ingested_at)
    return out


@dataclass
class _Fetched:
    """What fetching a batch left on local disk."""

    #: key -> local path of each object fetched
    local: dict[str, str | Path] = field(default_factory=dict)
    #: key -> reason, for each object that could not be fetched
    failed: dict[str, str] = field(default_factory=dict)
    #: key -> (sha256, is a ZIP), where the fetch computed them on the way
    known: dict[str, tuple[str, bool]] = field(default_factory=dict)


def _screen(source: str, objects: Sequence[ObjectInfo]) -> tuple[list[ObjectInfo], dict[str, str]]:
    """The objects that may be fetched, and the refused ones with their reason."""
    if is_s3_url(source):  # a key that climbs out of the raw zone
        refused = {o.key: Reason.PATH_TRAVERSAL for o in objects if _unsafe_key(o.key)}
    else:  # a link could point anywhere on this machine (/etc, another patient's folder)
        refused = {o.key: Reason.SYMLINK for o in objects if o.etag.startswith("symlink-")}
    return [o for o in objects if o.key not in refused], refused


def _raw_zone(lake: str) -> S3Location:
    return parse_s3_url(lake.rstrip("/") + "/" + RAW_ZONE)


def _downloader(client, origin: S3Location, paths: Mapping[str, Path], fetched: _Fetched) -> Callable[[ObjectInfo], str | None]:  # noqa: ANN001
    """Download an object and hash it in a pool thread (hashing and I/O release the interpreter)."""

    def fetch(obj: ObjectInfo) -> str | None:
        reason = download_s3_object(client, origin, obj, paths[obj.key])
        if reason is None:
            fetched.known[obj.key] = (sha256_file(paths[obj.key]), is_zip(paths[obj.key]))
        return reason

    return fetch


def _s3_to_s3_lake(source: str, lake: str, objects: Sequence[ObjectInfo], *, work: Path, access: S3Access) -> _Fetched:
    """Each object copied server-side to the raw zone, then downloaded from it to scratch, many at once."""
    client = make_s3_client(access)
    raw = _raw_zone(lake)
    paths = {o.key: work / "download" / f"{i:06d}" for i, o in enumerate(objects)}
    fetched = _Fetched()
    then = _downloader(client, raw, paths, fetched)
    fetched.failed = copy_s3_objects(
        client, parse_s3_url(source), raw, objects, max_concurrency=access.max_concurrency, then=then
    )
    fetched.local = {k: p for k, p in paths.items() if k not in fetched.failed}
    return fetched


def _s3_to_local_lake(source: str, lake: str, objects: Sequence[ObjectInfo], *, work: Path, access: S3Access) -> _Fetched:
    """Each object downloaded into the local lake's raw zone: the download is the raw copy, written once."""
    paths = {o.key: Path(lake) / RAW_ZONE / o.key for o in objects}
    fetched = _Fetched()
    fetch = _downloader(make_s3_client(access), parse_s3_url(source), paths, fetched)
    reasons = run_each(fetch, objects, max_concurrency=access.max_concurrency)
    fetched.failed = {o.key: r for o, r in zip(objects, reasons, strict=True) if r is not None}
    fetched.local = {k: p for k, p in paths.items() if k not in fetched.failed}
    return fetched


def _folder_to_s3_lake(source: str, lake: str, objects: Sequence[ObjectInfo], *, work: Path, access: S3Access) -> _Fetched:
    """Objects uploaded to the raw zone unless already there at their size; read in place for extraction."""
    client = make_s3_client(access)
    n = access.max_concurrency
    root, raw = Path(source), _raw_zone(lake)
    listed, unknown = list_key_range(client, raw, [o.key for o in objects])
    todo = [o.key for o in objects if o.key not in unknown and listed.get(o.key, (-1,))[0] != o.size]
    todo += missing_keys(client, raw, sorted(unknown), max_concurrency=n)
    upload_s3_objects(client, [(root / k, raw.key(k)) for k in todo], raw.bucket, max_concurrency=n)
    return _Fetched(local={o.key: root / o.key for o in objects})


def _folder_to_local_lake(source: str, lake: str, objects: Sequence[ObjectInfo], *, work: Path, access: S3Access) -> _Fetched:
    """Objects copied into the raw zone, hashed on the way; extraction reads the copies."""
    copies = copy_local_objects(Path(source), Path(lake) / RAW_ZONE, objects)
    return _Fetched(
        local={o.key: c.path for o, c in zip(objects, copies, strict=True)},
        known={o.key: (c.sha256, c.head[:4] in ZIP_MAGIC) for o, c in zip(objects, copies, strict=True)},
    )


#: How a batch is fetched, by (source on S3, lake on S3).
_FETCHES: dict[tuple[bool, bool], Callable[..., _Fetched]] = {
    (True, True): _s3_to_s3_lake,
    (True, False): _s3_to_local_lake,
    (False, True): _folder_to_s3_lake,
    (False, False): _folder_to_local_lake,
}


def _fetch_detail(reason: str) -> str:
    if reason == Reason.SYMLINK:
        return "a symbolic link: not followed; put the file itself in the source folder"
    return "object could not be read at the source; not retried"


def _hash_and_expand(
    objects: Sequence[ObjectInfo], fetched: _Fetched, out: StagedBatch, *, work: Path, staging: Path, limits: ArchiveLimits
) -> None:
    """Hash each fetched object (unless the fetch did) and add it to ``out``, a ZIP archive as its members."""
    for index, obj in enumerate(o for o in objects if o.key in fetched.local):
        path = fetched.local[obj.key]
        digest, archive = fetched.known[obj.key] if obj.key in fetched.known else (sha256_file(path), is_zip(Path(path)))
        out.hashes[obj.key] = digest
        if not archive:
            out.files.append(obj)
            out.paths.append(str(path))
            continue
        path = Path(path)
        try:
            expanded = expand_archive(path, obj.key, work / "zip" / f"{index:06d}", limits=limits)
        except FileRejected as exc:
            qkey = quarantine_copy(staging, path, obj.key, str(exc.reason))
            out.errors.append(
                ingest_error(obj.key, exc.reason, exc.detail, stage="archive", quarantine_key=qkey, file_size=obj.size, content_hash=digest)
            )
            continue
        for key, reason, detail in expanded.rejected:
            out.errors.append(ingest_error(key, reason, detail, stage="archive"))
        for key, member_path, size in expanded.members:
            out.files.append(ObjectInfo(key, size, obj.etag, obj.last_modified))
            out.paths.append(str(member_path))


def _write_errors(staging: Path, out: StagedBatch, etags: Mapping[str, str], *, ingested_at: datetime) -> None:
    """Write a batch's staging errors to the staging lake's ``ingest_errors`` (a ZIP member has its archive's ETag)."""
    extra = {"batch_id": out.batch_id, "ingested_at": ingested_at, "ingest_date": ingested_at.date()}
    rows = [e | extra | {"source_etag": etags.get(e["source_key"].split("!/", 1)[0])} for e in out.errors]
    frame = pl.DataFrame(rows, schema=INGEST_ERRORS.schema)
    write_tables(staging, {INGEST_ERRORS.name: frame}, ingest_date=ingested_at.date(), stage="archive", batch_id=out.batch_id)


def publish_batch(
    lake: str,
    staged: StagedBatch,
    objects: Sequence[ObjectInfo],
    *,
    quarantined: Sequence[str],
    scratch: Path,
    access: S3Access,
    processed_at: datetime,
) -> int:
    """Upload a batch's local output to an S3 lake, then record the batch in the manifest.

    The manifest is written last: a batch that fails before it is redone by the next run,
    and its files (named by the batch id) are overwritten, not duplicated.

    Returns
    -------
    int
        Manifest rows written.
    """
    frame = manifest_frame(
        objects,
        batch_id=staged.batch_id,
        hashes=staged.hashes,
        quarantined=[*quarantined, *(e["source_key"] for e in staged.errors)],
        skipped=staged.skipped,
        processed_at=processed_at,
    )
    work = batch_dir(scratch, staged.batch_id)
    if is_s3_url(lake):
        client = make_s3_client(access)
        location = parse_s3_url(lake)
        # every zone the batch wrote (tables, previews, quarantine, archive, deid...), then the manifest
        upload_tree(client, Path(staged.staging_lake), location, max_concurrency=access.max_concurrency)
        path = write_parquet_atomic(frame, work / manifest_key(staged.batch_id))
        upload_s3_objects(client, [(path, location.key(manifest_key(staged.batch_id)))], location.bucket)
    else:
        write_parquet_atomic(frame, Path(lake) / manifest_key(staged.batch_id))
    shutil.rmtree(work, ignore_errors=True)
    return frame.height


def prepare_s3_lake(lake: str, *, scratch: Path, access: S3Access) -> int:
    """Give every raw table of an S3 lake its 0-row schema file; return how many were added."""
    client = make_s3_client(access)
    location = parse_s3_url(lake)
    rels = [f"{TABLES_ZONE}/{name}/_empty.parquet" for name in ALL_TABLES]
    todo = missing_keys(client, location, rels, max_concurrency=access.max_concurrency)
    pairs = []
    for rel in todo:
        entity = ALL_TABLES[rel.split("/")[1]]
        pairs.append((write_parquet_atomic(pl.DataFrame(schema=entity.schema), scratch / "_schemas" / rel), location.key(rel)))
    return upload_s3_objects(client, pairs, location.bucket, max_concurrency=access.max_concurrency)


def read_s3_manifest(lake: str, *, access: S3Access) -> pl.DataFrame:
    """Every manifest file of an S3 lake."""
    from tasks.lake.manifest import MANIFEST_ZONE, read_manifest_files
    from tasks.lake.s3 import list_s3_objects

    client = make_s3_client(access)
    location = parse_s3_url(lake.rstrip("/") + "/" + MANIFEST_ZONE)
    keys = [o.key for o in list_s3_objects(client, location)]
    return read_manifest_files(read_s3_objects(client, location, keys, max_concurrency=access.max_concurrency))
