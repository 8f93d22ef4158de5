"""The provider root and the part of it a run reads: keys never depend on how a run is scoped."""

from __future__ import annotations

import os
from datetime import UTC, date, datetime

import pytest

from tasks.errors import SourceError
from tasks.lake.scope import resolve_scope, template_root
from tasks.lake.storage import ObjectInfo, list_local_objects
from tasks.lake.scope import keys_under


def test_a_date_partition_reads_a_prefix_of_the_template_root():
    scope = resolve_scope("s3://b/in/{date:%Y/%m/%d}/", day=date(2024, 5, 1))
    assert (scope.root, scope.location, scope.prefix) == ("s3://b/in/", "s3://b/in/2024/05/01/", "2024/05/01/")
    folder = resolve_scope("data/in/{date:%Y-%m-%d}", day=date(2024, 5, 1))
    assert (folder.root, folder.location, folder.prefix) == ("data/in/", "data/in/2024-05-01", "2024-05-01/")
    assert template_root("{date:%Y}/x") == "."
    with pytest.raises(SourceError, match="--date"):
        resolve_scope("data/in/{date:%Y-%m-%d}")


def test_an_event_location_under_the_root_keeps_keys_relative_to_the_root(tmp_path):
    s3 = resolve_scope("s3://b/in", within="s3://b/in/batch1/")
    assert (s3.root, s3.prefix) == ("s3://b/in", "batch1/")
    folder = resolve_scope(str(tmp_path), within=f"{tmp_path}/siteA/")
    assert folder.prefix == "siteA/"
    assert resolve_scope(str(tmp_path), within=str(tmp_path)).prefix == ""
    assert resolve_scope("s3://b/in/", within="2024-01-01").prefix == "2024-01-01/"
    assert resolve_scope(str(tmp_path), within="2024-01-01").location == str(tmp_path / "2024-01-01")


@pytest.mark.parametrize("within", ["s3://other/in/x/", "s3://b/inside/", "/elsewhere", "../up", "a/../../b"])
def test_a_location_outside_the_root_is_refused(within):
    source = "s3://b/in/" if within.startswith("s3://") else "/data/in"
    with pytest.raises(SourceError, match="source"):
        resolve_scope(source, within=within)


def test_keys_under_prefix_the_listed_keys():
    objs = [ObjectInfo("IM1", 1, "e")]
    assert [o.key for o in keys_under(objs, "2024-01-01/")] == ["2024-01-01/IM1"]
    assert keys_under(objs, "") == objs


def test_a_folder_listing_since_a_watermark_leaves_older_files_out(tmp_path):
    (tmp_path / "old.dcm").write_bytes(b"old")
    (tmp_path / "new.dcm").write_bytes(b"new")
    os.utime(tmp_path / "old.dcm", (1_600_000_000, 1_600_000_000))
    since = datetime(2024, 1, 1, tzinfo=UTC)
    assert [o.key for o in list_local_objects(tmp_path, since=since)] == ["new.dcm"]
    assert len(list_local_objects(tmp_path)) == 2
