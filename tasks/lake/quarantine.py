"""What is in quarantine, and sending it back: the pure side of ``python -m flows errors``."""

from __future__ import annotations

import io
from collections.abc import Iterable
from datetime import datetime
from pathlib import Path

import duckdb
import polars as pl

from tasks.errors import Reason
from tasks.lake.tables import write_parquet_atomic
from tasks.lake.manifest import MANIFEST_ZONE, read_local_manifest, requeue_frame
from tasks.lake.staging import read_s3_manifest
from tasks.lake.s3 import S3Access, is_s3_url, make_s3_client, parse_s3_url


def read_errors(lake: str) -> pl.DataFrame:
    """The lake's unresolved ``ingest_errors``: latest row per source key and stage.

    An error is resolved once its file has ``images`` rows ingested after it (requeued
    after a fix and extracted), as in the dbt model ``stg_ingest_errors``.

    Parameters
    ----------
    lake : str
        Lake root: a folder or ``s3://bucket/prefix`` (through s3fs and the standard AWS
        environment).

    Returns
    -------
    polars.DataFrame
        ``source_key, stage, reason, detail, quarantine_key, ingested_at``, sorted.
    """
    root = lake.rstrip("/")
    images = f"{root}/tables/images/**/*.parquet"
    latest_images = f"""
        select source_key, SOPInstanceUID, content_hash, ingested_at
        from read_parquet('{images}', union_by_name = true)
        qualify row_number() over (partition by source_key order by ingested_at desc) = 1
    """
    with duckdb.connect() as con:
        if root.startswith("s3://"):
            import s3fs

            con.register_filesystem(s3fs.S3FileSystem(skip_instance_cache=True, use_listings_cache=False))
        has_images = con.sql(f"select count(*) from glob('{images}')").fetchone()[0] > 0
        later_images = (
            f"select source_key, max(ingested_at) as ingested_at from read_parquet('{images}', union_by_name = true) group by 1"
            if has_images
            else "select null::varchar as source_key, null::timestamptz as ingested_at"
        )
        # duplicate conflicts are about the lake, not a batch: found across every file's
        # latest images row, so how files fell into batches (a requeue) changes nothing
        conflicts = (
            f"""
            select source_key, 'extract' as stage, '{Reason.DUPLICATE_CONFLICT}' as reason,
                'another file in the lake has this SOPInstanceUID with other content (content_hash '
                    || left(reference, 16) || '...); both are kept in images' as detail,
                null::varchar as quarantine_key, ingested_at
            from (
                select *, first_value(content_hash) over (partition by SOPInstanceUID order by source_key) as reference
                from ({latest_images})
                where SOPInstanceUID is not null and content_hash is not null
            )
            where content_hash <> reference
            """
            if has_images
            else "select null::varchar as source_key, null, null, null, null::varchar, null::timestamptz where false"
        )
        sql = f"""
            with latest as (
                select source_key, stage, reason, detail, quarantine_key, ingested_at
                from read_parquet('{root}/tables/ingest_errors/**/*.parquet', union_by_name = true)
                where reason <> '{Reason.DUPLICATE_CONFLICT}'
                qualify row_number() over (partition by source_key, stage order by ingested_at desc) = 1
            ),
            later_images as ({later_images}),
            unresolved as (
                select latest.*
                from latest
                left join later_images on latest.source_key = later_images.source_key
                where later_images.ingested_at is null or later_images.ingested_at <= latest.ingested_at
            )
            select * from unresolved
            union all by name
            select * from ({conflicts})
            order by reason, source_key
        """
        return con.sql(sql).pl()


def requeue(lake: str, keys: Iterable[str], *, requeued_at: datetime, access: S3Access | None = None) -> int:
    """Mark quarantined objects ``requeued`` in the lake's manifest, so the next ingest redoes them.

    Parameters
    ----------
    lake : str
        Lake root: a folder or ``s3://bucket/prefix``.
    keys : iterable of str
        Source keys (see :func:`tasks.lake.manifest.requeue_frame`).
    requeued_at : datetime
        Stamped on the rows; also names the manifest file ``manifest/requeue-<time>.parquet``.
    access : S3Access, optional
        How to reach an S3 lake; boto3's standard resolution by default.

    Returns
    -------
    int
        Objects requeued (0 writes nothing).
    """
    key = f"{MANIFEST_ZONE}/requeue-{requeued_at:%Y%m%dT%H%M%S%f}.parquet"
    errored = read_errors(lake)["source_key"].to_list()
    if not is_s3_url(lake):
        frame = requeue_frame(read_local_manifest(Path(lake)), keys, requeued_at=requeued_at, errored=errored)
        if frame.height:
            write_parquet_atomic(frame, Path(lake) / key)
        return frame.height
    access = access or S3Access()
    frame = requeue_frame(read_s3_manifest(lake, access=access), keys, requeued_at=requeued_at, errored=errored)
    if frame.height:
        body = io.BytesIO()
        frame.write_parquet(body, compression="zstd", statistics=True)
        location = parse_s3_url(lake)
        # one PUT: the object appears whole or not at all, never as half a manifest file
        make_s3_client(access).put_object(Bucket=location.bucket, Key=location.key(key), Body=body.getvalue())
    return frame.height
