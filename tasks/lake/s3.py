"""Objects in S3 (or any S3-compatible store): list, server-side copy, download, upload.

Every function takes a boto3 S3 client made by :func:`make_s3_client` and speaks in
``ObjectInfo``, like the local functions in ``tasks.lake.storage``; the concurrent
copies, downloads and uploads of a batch are in ``tasks.lake.transfers``. Keys are passed to boto3
as they are (boto3 encodes them), so spaces, unicode and ``+`` round-trip.

Two layers of retries, bounded together: botocore's ``standard`` retry mode retries a
single request (throttling, 5xx, connection errors) up to ``max_attempts`` times with
exponential backoff and jitter; the Prefect task around a batch retries the whole batch
a few more times when :func:`is_transient` says the final error was transient. With
the defaults (3 attempts x 4 task tries) a request is tried at most 12 times.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import date, datetime

from tasks.errors import SourceError
from tasks.lake.storage import ObjectInfo

#: Error codes S3 uses for throttling and server trouble: worth another try.
TRANSIENT_CODES = frozenset(
    {
        "Throttling", "ThrottlingException", "ThrottledException", "RequestThrottledException",
        "TooManyRequestsException", "ProvisionedThroughputExceededException", "TransactionInProgressException",
        "RequestLimitExceeded", "BandwidthLimitExceeded", "LimitExceededException", "RequestThrottled",
        "SlowDown", "PriorRequestNotComplete", "EC2ThrottledException", "InternalError", "ServiceUnavailable",
        "RequestTimeout", "RequestTimeoutException",
    }
)
#: Requests in flight per task: enough to hide a 20 ms round trip on a laptop's two cores
#: (each request costs ~1-2 ms of Python); a cloud VM with more cores takes 64-128.
DEFAULT_MAX_CONCURRENCY = 16
#: Metadata key on raw copies naming the provider ETag they were copied from.
SOURCE_ETAG_META = "source-etag"


@dataclass(frozen=True)
class S3Access:
    """How to reach an S3 endpoint. ``None`` fields fall back to boto3's own resolution.

    With every field ``None``, boto3 reads ``AWS_ENDPOINT_URL``, ``AWS_ACCESS_KEY_ID``,
    ``AWS_SECRET_ACCESS_KEY``, ``AWS_REGION`` and its config files, as it always does.
    """

    endpoint_url: str | None = None
    region: str | None = None
    access_key_id: str | None = None
    secret_access_key: str | None = field(default=None, repr=False)
    session_token: str | None = field(default=None, repr=False)
    max_attempts: int = 3
    connect_timeout: float = 5.0
    read_timeout: float = 30.0
    #: Requests a task keeps in flight at once (copies, downloads, uploads of a batch).
    max_concurrency: int = DEFAULT_MAX_CONCURRENCY

    def env(self) -> dict[str, str]:
        """The standard AWS environment variables for these values (for s3fs in dbt)."""
        pairs = {
            "AWS_ENDPOINT_URL": self.endpoint_url,
            "AWS_REGION": self.region,
            "AWS_DEFAULT_REGION": self.region,
            "AWS_ACCESS_KEY_ID": self.access_key_id,
            "AWS_SECRET_ACCESS_KEY": self.secret_access_key,
            "AWS_SESSION_TOKEN": self.session_token,
        }
        return {k: v for k, v in pairs.items() if v}


@dataclass(frozen=True)
class S3Location:
    """A bucket and a key prefix (no leading slash; ends with ``/`` unless empty)."""

    bucket: str
    prefix: str = ""

    def key(self, relative: str) -> str:
        """The full key of ``relative`` under this prefix."""
        return f"{self.prefix}{relative}"

    def url(self, relative: str = "") -> str:
        return f"s3://{self.bucket}/{self.key(relative)}"


def is_s3_url(location: str) -> bool:
    """True for ``s3://...`` locations."""
    return str(location).startswith("s3://")


def parse_s3_url(url: str) -> S3Location:
    """Split ``s3://bucket/prefix`` into bucket and prefix.

    Raises
    ------
    SourceError
        If ``url`` is not an ``s3://bucket[/prefix]`` URL.
    """
    if not is_s3_url(url) or len(url) <= 5:
        msg = f"{url!r} is not an S3 location; write it as s3://bucket/prefix"
        raise SourceError(msg)
    bucket, _, prefix = url[5:].partition("/")
    if not bucket:
        msg = f"{url!r} names no bucket; write it as s3://bucket/prefix"
        raise SourceError(msg)
    prefix = prefix.lstrip("/")
    if prefix and not prefix.endswith("/"):
        prefix += "/"
    return S3Location(bucket, prefix)


