"""ingest-dicom from an S3 prefix to an S3 lake and DuckDB, on moto's server and a real Prefect server."""

from __future__ import annotations

import io
import zipfile
from pathlib import Path

import duckdb
import polars as pl
import pytest

from tests.integration.fault_proxy import FaultProxy

pytestmark = [pytest.mark.integration, pytest.mark.e2e]


def _upload_study(s3, bucket: str, prefix: str, files: list[Path], root: Path) -> list[str]:
    """Upload files under odd keys (spaces, unicode, '+') and one ZIP of the rest; return keys."""
    s3.create_bucket(Bucket=bucket)
    keys = []
    loose, zipped = files[: len(files) // 2], files[len(files) // 2 :]
    for i, path in enumerate(loose):
        key = f"{prefix}site 1/é+{i}/{path.name}"
        s3.put_object(Bucket=bucket, Key=key, Body=path.read_bytes())
        keys.append(key)
    buf = io.BytesIO()
    with zipfile.ZipFile(buf, "w", zipfile.ZIP_DEFLATED) as zf:
        for path in zipped:
            zf.writestr(f"DICOM/{path.relative_to(root).as_posix()}", path.read_bytes())
        zf.writestr("../escape.dcm", b"not here")
        zf.writestr("nested.zip", _tiny_zip())
    s3.put_object(Bucket=bucket, Key=f"{prefix}study one.zip", Body=buf.getvalue())
    return keys


def _tiny_zip() -> bytes:
    buf = io.BytesIO()
    with zipfile.ZipFile(buf, "w") as zf:
        zf.writestr("x", b"x")
    return buf.getvalue()


def _table(s3, bucket: str, prefix: str, table: str) -> pl.DataFrame:
    frames = []
    for page in s3.get_paginator("list_objects_v2").paginate(Bucket=bucket, Prefix=f"{prefix}tables/{table}/"):
        for item in page.get("Contents", []):
            frames.append(pl.read_parquet(io.BytesIO(s3.get_object(Bucket=bucket, Key=item["Key"])["Body"].read())))
    return pl.concat(frames, how="diagonal_relaxed")


def _keys(s3, bucket: str, prefix: str) -> list[str]:
    out = []
    for page in s3.get_paginator("list_objects_v2").paginate(Bucket=bucket, Prefix=prefix):
        out += [i["Key"] for i in page.get("Contents", [])]
    return out


@pytest.fixture(scope="module")
def s3_runs(prefect_server, moto_s3, synthetic_dir, tmp_path_factory):
    """First run, second run (nothing new), then a run after two new arrivals and one change."""
    import boto3

    from flows.ingest import ingest_dicom

    s3 = boto3.client("s3")
    files = sorted(p for p in synthetic_dir.rglob("*") if p.is_file())
    keys = _upload_study(s3, "provider", "incoming/", files, synthetic_dir)
    s3.create_bucket(Bucket="lake")
    mp = pytest.MonkeyPatch()
    mp.setenv("DICOM_ETL_DEID_SECRET", "s3-secret")
    warehouse = tmp_path_factory.mktemp("s3wh") / "warehouse.duckdb"
    args = {"source": "s3://provider/incoming", "lake": "s3://lake/dev", "warehouse": str(warehouse), "batch_size": 10}
    first = ingest_dicom(**args, export_deid=True)
    images_first = _table(s3, "lake", "dev/", "images").height
    second = ingest_dicom(**args, run_dbt=False)
    s3.put_object(Bucket="provider", Key="incoming/late/new 1.dcm", Body=files[0].read_bytes())
    s3.put_object(Bucket="provider", Key="incoming/late/new+2.dcm", Body=files[1].read_bytes())
    s3.put_object(Bucket="provider", Key=keys[0], Body=files[2].read_bytes())  # changed object
    third = ingest_dicom(**args)
    yield {"s3": s3, "files": files, "keys": keys, "first": first, "second": second, "third": third,
           "images_first": images_first, "warehouse": warehouse}
    mp.undo()


def test_full_ingest_from_s3_to_the_warehouse(s3_runs):
    s3, files = s3_runs["s3"], s3_runs["files"]
    images = _table(s3, "lake", "dev/", "images")
    assert s3_runs["images_first"] == len(files)
    members = [k for k in images["source_key"].to_list() if k.startswith("study one.zip!/DICOM/")]
    assert len(members) == len(files) - len(files) // 2
    errors = _table(s3, "lake", "dev/", "ingest_errors")
    reasons = dict(errors.filter(pl.col("stage") == "archive").select("source_key", "reason").iter_rows())
    assert reasons == {"study one.zip!/../escape.dcm": "path_traversal", "study one.zip!/nested.zip": "nested_archive"}
    raw = set(_keys(s3, "lake", "dev/raw/"))
    assert {f"dev/raw/{k.removeprefix('incoming/')}" for k in s3_runs["keys"]} <= raw
    assert "dev/raw/study one.zip" in raw
    assert _keys(s3, "lake", "dev/previews/")
    assert s3_runs["first"]["warehouse_rows"]["images"] == len(files)


def test_deid_export_reaches_the_s3_lake_and_joins_the_warehouse(s3_runs):
    """The de-identified DICOM files are uploaded with the batch; each exported row has its object."""
    import pydicom

    s3 = s3_runs["s3"]
    exports = _table(s3, "lake", "dev/", "deid_exports")
    assert exports.height == len(s3_runs["files"])
    exported = exports.filter(pl.col("status") == "exported")
    assert exported.height > 0
    objects = set(_keys(s3, "lake", "dev/deid/"))
    assert objects == {f"dev/{k}" for k in exported["deid_key"]}
    key = exported["deid_key"][0]
    ds = pydicom.dcmread(io.BytesIO(s3.get_object(Bucket="lake", Key=f"dev/{key}")["Body"].read()))
    with duckdb.connect(str(s3_runs["warehouse"]), read_only=True) as con:
        row = con.execute(
            "select i.study_pseudo_uid, e.export_status from processed.deid_exports e "
            "join processed.images i using (sop_instance_pseudo_uid) where e.sop_instance_pseudo_uid = ?",
            [ds.SOPInstanceUID],
        ).fetchone()
    assert row == (ds.StudyInstanceUID, "exported")


def test_second_run_processes_nothing(s3_runs):
    assert s3_runs["second"]["files"] == 0 and s3_runs["second"]["listed"] == s3_runs["first"]["listed"]


def test_new_arrivals_and_changed_objects_only(s3_runs):
    third = s3_runs["third"]
    assert third["files"] == 3
    with duckdb.connect(str(s3_runs["warehouse"]), read_only=True) as con:
        n = con.sql("select count(*) from processed.images").fetchone()[0]
        dupes = con.sql("select count(*) - count(distinct sop_instance_pseudo_uid) from processed.images").fetchone()[0]
    # the new files are copies of existing instances (same UIDs): deduplicated, never doubled
    assert dupes == 0 and n == len(s3_runs["files"])
    manifest = _table_manifest(s3_runs["s3"])
    assert manifest.filter(pl.col("key").str.starts_with("late/")).height == 2
    assert manifest.filter(pl.col("key") == s3_runs["keys"][0].removeprefix("incoming/")).height == 2


def _table_manifest(s3) -> pl.DataFrame:
    frames = [pl.read_parquet(io.BytesIO(s3.get_object(Bucket="lake", Key=k)["Body"].read()))
              for k in _keys(s3, "lake", "dev/manifest/")]
    return pl.concat(frames)


def test_faults_cost_retries_not_data(prefect_server, moto_s3, s3_runs, tmp_path):
    """Through a proxy that delays every request and fails some (503, resets), 16 requests in flight per task:
    same rows as the clean run, no duplicates."""
    from flows.ingest import ingest_dicom

    s3 = s3_runs["s3"]
    s3.create_bucket(Bucket="lake-faulty")
    with FaultProxy((moto_s3["host"], moto_s3["port"]), delay_ms=5) as proxy:
        mp = pytest.MonkeyPatch()
        mp.setenv("AWS_ENDPOINT_URL", proxy.url)
        mp.setenv("DICOM_ETL_DEID_SECRET", "s3-secret")
        try:
            proxy.fail_every(4, "503")
            summary = ingest_dicom(source="s3://provider/incoming", lake="s3://lake-faulty/x", batch_size=10, run_dbt=False)
            proxy.clear()
            proxy.fail_next(8, "reset")  # longer than botocore's 3 attempts: the Prefect task retry takes over
            again = ingest_dicom(source="s3://provider/incoming", lake="s3://lake-faulty/x", batch_size=10, run_dbt=False)
        finally:
            proxy.clear()
            mp.undo()
        faults = proxy.faults
    assert faults >= 10
    clean = _table(s3, "lake", "dev/", "images")
    faulty = _table(s3, "lake-faulty", "x/", "images")
    assert faulty["source_key"].n_unique() == faulty.height  # nothing duplicated
    assert set(faulty["source_key"]) == set(clean["source_key"])  # nothing lost
    assert summary["files"] == s3_runs["first"]["listed"] + 2 and again["files"] == 0


def test_requeue_on_an_s3_lake_after_a_fix(prefect_server, moto_s3, s3, synthetic_dir, capsys):
    """Quarantined in an S3 ingest, requeued with ``python -m flows requeue --lake s3://``, fixed, ingested."""
    from flows.cli import main
    from flows.ingest import ingest_dicom
    from tasks.lake.manifest import pending_objects, processed_versions
    from tasks.lake.staging import read_s3_manifest
    from tasks.lake.s3 import S3Access, list_s3_objects, make_s3_client, parse_s3_url

    good, fixed = sorted(p for p in synthetic_dir.rglob("*") if p.is_file())[:2]
    s3.create_bucket(Bucket="prov-requeue")
    s3.create_bucket(Bucket="lake-requeue")
    s3.put_object(Bucket="prov-requeue", Key="in/good.dcm", Body=good.read_bytes())
    s3.put_object(Bucket="prov-requeue", Key="in/broken.dcm", Body=b"the provider sent the wrong file")
    lake = "s3://lake-requeue/l"
    args = {"source": "s3://prov-requeue/in", "lake": lake, "previews": False, "run_dbt": False}
    first = ingest_dicom(**args)
    assert first["rejected"] == {"not_dicom": 1}
    assert main(["errors", "--lake", lake, "--keys"]) == 0 and "broken.dcm" in capsys.readouterr().out

    assert main(["requeue", "--lake", lake, "--reason", "not_dicom"]) == 0
    assert "requeued 1 object;" in capsys.readouterr().out
    requeue_files = [k for k in _keys(s3, "lake-requeue", "l/manifest/") if "/requeue-" in k]
    assert len(requeue_files) == 1 and requeue_files[0].endswith(".parquet")  # one object, no temporaries
    listed = list_s3_objects(make_s3_client(S3Access()), parse_s3_url("s3://prov-requeue/in"))
    manifest = read_s3_manifest(lake, access=S3Access())
    assert [o.key for o in pending_objects(listed, processed_versions(manifest))] == ["broken.dcm"]

    s3.put_object(Bucket="prov-requeue", Key="in/broken.dcm", Body=fixed.read_bytes())  # the fix
    second = ingest_dicom(**args)
    assert second["files"] == 1 and not second["rejected"]
    assert sorted(_table(s3, "lake-requeue", "l/", "images")["source_key"]) == ["broken.dcm", "good.dcm"]
    assert main(["errors", "--lake", lake]) == 0
    assert "no quarantined files" in capsys.readouterr().out  # resolved: extracted after its error
