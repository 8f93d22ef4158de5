from __future__ import annotations

from datetime import date

import pytest
from botocore.exceptions import ClientError, EndpointConnectionError, ReadTimeoutError

from tasks.errors import SourceError
from tasks.lake.s3 import S3Access, is_transient, parse_s3_url, render_prefix


def _client_error(code: str, status: int) -> ClientError:
    return ClientError({"Error": {"Code": code}, "ResponseMetadata": {"HTTPStatusCode": status}}, "GetObject")


@pytest.mark.parametrize(("exc", "transient"), [
    (_client_error("SlowDown", 503), True),
    (_client_error("InternalError", 500), True),
    (_client_error("Throttling", 400), True),
    (_client_error("NoSuchKey", 404), False),
    (_client_error("AccessDenied", 403), False),
    (EndpointConnectionError(endpoint_url="http://x"), True),
    (ReadTimeoutError(endpoint_url="http://x"), True),
    (ConnectionResetError(), True),
    (SourceError("bad"), False),
    (ValueError("corrupt"), False),
])
def test_only_transient_errors_are_retried(exc, transient):
    assert is_transient(exc) is transient


def test_s3_urls_and_date_partitions():
    assert parse_s3_url("s3://b/in/x") == parse_s3_url("s3://b/in/x/")
    assert parse_s3_url("s3://b").prefix == ""
    with pytest.raises(SourceError, match="s3://bucket/prefix"):
        parse_s3_url("s3:///x")
    assert render_prefix("s3://b/in/{date:%Y/%m/%d}/", day=date(2024, 5, 1)) == "s3://b/in/2024/05/01/"
    with pytest.raises(SourceError, match="--date"):
        render_prefix("s3://b/in/{date:%Y}/", day=None)


def test_access_never_shows_its_secret():
    access = S3Access(access_key_id="AKIA", secret_access_key="s3cr3t")
    assert "s3cr3t" not in repr(access)
