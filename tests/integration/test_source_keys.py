"""One key per object however a run is scoped: backfill days, event arrivals, partitions and full runs.

Keys are relative to the provider's root (the configured source). Two days holding a file of
the same name must stay two objects, and a run over the whole source after narrower runs
must find nothing new: one raw copy and one manifest row per object, on a folder and on S3.
"""

from __future__ import annotations

import io
import shutil
from datetime import date
from pathlib import Path

import duckdb
import polars as pl
import pytest
import yaml

from tasks.events.notifications import CreatedObject, arrival_event, group_arrivals

pytestmark = [pytest.mark.integration, pytest.mark.e2e]

ROOT = Path(__file__).resolve().parents[2]
#: relative key -> pydicom test file: two days hold an IM1 each (a CT and an MR), and a later upload
LAYOUT = {"2024-01-01/IM1": "CT_small.dcm", "2024-01-02/IM1": "MR_small.dcm", "batch1/x.dcm": "rtplan.dcm"}


def _trigger_parameters(event: dict) -> dict:
    """The parameters `ingest-dicom/provider`'s trigger in prefect.yaml passes for this event."""
    spec = yaml.safe_load((ROOT / "prefect.yaml").read_text())
    [provider] = [d for d in spec["deployments"] if d["name"] == "provider"]
    [trigger] = provider["triggers"]
    out = {}
    for name, value in trigger["parameters"].items():
        if isinstance(value, str) and value.startswith("{{ event.payload."):
            value = event["payload"][value.removeprefix("{{ event.payload.").removesuffix(" }}")]
        out[name] = value
    return out


def _runs(source: str, lake: str, bucket_or_folder: str, key_root: str) -> dict:
    """Backfill of three days (the third has no folder), an event run, a partition run, a full run."""
    from flows.backfill import backfill_dicom
    from flows.ingest import ingest_dicom

    common = {"source": source, "lake": lake, "run_dbt": False}
    backfill = backfill_dicom(start=date(2024, 1, 1), end=date(2024, 1, 3), **common)
    scheme = "s3" if source.startswith("s3://") else "file"
    arrived = CreatedObject(bucket_or_folder, f"{key_root}batch1/x.dcm", 10, "e", "t")
    event = arrival_event(group_arrivals([arrived], depth=5)[0], scheme=scheme)
    params = _trigger_parameters(event)
    assert "source" not in params, "the trigger must not move the root keys are relative to"
    on_event = ingest_dicom(**{**params, **common})
    partition = ingest_dicom(**{**common, "source": source.rstrip("/") + "/{date:%Y-%m-%d}/"},
                             partition_date=date(2024, 1, 2))
    full = ingest_dicom(**common)
    return {"backfill": backfill, "event": on_event, "partition": partition, "full": full}


def _check(runs: dict, manifest: pl.DataFrame, raw: dict[str, bytes], images: list[str], originals: dict[str, bytes]):
    days = {day: run["files"] for day, run in runs["backfill"].items() if run["files"]}
    assert days == {"2024-01-01": 1, "2024-01-02": 1}
    assert runs["event"]["files"] == 1
    assert runs["partition"]["files"] == 0, "a partition run sees the keys the backfill wrote"
    assert runs["full"]["files"] == 0, "a full run after narrower ones finds nothing new"
    assert sorted(manifest["key"].to_list()) == sorted(LAYOUT), "one manifest row per object"
    assert raw == originals, "one raw copy per object; neither IM1 overwrote the other"
    assert sorted(images) == sorted(k for k in LAYOUT), "one images row per object"


def test_folder_keys_do_not_depend_on_how_a_run_is_scoped(prefect_server, pydicom_dir, tmp_path, monkeypatch):
    from tasks.lake.manifest import read_local_manifest

    monkeypatch.setenv("DICOM_ETL_DEID_SECRET", "keys-secret")
    source, lake = tmp_path / "provider", tmp_path / "lake"
    for key, name in LAYOUT.items():
        (source / key).parent.mkdir(parents=True, exist_ok=True)
        shutil.copy(pydicom_dir / name, source / key)
    runs = _runs(str(source), str(lake), str(source), "")
    raw = {p.relative_to(lake / "raw").as_posix(): p.read_bytes() for p in (lake / "raw").rglob("*") if p.is_file()}
    images = [k for (k,) in duckdb.sql(
        f"select source_key from read_parquet('{lake}/tables/images/**/*.parquet', union_by_name=true)").fetchall()]
    originals = {k: (pydicom_dir / n).read_bytes() for k, n in LAYOUT.items()}
    _check(runs, read_local_manifest(lake), raw, images, originals)


def test_s3_keys_do_not_depend_on_how_a_run_is_scoped(prefect_server, moto_s3, pydicom_dir, monkeypatch):
    import boto3

    from tasks.lake.s3 import S3Access
    from tasks.lake.staging import read_s3_manifest

    monkeypatch.setenv("DICOM_ETL_DEID_SECRET", "keys-secret")
    s3 = boto3.client("s3")
    s3.create_bucket(Bucket="prov-keys")
    s3.create_bucket(Bucket="lake-keys")
    for key, name in LAYOUT.items():
        s3.put_object(Bucket="prov-keys", Key=f"in/{key}", Body=(pydicom_dir / name).read_bytes())
    runs = _runs("s3://prov-keys/in/", "s3://lake-keys/l", "prov-keys", "in/")
    raw = {}
    for page in s3.get_paginator("list_objects_v2").paginate(Bucket="lake-keys", Prefix="l/raw/"):
        for item in page.get("Contents", []):
            raw[item["Key"].removeprefix("l/raw/")] = s3.get_object(Bucket="lake-keys", Key=item["Key"])["Body"].read()
    images = []
    for page in s3.get_paginator("list_objects_v2").paginate(Bucket="lake-keys", Prefix="l/tables/images/"):
        for item in page.get("Contents", []):
            body = s3.get_object(Bucket="lake-keys", Key=item["Key"])["Body"].read()
            images += pl.read_parquet(io.BytesIO(body))["source_key"].to_list()
    originals = {k: (pydicom_dir / n).read_bytes() for k, n in LAYOUT.items()}
    _check(runs, read_s3_manifest("s3://lake-keys/l", access=S3Access()), raw, images, originals)
