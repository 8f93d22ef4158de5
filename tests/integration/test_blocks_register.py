"""`python -m flows blocks register --env dev`, then an S3 ingest whose endpoint comes from the blocks only."""

from __future__ import annotations

import pytest

pytestmark = [pytest.mark.integration, pytest.mark.e2e]


def test_register_then_ingest_through_the_blocks(prefect_server, moto_s3, synthetic_dir, monkeypatch):
    import os
    import subprocess
    import sys

    import boto3
    from prefect.settings import PREFECT_API_URL

    from flows.ingest import ingest_dicom

    s3 = boto3.client("s3")
    s3.create_bucket(Bucket="prov-blocks")
    s3.create_bucket(Bucket="lake-blocks")
    files = sorted(p for p in synthetic_dir.rglob("*") if p.is_file())[:4]
    for p in files:
        s3.put_object(Bucket="prov-blocks", Key=f"in/{p.relative_to(synthetic_dir).as_posix()}", Body=p.read_bytes())
    monkeypatch.setenv("DICOM_ETL_SOURCE", "s3://prov-blocks/in")
    monkeypatch.setenv("DICOM_ETL_LAKE", "s3://lake-blocks/dev")
    monkeypatch.setenv("DICOM_ETL_DEID_SECRET", "very-secret-value-1234")
    monkeypatch.setenv("AWS_SECRET_ACCESS_KEY", "testing")
    env = os.environ | {"PREFECT_API_URL": PREFECT_API_URL.value()}
    done = subprocess.run([sys.executable, "-m", "flows", "blocks", "register", "--env", "dev"],
                          env=env, capture_output=True, text=True, timeout=300, check=False)
    assert done.returncode == 0, done.stderr[-2000:]
    out = done.stdout + done.stderr
    assert "dicom-settings-dev" in out and "dicom-aws-dev" in out and "dicom-lake-dev" in out
    assert "very-secret-value-1234" not in out and "AWS_SECRET" not in out

    # from here on only the blocks know where S3 is
    for var in ("AWS_ENDPOINT_URL", "AWS_ACCESS_KEY_ID", "AWS_SECRET_ACCESS_KEY", "DICOM_ETL_SOURCE", "DICOM_ETL_LAKE"):
        monkeypatch.delenv(var)
    summary = ingest_dicom(settings_block="dicom-settings-dev", run_dbt=False)
    assert summary["files"] == len(files) and summary["raw_rows"]["images"] == len(files)
    keys = [o["Key"] for o in boto3.client("s3", endpoint_url=moto_s3["url"], aws_access_key_id="t",
                                           aws_secret_access_key="t").list_objects_v2(Bucket="lake-blocks")["Contents"]]
    assert sum(k.startswith("dev/raw/") for k in keys) == len(files)
