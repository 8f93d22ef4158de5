"""The lake's tasks: list the source, read the manifest, stage a batch, publish it."""

from __future__ import annotations

from collections.abc import Sequence
from datetime import datetime
from pathlib import Path
from typing import Generic, TypeVar

from prefect import task
from prefect.cache_policies import NO_CACHE
from prefect.logging import get_run_logger

from tasks.lake.files import disk_full_reported
from tasks.lake.manifest import processed_versions, read_local_manifest
from tasks.lake.scope import SourceScope, keys_under
from tasks.lake.s3 import S3Access, is_s3_url, list_s3_objects, make_s3_client, parse_s3_url
from tasks.lake.staging import StagedBatch, prepare_s3_lake, publish_batch, read_s3_manifest, stage_batch, staging_turn
from tasks.lake.storage import ObjectInfo, list_local_objects
from tasks.lake.tables import ensure_table_schemas
from tasks.retries import S3_RETRIES, BatchOutcome

T = TypeVar("T")


class Whole(Generic[T]):
    """A large task result that Prefect records as one object.

    Prefect links every item of a returned list, set or dataclass to the task's state
    (for dependency tracking), ~10 us each: 0.6 s for a listing of 60,000 objects, spent
    even when nothing is new. Wrapped, the result is one object; ``.value`` is the result.
    """

    __slots__ = ("value",)

    def __init__(self, value: T) -> None:
        self.value = value


@task(name="list-source", cache_policy=NO_CACHE, **S3_RETRIES)
def list_source(scope: SourceScope, *, access: S3Access | None = None, since: datetime | None = None) -> Whole[list[ObjectInfo]]:
    """List the objects a run reads (a folder or an S3 prefix, since an optional watermark), keys relative to the source root."""
    if is_s3_url(scope.location):
        objects = list_s3_objects(make_s3_client(access or S3Access()), parse_s3_url(scope.location), since=since)
    else:
        objects = list_local_objects(Path(scope.location), since=since)
    get_run_logger().info("Listed %d objects at the source", len(objects))
    return Whole(keys_under(objects, scope.prefix))


@task(name="read-manifest", cache_policy=NO_CACHE, **S3_RETRIES)
def read_manifest(lake: str, *, access: S3Access | None = None) -> Whole[set[tuple[str, str]]]:
    """The (key, ETag) pairs the lake's manifest says were processed."""
    frame = read_s3_manifest(lake, access=access or S3Access()) if is_s3_url(lake) else read_local_manifest(Path(lake))
    return Whole(processed_versions(frame))


@task(name="prepare-lake", cache_policy=NO_CACHE, **S3_RETRIES)
def prepare_lake(lake: str, scratch: str, *, access: S3Access | None = None) -> None:
    """Give every raw table a 0-row schema file in the lake (local or S3)."""
    with disk_full_reported(scratch, lake):
        if is_s3_url(lake):
            prepare_s3_lake(lake, scratch=Path(scratch), access=access or S3Access())
        else:
            ensure_table_schemas(Path(lake))


@task(name="stage-batch", cache_policy=NO_CACHE, **S3_RETRIES)
def stage_to_scratch(
    source: str, lake: str, objects: Sequence[ObjectInfo], *, batch_id: str, scratch: str,
    access: S3Access | None, ingested_at: datetime,
) -> StagedBatch:
    """Copy a batch to the raw zone (server-side on S3), download it, expand its ZIPs."""
    with staging_turn(source), disk_full_reported(scratch, lake):
        staged = stage_batch(
            source, lake, objects, batch_id=batch_id, scratch=Path(scratch), access=access or S3Access(), ingested_at=ingested_at
        )
    get_run_logger().info(
        "Batch %s: %d objects -> %d files to extract, %d rejected before extraction",
        batch_id, len(objects), len(staged.files), len(staged.errors),
    )
    return staged


@task(name="publish-batch", cache_policy=NO_CACHE, **S3_RETRIES)
def publish_to_lake(
    lake: str, staged: StagedBatch, objects: Sequence[ObjectInfo], outcomes: Sequence[BatchOutcome], *,
    scratch: str, access: S3Access | None, processed_at: datetime,
) -> BatchOutcome:
    """Upload a batch's tables, previews and quarantine copies (S3 lake) and record it in the manifest."""
    quarantined = [e["source_key"] for o in outcomes for e in o.errors if e["reason"] != "pixel_decode"]
    with disk_full_reported(scratch, lake):
        recorded = publish_batch(
            lake, staged, objects, quarantined=quarantined, scratch=Path(scratch), access=access or S3Access(),
            processed_at=processed_at,
        )
    return BatchOutcome(
        batch_id=staged.batch_id,
        rows={"manifest": recorded},
        errors=[{k: e[k] for k in ("source_key", "reason", "detail")} for e in staged.errors],
    )
