"""S3 functions against moto's real server, and through the fault-injecting proxy."""

from __future__ import annotations

import pytest

from tasks.errors import SourceError
from tasks.lake.s3 import (
    S3Access,
    copy_s3_objects,
    download_s3_objects,
    is_transient,
    list_s3_objects,
    make_s3_client,
    parse_s3_url,
)
from tests.integration.fault_proxy import FaultProxy

pytestmark = pytest.mark.integration
ODD_KEYS = ["in/a b.dcm", "in/é/ü+1.dcm", "in/x+y/z%20w", "in/.hidden", "in/folder/"]


@pytest.fixture
def provider(s3):
    s3.create_bucket(Bucket="prov-storage")
    s3.create_bucket(Bucket="lake-storage")
    for i, key in enumerate(ODD_KEYS):
        s3.put_object(Bucket="prov-storage", Key=key, Body=b"x" * (i + 1))
    return "prov-storage"


def test_list_copy_download_round_trip_odd_keys(provider, s3, tmp_path):
    client = make_s3_client(S3Access())
    src, raw = parse_s3_url("s3://prov-storage/in"), parse_s3_url("s3://lake-storage/raw")
    objects = list_s3_objects(client, src)
    assert [o.key for o in objects] == sorted([".hidden", "a b.dcm", "é/ü+1.dcm", "x+y/z%20w"])  # hidden too
    assert copy_s3_objects(client, src, raw, objects) == {}
    keys = {o["Key"] for o in s3.list_objects_v2(Bucket="lake-storage")["Contents"]}
    assert keys == {f"raw/{o.key}" for o in objects}
    before = s3.head_object(Bucket="lake-storage", Key="raw/a b.dcm")["LastModified"]
    copy_s3_objects(client, src, raw, objects)  # current copies are skipped
    assert s3.head_object(Bucket="lake-storage", Key="raw/a b.dcm")["LastModified"] == before
    paths, failed = download_s3_objects(client, raw, objects, tmp_path)
    assert not failed and {p.read_bytes() for p in paths.values()} == {b"x", b"xx", b"xxx", b"xxxx"}


def test_missing_object_is_reported_not_retried(provider, tmp_path):
    client = make_s3_client(S3Access())
    objects = list_s3_objects(client, parse_s3_url("s3://prov-storage/in"))
    from tasks.lake.storage import ObjectInfo

    gone = ObjectInfo("nope.dcm", 1, "e")
    paths, failed = download_s3_objects(client, parse_s3_url("s3://prov-storage/in"), [*objects, gone], tmp_path)
    assert failed == {"nope.dcm": "missing_object"} and len(paths) == len(objects)


def test_missing_bucket_is_a_clear_source_error(moto_s3):
    with pytest.raises(SourceError, match="NoSuchBucket.*bucket name"):
        list_s3_objects(make_s3_client(S3Access()), parse_s3_url("s3://no-such-bucket/x"))


@pytest.mark.parametrize("mode", ["503", "500", "reset"])
def test_botocore_retries_absorb_a_few_faults(provider, moto_s3, mode):
    with FaultProxy((moto_s3["host"], moto_s3["port"])) as proxy:
        client = make_s3_client(S3Access(endpoint_url=proxy.url, read_timeout=5))
        proxy.fail_next(2, mode)
        objects = list_s3_objects(client, parse_s3_url("s3://prov-storage/in"))
        assert len(objects) == 4 and proxy.faults == 2


def test_a_long_outage_surfaces_as_transient(provider, moto_s3):
    with FaultProxy((moto_s3["host"], moto_s3["port"])) as proxy:
        client = make_s3_client(S3Access(endpoint_url=proxy.url, max_attempts=2))
        proxy.fail_next(10, "503")
        with pytest.raises(Exception) as info:
            list_s3_objects(client, parse_s3_url("s3://prov-storage/in"))
        assert is_transient(info.value)
