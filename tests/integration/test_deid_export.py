"""The de-identified DICOM export against the built DuckDB warehouse, dciodvfy and a PHI scan.

The lake of the shared ``duckdb_built`` fixture is extracted with the export on (pixels
taken as they are: these tests are about headers; pixel cleaning has its own tests).
"""

from __future__ import annotations

import re
import shutil
import subprocess
from pathlib import Path

import duckdb
import pydicom
import pytest

from tasks.deid.export import IMPLEMENTATION_CLASS_UID
from tests.integration.conftest import SECRET
from tests.integration.phi import collect_phi, find_phi

pytestmark = pytest.mark.integration

DCIODVFY = shutil.which("dciodvfy")


def _sql(warehouse: Path, sql: str) -> list[tuple]:
    with duckdb.connect(str(warehouse), read_only=True) as con:
        return con.execute(sql).fetchall()


@pytest.fixture(scope="module")
def exported(duckdb_built) -> dict:
    """Every exported file: its processed.deid_exports row, its original and its dataset."""
    lake = duckdb_built["lake"]
    raw = duckdb.sql(
        f"select image_pseudonym, deid_key, source_key, status from read_parquet('{lake}/tables/deid_exports/**/*.parquet')"
    ).fetchall()
    files = {}
    for image_id, key, source_key, status in raw:
        if status != "exported":
            continue
        # the input folder that held it: the first lake, the extension, or an increment (the latest)
        folders = [*sorted(duckdb_built["root"].glob("increment-*")), duckdb_built["source"], duckdb_built["more"]]
        original = next((f / source_key for f in folders if (f / source_key).is_file()), duckdb_built["source"] / source_key)
        files[image_id] = {"key": key, "original": original, "ds": pydicom.dcmread(lake / key)}
    return files


def test_every_image_with_pixels_is_exported_or_withheld(duckdb_built, exported):
    lake = duckdb_built["lake"]
    images = duckdb.sql(
        f"select count(distinct SOPInstanceUID) from read_parquet('{lake}/tables/images/**/*.parquet') where has_pixel_data"
    ).fetchone()[0]
    rows = _sql(duckdb_built["warehouse"], "select export_status, deid_key, deid_bytes from processed.deid_exports")
    assert len(rows) == images
    assert len(exported) > 50
    # pydicom's files repeat UIDs with other content across batches: which file is last written is
    # then a race (docs/deid-export.md); every other file is the one its row describes
    repeated = {
        key
        for (key,) in duckdb.sql(
            f"select any_value(deid_key) from read_parquet('{lake}/tables/deid_exports/**/*.parquet') "
            "where deid_key is not null group by SOPInstanceUID having count(distinct source_key) > 1"
        ).fetchall()
    }
    for status, key, size in rows:
        if status == "exported":
            assert (lake / key).is_file()
            if key not in repeated:
                assert (lake / key).stat().st_size == size
        else:
            assert key is None
    assert sorted(p.relative_to(lake).as_posix() for p in (lake / "deid").rglob("*.dcm")) == sorted(
        f["key"] for f in exported.values()
    )


def test_exported_files_join_the_warehouse(duckdb_built, exported):
    """Every UID, the patient pseudonym and the shifted dates of a file equal its warehouse rows."""
    rows = _sql(
        duckdb_built["warehouse"],
        """
        select e.image_pseudonym, i.sop_instance_pseudo_uid, i.series_pseudo_uid, i.study_pseudo_uid,
               st.patient_pseudo_id, st.study_date_shifted, st.accession_pseudonym, se.frame_of_reference_pseudo_uid,
               se.series_date_shifted, i.content_date_shifted, st.study_description, se.series_description
        from processed.deid_exports as e
        join processed.images as i on i.sop_instance_pseudo_uid = e.sop_instance_pseudo_uid
        join processed.studies as st on st.study_pseudo_uid = i.study_pseudo_uid
        join processed.series as se on se.series_pseudo_uid = i.series_pseudo_uid
        where e.export_status = 'exported'
        """,
    )
    assert len(rows) == len(exported)

    def day(value) -> str:  # noqa: ANN001 - a date or None
        return value.strftime("%Y%m%d") if value is not None else ""

    dates = descriptions = 0
    for image_id, sop, series, study, patient, study_date, accession, frame, series_date, content_date, sdesc, rdesc in rows:
        ds = exported[image_id]["ds"]
        assert ds.SOPInstanceUID == sop == ds.file_meta.MediaStorageSOPInstanceUID
        assert (ds.SeriesInstanceUID, ds.StudyInstanceUID) == (series, study)
        assert ds.PatientID == patient
        if "FrameOfReferenceUID" in ds and ds.FrameOfReferenceUID:
            assert ds.FrameOfReferenceUID == frame
        assert ds.get("StudyDate", "") == day(study_date)
        assert ds.get("SeriesDate", "") == day(series_date)
        assert ds.get("ContentDate", "") == day(content_date)
        dates += study_date is not None
        if ds.get("AccessionNumber"):
            assert ds.AccessionNumber == accession[:16]
        if "synthetic" in str(exported[image_id]["original"]) and "CORRECTED" not in f"{sdesc}{rdesc}":
            # pydicom's files share study and series UIDs with other descriptions: the warehouse
            # keeps one file's; and it cleans against the whole lake's names (docs/deid-export.md).
            # The changed object corrected its study's and series' descriptions; the other files
            # of that series keep their own.
            assert ds.get("StudyDescription", "") == (sdesc or "")
            assert ds.get("SeriesDescription", "") == (rdesc or "")
            descriptions += 1
    assert dates > 50 and descriptions > 20