def render_prefix(template: str, *, day: date | None) -> str:
    """Fill a date-partition prefix template such as ``incoming/{date:%Y/%m/%d}/``.

    A template without ``{date...}`` is returned as is.
    """
    if "{date" not in template:
        return template
    if day is None:
        msg = f"source {template!r} has a {{date}} partition; pass --date YYYY-MM-DD"
        raise SourceError(msg)
    return template.format(date=day)


def make_s3_client(access: S3Access):  # noqa: ANN201 - botocore builds the client class at runtime
    """A boto3 S3 client with bounded standard-mode retries and timeouts, for threads to share.

    Its connection pool holds ``access.max_concurrency`` connections, plus the ten boto3's
    managed transfers of a large object use, so no request in flight waits for one.
    """
    import boto3
    from botocore.config import Config

    config = Config(
        retries={"mode": "standard", "max_attempts": access.max_attempts},
        connect_timeout=access.connect_timeout,
        read_timeout=access.read_timeout,
        max_pool_connections=access.max_concurrency + 10,
    )
    session = boto3.session.Session(
        aws_access_key_id=access.access_key_id,
        aws_secret_access_key=access.secret_access_key,
        aws_session_token=access.session_token,
        region_name=access.region,
    )
    return session.client("s3", endpoint_url=access.endpoint_url, config=config)


def is_transient(exc: BaseException) -> bool:
    """Whether an error from S3 is worth retrying: throttling, 5xx, timeouts, resets.

    A missing object, an access denial, a bad request or a project error is not.
    """
    from botocore.exceptions import (
        ClientError,
        ConnectionClosedError,
        ConnectionError as BotoConnectionError,
        ReadTimeoutError,
        ResponseStreamingError,
    )

    if isinstance(exc, ClientError):
        code = str(exc.response.get("Error", {}).get("Code", ""))
        status = int(exc.response.get("ResponseMetadata", {}).get("HTTPStatusCode") or 0)
        return code in TRANSIENT_CODES or status >= 500 or status == 429
    if isinstance(exc, (BotoConnectionError, ConnectionClosedError, ReadTimeoutError, ResponseStreamingError)):
        return True
    return isinstance(exc, (ConnectionError, TimeoutError))


def error_code(exc: BaseException) -> str:
    """S3's error code of a ``ClientError`` (``NoSuchKey``, ``AccessDenied``...), else ``""``."""
    response = getattr(exc, "response", None) or {}
    return str(response.get("Error", {}).get("Code", ""))


def source_error(exc: BaseException, what: str) -> SourceError:
    """A :class:`SourceError` for a permanent S3 failure, with a hint of what to check."""
    code = error_code(exc) or type(exc).__name__
    if code in ("NoSuchBucket",):
        hint = "check the bucket name in --source/--lake or the settings block"
    elif code in ("AccessDenied", "403", "InvalidAccessKeyId", "SignatureDoesNotMatch"):
        hint = "check the credentials (AwsCredentials block or AWS_* variables) and the bucket policy"
    else:
        hint = "check the endpoint (AWS_ENDPOINT_URL or the block's endpoint_url) and try again"
    return SourceError(f"{what} failed with {code}; {hint}")


def list_s3_objects(client, location: S3Location, *, since: datetime | None = None) -> list[ObjectInfo]:  # noqa: ANN001
    """Every object under a prefix, sorted by key, keys relative to the prefix.

    Folder markers (keys ending in ``/``) are skipped; hidden names (a path part
    starting with ``.``) are listed, as in local folders: nothing is skipped silently.

    Parameters
    ----------
    client : botocore S3 client
    location : S3Location
    since : datetime, optional
        Watermark: only objects with ``LastModified >= since``.

    Raises
    ------
    SourceError
        If the bucket is missing or access is denied (not retried).
    botocore.exceptions.ClientError, BotoCoreError
        Transient failures, for the caller's retries.
    """
    found: list[ObjectInfo] = []
    paginator = client.get_paginator("list_objects_v2")
    try:
        for page in paginator.paginate(Bucket=location.bucket, Prefix=location.prefix):
            for item in page.get("Contents", []):
                key = item["Key"][len(location.prefix) :]
                if not key or key.endswith("/"):
                    continue
                if since is not None and item["LastModified"] < since:
                    continue
                found.append(ObjectInfo(key, int(item["Size"]), item["ETag"].strip('"'), item["LastModified"]))
    except Exception as exc:
        if is_transient(exc) or not error_code(exc):
            raise
        raise source_error(exc, f"listing {location.url()}") from exc
    found.sort()
    return found
