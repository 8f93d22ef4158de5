"""S3 functions against moto's real server, and through the fault-injecting proxy."""

from __future__ import annotations

import pytest

from tasks.errors import SourceError
from tasks.lake.s3 import S3Access, is_transient, list_s3_objects, make_s3_client, parse_s3_url
from tasks.lake.transfers import copy_s3_objects, download_s3_objects
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


# -- a batch's object operations run concurrently (tasks.lake.transfers) -------------------------


@pytest.fixture
def many(s3):
    """40 provider objects of distinct bytes, and an empty lake bucket (``lake-many``) for each test."""
    s3.create_bucket(Bucket="prov-many")
    s3.create_bucket(Bucket="lake-many")
    for page in s3.get_paginator("list_objects_v2").paginate(Bucket="lake-many"):
        for item in page.get("Contents", []):
            s3.delete_object(Bucket="lake-many", Key=item["Key"])
    for i in range(40):
        s3.put_object(Bucket="prov-many", Key=f"in/p{i // 10}/f{i:02d}.dcm", Body=f"object {i}".encode() * (i + 1))
    return list_s3_objects(make_s3_client(S3Access()), parse_s3_url("s3://prov-many/in"))


def _stage(objects, tmp_path, access, batch: str = "b"):  # noqa: ANN001, ANN202
    from datetime import UTC, datetime

    from tasks.lake.staging import stage_batch

    return stage_batch("s3://prov-many/in", "s3://lake-many/l", objects, batch_id=batch, scratch=tmp_path, access=access,
                       ingested_at=datetime.now(UTC))


def test_concurrent_copies_and_downloads_through_faults_and_latency(many, moto_s3, s3, tmp_path):
    """16 requests in flight through a proxy that delays each and fails one in five: every object arrives once.

    A retried request is let through: with 16 in flight, one in five could otherwise fail a
    request's four attempts in a row (seen once in CI), which no client retry absorbs; the
    task's retry does (tests/integration/test_s3_ingest.py), and exhausted retries have tests below.
    """
    from tasks.lake.storage import ObjectInfo

    gone = ObjectInfo("p9/gone.dcm", 3, "e")  # listed, then deleted before staging
    with FaultProxy((moto_s3["host"], moto_s3["port"]), delay_ms=5) as proxy:
        proxy.fail_every(5, "503", retries_pass=True)
        staged = _stage([*many, gone], tmp_path, S3Access(endpoint_url=proxy.url, max_concurrency=16))
        faults = proxy.faults
    assert faults >= 10
    assert staged.skipped == ["p9/gone.dcm"] and [e["reason"] for e in staged.errors] == ["missing_object"]
    by_key = dict(zip((o.key for o in staged.files), staged.paths, strict=True))
    assert sorted(by_key) == [o.key for o in many]
    for i, obj in enumerate(many):
        assert open(by_key[obj.key], "rb").read() == f"object {i}".encode() * (i + 1)  # noqa: SIM115
    raw = [o["Key"] for o in s3.list_objects_v2(Bucket="lake-many", Prefix="l/raw/")["Contents"]]
    assert sorted(raw) == [f"l/raw/{o.key}" for o in many]


def test_a_batch_failing_half_way_is_completed_by_a_rerun(many, moto_s3, s3, tmp_path):
    """An outage longer than botocore's retries fails the batch (transient, for the task's retry); a re-run completes it."""
    with FaultProxy((moto_s3["host"], moto_s3["port"])) as proxy:
        access = S3Access(endpoint_url=proxy.url, max_concurrency=8, max_attempts=2)
        proxy.fail_every(3, "500")
        with pytest.raises(Exception) as info:
            for attempt in range(20):  # until a request fails twice in a row
                _stage(many, tmp_path / str(attempt), access)
        assert is_transient(info.value)
        proxy.clear()
        half = len(s3.list_objects_v2(Bucket="lake-many", Prefix="l/raw/").get("Contents", []))
        proxy.reset_counts()
        staged = _stage(many, tmp_path / "rerun", access)
        rerun_requests = proxy.by_method
    assert len(staged.files) == len(many) and not staged.errors
    raw = s3.list_objects_v2(Bucket="lake-many", Prefix="l/raw/")["Contents"]
    assert len(raw) == len(many)  # nothing doubled, nothing lost
    # current raw copies are told by one listing: only the missing ones are copied again
    assert rerun_requests.get("PUT", 0) == len(many) - half
    assert rerun_requests.get("HEAD", 0) == 0


def test_requests_per_file_copy_and_download(many, moto_s3, tmp_path):
    """One listing per batch, then one CopyObject and one GetObject per object; a re-run only downloads."""
    with FaultProxy((moto_s3["host"], moto_s3["port"])) as proxy:
        access = S3Access(endpoint_url=proxy.url, max_concurrency=8)
        _stage(many, tmp_path / "first", access)
        first = dict(proxy.by_method)
        proxy.reset_counts()
        _stage(many, tmp_path / "again", access)
        again = dict(proxy.by_method)
    assert first == {"GET": len(many) + 1, "PUT": len(many)}
    assert again == {"GET": len(many) + 1}


def test_a_sparse_batch_never_lists_a_whole_zone(s3, moto_s3):
    """Keys spread over a zone of 60: two pages of 5 at most, the keys past them left to ask one by one."""
    from tasks.lake.transfers import list_key_range

    s3.create_bucket(Bucket="zone-range")
    for i in range(60):
        s3.put_object(Bucket="zone-range", Key=f"raw/k{i:03d}", Body=b"x" * i)
    location = parse_s3_url("s3://zone-range/raw")
    client = make_s3_client(S3Access())
    found, unknown = list_key_range(client, location, ["k001", "k010", "k059"], page_size=5)
    assert list(found) == ["k001"] and found["k001"][0] == 1 and unknown == {"k010", "k059"}
    found, unknown = list_key_range(client, location, ["k020", "k021", "k099"], page_size=5)
    assert set(found) == {"k020", "k021"} and unknown == {"k099"}
    found, unknown = list_key_range(client, location, [f"k{i:03d}" for i in range(50, 60)], page_size=5)
    assert len(found) == 10 and not unknown