def test_exported_headers_carry_the_profile(exported):
    for item in exported.values():
        ds = item["ds"]
        assert ds.PatientIdentityRemoved == "YES"
        assert ds.LongitudinalTemporalInformationModified == "MODIFIED"
        codes = [c.CodeValue for c in ds.DeidentificationMethodCodeSequence]
        assert codes[:4] == ["113100", "113107", "113108", "113105"]
        assert all(c.CodingSchemeDesignator == "DCM" for c in ds.DeidentificationMethodCodeSequence)
        assert ds.file_meta.ImplementationClassUID == IMPLEMENTATION_CLASS_UID
        tags = [e.tag for e in ds.iterall()]
        assert not [t for t in tags if t.is_private]
        assert not [t for t in tags if 0x6000 <= t.group <= 0x601E]
        assert ds.get("PatientName", "") == ""


def test_no_phi_in_any_element_of_any_exported_file(duckdb_built, exported):
    """Every element, sequences and file meta included, against every PHI value of the input;
    dates record by record (a shifted date may fall on another record's original date)."""
    phi = collect_phi(duckdb_built["source"])
    more = collect_phi(duckdb_built["more"])
    phi.strings |= more.strings
    phi.terms |= more.terms
    hits: list[str] = []
    checked = 0
    for image_id, item in exported.items():
        ds = item["ds"]
        original = pydicom.dcmread(item["original"], force=True, stop_before_pixels=True)
        original_dates = {str(e.value).strip() for e in original.iterall() if e.VR in ("DA", "DT") and e.value}
        columns, values = [], []
        for elem in [*ds.iterall(), *ds.file_meta]:
            if elem.VR in ("SQ", "OB", "OW", "OF", "OD", "OL", "UN") or elem.value in (None, ""):
                continue
            if elem.VR in ("DA", "DT"):
                for value in (elem.value if elem.VM > 1 else [elem.value]):
                    if str(value)[:8] in {d[:8] for d in original_dates}:
                        hits.append(f"{image_id}: {elem.keyword} keeps an original date")
                continue
            columns.append(elem.keyword or str(elem.tag))
            values.append(list(elem.value) if elem.VM > 1 else elem.value)
            checked += 1
        hits += find_phi(phi, image_id[:12], columns, [tuple(values)], typed_dates=False)
    assert checked > 1000
    assert hits == []


def test_the_phi_scan_sees_phi_in_the_originals(duckdb_built, exported):
    """The same scan finds PHI in the input files, so its silence above means something."""
    phi = collect_phi(duckdb_built["source"])
    item = next(i for i in exported.values() if "synthetic" in str(i["original"]))
    ds = pydicom.dcmread(item["original"], stop_before_pixels=True)
    elems = [e for e in ds.iterall() if e.VR not in ("SQ", "OB", "OW", "UN")]
    assert find_phi(phi, "original", [e.keyword for e in elems], [tuple(e.value for e in elems)], typed_dates=False)


def _errors(path: Path) -> set[str] | None:
    """dciodvfy's errors for a file, values masked (UIDs and dates differ by design); None if unreadable."""
    run = subprocess.run([DCIODVFY, str(path)], capture_output=True, text=True, timeout=60, check=False)
    lines = (run.stdout + run.stderr).splitlines()
    if any("Dicom dataset read failed" in line for line in lines):
        return None
    return {re.sub(r"<[^>]*[0-9][^>]*>", "<value>", line.strip()) for line in lines if line.startswith("Error")}


@pytest.mark.skipif(DCIODVFY is None, reason="dciodvfy (Debian package dicom3tools) is not installed; .ci/run installs it")
def test_dciodvfy_finds_no_error_the_original_does_not_have(exported):
    new: dict[str, set[str]] = {}
    compared = 0
    for image_id, item in exported.items():
        before = _errors(item["original"])
        if before is None:  # dciodvfy cannot read the original (deflated with a private tag): nothing to compare
            continue
        after = _errors(Path(item["ds"].filename))
        assert after is not None, f"dciodvfy cannot read the export of {item['original'].name}"
        compared += 1
        if after - before:
            new[item["original"].name] = after - before
    assert compared > 50
    assert new == {}
