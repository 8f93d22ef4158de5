"""Checks of a run's source before any work starts."""

from __future__ import annotations

from pathlib import Path

from tasks.errors import SourceError
from tasks.lake.s3 import S3Access, is_s3_url, make_s3_client, parse_s3_url, source_error


def check_source(location: str, access: S3Access | None = None, *, origin: str | None = None) -> None:
    """Fail early, saying what to do, when a run's source cannot be listed.

    Parameters
    ----------
    location : str
        A folder or ``s3://bucket/prefix`` (a ``{date}`` template already rendered).
    access : S3Access, optional
        How to reach S3; boto3's own defaults if not given.
    origin : str, optional
        Where the value came from (a settings block, a variable), named in the error.

    Raises
    ------
    SourceError
        The folder does not exist, or the bucket cannot be listed (missing, access
        denied, endpoint unreachable). An empty prefix is not an error: nothing is new.
    """
    came_from = f" (from {origin})" if origin else ""
    if not is_s3_url(location):
        if not Path(location).is_dir():
            fix = "correct it there or pass --source DIR" if origin else "pass --source DIR"
            msg = f"source folder {location!r}{came_from} does not exist or is not a folder; {fix}"
            raise SourceError(msg)
        return
    where = parse_s3_url(location)
    client = make_s3_client(access or S3Access())
    try:
        client.list_objects_v2(Bucket=where.bucket, Prefix=where.prefix, MaxKeys=1)
    except Exception as exc:  # noqa: BLE001 - every failure to list is the user's to fix before the run
        raise source_error(exc, f"listing the source {location}{came_from}") from exc
