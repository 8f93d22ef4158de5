"""Integration fixtures: one extracted lake and one DuckDB warehouse build shared by the dbt and Snowflake tests; a boto3 client on the session's moto server."""

from __future__ import annotations

import random
import shutil
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pydicom
import pytest

from tasks.dicom.synthetic import generate_studies
from tests.integration.lakes import build_lake, pixels_as_they_are

SECRET = "duckdb-test-secret"


@pytest.fixture(scope="session")
def first_lake(tmp_path_factory, synthetic_dir, pydicom_dir) -> dict:
    """pydicom's files + the synthetic set, extracted once (key ``SECRET``, exports on) an hour ago.

    Shared: a test that builds from it or adds to it copies the lake first; the source is read only.
    """
    root = tmp_path_factory.mktemp("first_lake")
    source = root / "incoming"
    shutil.copytree(synthetic_dir, source / "synthetic")
    shutil.copytree(pydicom_dir, source / "pydicom")
    ingested_at = datetime.now(UTC) - timedelta(hours=1)
    build_lake(source, root / "lake", secret=SECRET, ingested_at=ingested_at, export_judge=pixels_as_they_are)
    return {"source": source, "lake": root / "lake", "ingested_at": ingested_at}


@pytest.fixture(scope="session")
def duckdb_built(prefect_server, tmp_path_factory, first_lake) -> dict:
    """Lake from pydicom's files + a synthetic set; warehouse built, rebuilt (nothing new), then the
    same files re-ingested and a new batch built in one go (extended), a separate warehouse built
    from that lake, then increments in a random order (a changed object, a duplicate conflict, a
    late batch), and the separate warehouse built again with a full refresh: seven dbt runs."""
    from flows.warehouse import build_warehouse

    root = tmp_path_factory.mktemp("dbt_duckdb")
    source, t0 = first_lake["source"], first_lake["ingested_at"]
    lake, warehouse = root / "lake", root / "warehouse.duckdb"
    shutil.copytree(first_lake["lake"], lake)
    mp = pytest.MonkeyPatch()
    mp.setenv("DICOM_ETL_DEID_SECRET", SECRET)
    first = build_warehouse(lake=str(lake), warehouse=str(warehouse))
    rerun_state = build_warehouse(lake=str(lake), warehouse=str(warehouse), return_state=True)
    # the same files ingested again (same batches, later ingest time), built with the next batch:
    # a re-ingest that doubled rows would show against the separate warehouse built below
    build_lake(source, lake, secret=SECRET, ingested_at=t0 + timedelta(minutes=10), export_judge=pixels_as_they_are)
    # a new batch of new patients
    more = root / "more"
    generate_studies(more / "synthetic-2", patients=2, studies_per_patient=1, series_per_study=1, images_per_series=2, seed=99)
    build_lake(more, lake, secret=SECRET, ingested_at=t0 + timedelta(minutes=20), export_judge=pixels_as_they_are)
    extended = build_warehouse(lake=str(lake), warehouse=str(warehouse))
    # a separate warehouse from the same lake and key: a separate run, with no history
    other = build_warehouse(lake=str(lake), warehouse=str(root / "other.duckdb"))
    for step, increment in enumerate(random.Random(16).sample(INCREMENTS, len(INCREMENTS)), start=3):
        folder = root / f"increment-{increment.__name__}"
        when = increment(folder, source)
        build_lake(
            folder, lake, secret=SECRET, ingested_at=when or t0 + timedelta(minutes=10 * step),
            export_judge=pixels_as_they_are,
        )
        build_warehouse(lake=str(lake), warehouse=str(warehouse))
    # every batch again, into the warehouse built separately above
    refreshed = build_warehouse(lake=str(lake), warehouse=str(root / "other.duckdb"), full_refresh=True)
    mp.undo()
    return {
        "root": root, "source": source, "more": more, "lake": lake, "warehouse": warehouse,
        "other": root / "other.duckdb", "first": first, "rerun": rerun_state.result(),
        "rerun_run_id": rerun_state.state_details.flow_run_id,
        "extended": extended, "other_counts": other, "refreshed": refreshed,
    }


def _changed_object(folder: Path, source: Path) -> None:
    """A provider object sent again with other content: same key, new ETag (a corrected description)."""
    # the first synthetic key of the lake: its study's row comes from this file
    original = min((p for p in (source / "synthetic").rglob("*") if p.is_file()), key=lambda p: p.relative_to(source).as_posix())
    ds = pydicom.dcmread(original)
    ds.StudyDescription = "CORRECTED"
    ds.SeriesDescription = "CORRECTED SERIES"
    path = folder / original.relative_to(source)
    path.parent.mkdir(parents=True)
    ds.save_as(path)


def _duplicate_conflict(folder: Path, source: Path) -> None:
    """The same SOPInstanceUID with another content, under a key that sorts first (it wins deduplication)."""
    path = sorted((source / "synthetic").rglob("*.dcm"))[1]
    ds = pydicom.dcmread(path)
    ds.InstanceNumber = 999
    ds.ImageComments = "re-sent"
    (folder / "aaa").mkdir(parents=True)
    ds.save_as(folder / "aaa" / "conflict.dcm")


def _late_batch(folder: Path, source: Path) -> datetime:
    """New patients whose batch arrives after later ones were built: ingested before them, in an old partition."""
    generate_studies(folder / "late", patients=1, studies_per_patient=1, series_per_study=1, images_per_series=2, seed=5)
    return datetime.now(UTC) - timedelta(days=2)


INCREMENTS = [_changed_object, _duplicate_conflict, _late_batch]


@pytest.fixture
def s3(moto_s3):
    """A boto3 client on the moto server."""
    import boto3

    return boto3.client("s3")
