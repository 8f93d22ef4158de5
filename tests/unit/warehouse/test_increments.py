"""What a warehouse build reads: the lake's batches it has not been built from, and the key it was built with."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

from tasks.errors import WarehouseError
from tasks.warehouse.increments import (
    KEY_FINGERPRINT_FILE,
    batch_of,
    check_lake_key,
    key_fingerprint,
    list_lake_files,
    plan_build,
    read_loaded_files,
    record_loaded_files,
    write_build_files,
)


def _write(lake: Path, rel: str, content: bytes = b"x") -> None:
    path = lake / rel
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(content)


@pytest.fixture
def lake(tmp_path: Path) -> Path:
    root = tmp_path / "lake"
    for table in ("images", "studies"):
        _write(root, f"tables/{table}/_empty.parquet")
        _write(root, f"tables/{table}/ingest_date=2024-01-01/extract-aaa.parquet")
    _write(root, "tables/images/ingest_date=2024-01-01/preview-aaa.parquet")
    _write(root, "tables/images/ingest_date=2024-01-02/extract-bbb.parquet")
    _write(root, "tables/images/ingest_date=2024-01-02/.extract-ccc.parquet.partial")
    return root


def test_batch_of_reads_the_file_name():
    assert batch_of("extract-0123abcd.parquet") == "0123abcd"
    assert batch_of("archive-x-y.parquet") == "x-y"
    assert batch_of("_empty.parquet") is None
    assert batch_of(".extract-a.parquet.partial") is None


def test_listing_finds_batch_files_only(lake):
    files = list_lake_files(str(lake))
    assert [(f.table, f.batch_id) for f in files] == [
        ("images", "aaa"), ("images", "aaa"), ("images", "bbb"), ("studies", "aaa")
    ]
    assert list_lake_files(str(lake.parent / "missing")) == []


def test_first_build_takes_everything_then_nothing(lake, tmp_path):
    warehouse = tmp_path / "wh.duckdb"
    files = list_lake_files(str(lake))
    plan = plan_build(files, read_loaded_files(warehouse))
    assert plan.batches == {"aaa", "bbb"} and len(plan.files) == 4
    write_build_files(warehouse, plan, ["images", "studies"])
    record_loaded_files(warehouse, plan)
    again = plan_build(list_lake_files(str(lake)), read_loaded_files(warehouse))
    assert again.is_empty and not again.files


def test_a_rewritten_or_late_file_brings_its_whole_batch_again(lake, tmp_path):
    warehouse = tmp_path / "wh.duckdb"
    first = plan_build(list_lake_files(str(lake)), set())
    write_build_files(warehouse, first, ["images"])
    record_loaded_files(warehouse, first)
    # a re-run rewrites one file of batch aaa; a late batch lands in an old partition
    path = lake / "tables/studies/ingest_date=2024-01-01/extract-aaa.parquet"
    path.write_bytes(b"rewritten")
    os.utime(path, ns=(1, 1))
    _write(lake, "tables/images/ingest_date=2023-12-30/extract-late.parquet")
    plan = plan_build(list_lake_files(str(lake)), read_loaded_files(warehouse))
    assert plan.batches == {"aaa", "late"}
    assert {f.path for f in plan.files} == {
        "tables/images/ingest_date=2024-01-01/extract-aaa.parquet",
        "tables/images/ingest_date=2024-01-01/preview-aaa.parquet",
        "tables/studies/ingest_date=2024-01-01/extract-aaa.parquet",
        "tables/images/ingest_date=2023-12-30/extract-late.parquet",
    }


def test_full_refresh_takes_every_batch(lake):
    files = list_lake_files(str(lake))
    loaded = {(f.path, f.version) for f in files}
    assert plan_build(files, loaded).is_empty
    plan = plan_build(files, loaded, full_refresh=True)
    assert plan.batches == {"aaa", "bbb"} and not plan.is_empty


def test_a_lake_keeps_the_fingerprint_of_its_key_and_refuses_another(tmp_path):
    lake = tmp_path / "lake"
    assert check_lake_key(str(lake), "key-one") == key_fingerprint("key-one")
    recorded = (lake / KEY_FINGERPRINT_FILE).read_text()
    assert "key-one" not in recorded and len(recorded.strip()) == 16
    assert check_lake_key(str(lake), "key-one") == key_fingerprint("key-one")
    with pytest.raises(WarehouseError, match="another de-identification secret") as info:
        check_lake_key(str(lake), "key-two")
    assert "key-two" not in str(info.value) and str(lake) in str(info.value)
