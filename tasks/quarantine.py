"""What is in quarantine, and sending it back: the pure side of ``python -m flows errors``."""

from __future__ import annotations

import duckdb
import polars as pl


def read_errors(lake: str) -> pl.DataFrame:
    """The lake's current ``ingest_errors``: latest row per source key and stage.

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
    sql = f"""
        select source_key, stage, reason, detail, quarantine_key, ingested_at
        from read_parquet('{root}/tables/ingest_errors/**/*.parquet', union_by_name = true)
        qualify row_number() over (partition by source_key, stage order by ingested_at desc) = 1
        order by reason, source_key
    """
    with duckdb.connect() as con:
        if root.startswith("s3://"):
            import s3fs

            con.register_filesystem(s3fs.S3FileSystem(skip_instance_cache=True, use_listings_cache=False))
        return con.sql(sql).pl()
