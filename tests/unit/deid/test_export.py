"""The de-identified DICOM export's pure functions: rules, sequences, pixels, file meta, rows."""

from __future__ import annotations

import io
import random
from datetime import date, timedelta
from pathlib import Path

import numpy as np
import polars as pl
import pydicom
import pytest
from pydicom.dataset import Dataset
from pydicom.sequence import Sequence
from pydicom.uid import CTImageStorage, ExplicitVRLittleEndian, JPEGBaseline8Bit

from tasks.deid import date_offset_days, pseudo_uid, pseudonym
from tasks.deid.export import (
    CLEAN_PIXEL_DATA,
    ExportJob,
    PixelOutcome,
    deid_key,
    export_instance,
    export_row,
    settle_exports,
)
from tasks.deid.header import (
    clean_descriptor,
    deidentify_dataset,
    element_action,
    patient_key,
    read_profile,
    shift_date,
    shift_datetime,
)
from tasks.dicom.extract import Lineage, SourceFile, extract_batch
from tasks.dicom.synthetic import MODALITIES, make_instance
from tasks.lake.storage import list_local_objects
from tasks.pixels.display import to_display
from tasks.pixels.ocr import Tesseract
from tests import burned_in
from tests.conftest import PYDICOM_TEST_FILES

SECRET = "unit-secret"


def _instance(code: str = "CT", *, extras: bool = True) -> Dataset:
    patient = {"name": "Doe^Jane", "id": "PID123456", "birth": "19510829", "sex": "F", "age": "093Y"}
    study = {"uid": "1.2.3.4.5.100", "id": "S77", "date": "20200414", "time": "101010", "accession": "ACC998877",
             "description": "CT head for Jane Doe"}
    series = {"uid": "1.2.3.4.5.200", "frame_uid": "1.2.3.4.5.300", "number": 1, "description": "Axial 5mm",
              "manufacturer": "ACME", "model": "CT-1", "serial": "SN0042", "station": "STATION9", "body_part": "HEAD"}
    ds = make_instance(patient=patient, study=study, series=series, mod=MODALITIES[code], index=0,
                       rng=random.Random(1), nprng=np.random.default_rng(1))
    if not extras:
        return ds
    # what real files carry beyond the synthetic ones: nested identity, private tags, overlays
    ref = Dataset()
    ref.ReferencedSOPClassUID = CTImageStorage
    ref.ReferencedSOPInstanceUID = "1.2.3.4.5.999"
    ref.StudyDate = "20200401"
    inner = Dataset()
    inner.PatientName = "Doe^Jane"
    inner.RequestedProcedureID = "RP12345"
    inner.CodeValue = "T-A0100"
    inner.CodingSchemeDesignator = "SRT"
    inner.CodeMeaning = "Brain"
    ref.RequestAttributesSequence = Sequence([inner])
    ds.ReferencedImageSequence = Sequence([ref])
    ds.OtherPatientIDsSequence = Sequence([Dataset()])
    ds.OtherPatientIDsSequence[0].PatientID = "OTHER-ID-77"
    ds.add_new(0x00091010, "LO", "private Doe")
    ds.add_new(0x60003000, "OW", b"\x00" * 8)
    ds.ImageComments = "Jane fell off a horse"
    ds.AcquisitionDateTime = "20200414101010.5+0100"
    ds.PositionReferenceIndicator = "XY"
    return ds


@pytest.fixture(scope="module")
def profile():
    return read_profile()


def _roundtrip(data: bytes) -> Dataset:
    return pydicom.dcmread(io.BytesIO(data))


def test_profile_is_the_warehouse_seed(profile):
    assert profile.actions["StudyInstanceUID"] == "U"
    assert profile.actions["StudyDate"] == "C"
    assert profile.actions["PatientID"] == "X"  # stricter of patients (Z) and studies (X)
    assert profile.codes == ("113100", "113107", "113108", "113105")
    assert all(len(m) <= 64 for m in profile.method) and profile.method


def test_uids_dates_and_ids_as_the_warehouse_computes_them(profile):
    ds = _instance()
    key = patient_key(ds.PatientID, ds.IssuerOfPatientID)
    out = deidentify_dataset(ds, secret=SECRET, patient=key, profile=profile)
    offset = date_offset_days(pseudonym(key, SECRET))
    assert out.StudyInstanceUID == pseudo_uid("1.2.3.4.5.100", SECRET)
    assert out.SeriesInstanceUID == pseudo_uid("1.2.3.4.5.200", SECRET)
    assert out.FrameOfReferenceUID == pseudo_uid("1.2.3.4.5.300", SECRET)
    assert out.SOPClassUID == CTImageStorage
    assert out.PatientID == pseudonym("PID123456^SYNTH", SECRET)
    assert out.StudyDate == (date(2020, 4, 14) - timedelta(days=offset)).strftime("%Y%m%d")
    assert out.StudyTime == "101010"
    assert out.AccessionNumber == pseudonym("ACC998877", SECRET)[:16]
    assert out.PatientAge == "090Y"
    assert out.PatientName == "" and out.PatientBirthDate == "" and out.ReferringPhysicianName == ""
    assert out.StudyDescription == ""  # holds the patient's name: cleaned
    assert out.SeriesDescription == "Axial 5mm"
    assert out.PositionReferenceIndicator == ""  # X, emptied: type 2 in the Frame of Reference module
    assert out.AcquisitionDateTime == shift_date("20200414", offset) + "101010.5+0100"
    assert out.ImageComments == ""
    assert "InstitutionName" in out and out.InstitutionName == ""


def test_nested_sequences_private_tags_and_overlays(profile):
    ds = _instance()
    out = deidentify_dataset(ds, secret=SECRET, patient="PID123456^SYNTH", profile=profile)
    ref = out.ReferencedImageSequence[0]
    assert ref.ReferencedSOPInstanceUID == pseudo_uid("1.2.3.4.5.999", SECRET)
    assert ref.ReferencedSOPClassUID == CTImageStorage
    assert ref.StudyDate != "20200401" and len(ref.StudyDate) == 8
    inner = ref.RequestAttributesSequence[0]
    assert inner.PatientName == ""
    assert inner.RequestedProcedureID == pseudonym("RP12345", SECRET)[:16]
    assert (inner.CodeValue, inner.CodeMeaning) == ("T-A0100", "Brain")
    assert "OtherPatientIDsSequence" not in out
    assert 0x00091010 not in out and 0x60003000 not in out
    assert ds.StudyInstanceUID == "1.2.3.4.5.100"  # the input is not changed


def test_helpers_follow_the_macros():
    assert shift_date("2020.04.14", 14) == "20200331"
    assert shift_date("2020", 1) is None
    assert shift_datetime("2020", 1) is None
    for kept in ("Axial 5mm", "T1 SE", "CHEST PA"):
        assert clean_descriptor(kept, ["DOE"]) == kept
    for removed in ("Jane Doe", "MRN 1234567", "4/14/2020", "a@b.org", "Doe^Jane"):
        assert clean_descriptor(removed, ["DOE", "JANE"]) is None
    assert element_action("PerformedProcedureStepID", "SH", {}) == "D"
    assert element_action("ContrastBolusAgent", "LO", {}) == "T"
    assert element_action("ImageComments", "LT", {}) == "Z"
    assert element_action("ReferencedSOPInstanceUID", "UI", {}) == "V"
    assert element_action("CodeMeaning", "LO", {}) == "K"
    assert element_action("Rows", "US", {}) == "K"
    assert deid_key("ab12") == "deid/ab/ab12.dcm"


def test_file_meta_provenance_and_pixels_kept(profile):
    ds = _instance()
    out = _roundtrip(export_instance(ds, secret=SECRET, patient="p^", pixels=PixelOutcome("not_needed", verified=True),
                                     profile=profile))
    assert out.file_meta.MediaStorageSOPInstanceUID == out.SOPInstanceUID == pseudo_uid(ds.SOPInstanceUID, SECRET)
    assert out.file_meta.MediaStorageSOPClassUID == CTImageStorage
    assert out.file_meta.TransferSyntaxUID == ExplicitVRLittleEndian
    assert out.PatientIdentityRemoved == "YES"
    assert [c.CodeValue for c in out.DeidentificationMethodCodeSequence] == list(profile.codes)
    assert out.BurnedInAnnotation == "NO"
    assert np.array_equal(out.pixel_array, ds.pixel_array)


def test_cleaned_pixels_are_written_uncompressed_with_the_clean_pixel_code(profile):
    ds = _instance("US")
    cleaned = ds.pixel_array.copy()
    cleaned[:10] = 0
    claimed = PixelOutcome("cleaned", pixels=cleaned, method="ocr", verified=False)
    out = _roundtrip(export_instance(ds, secret=SECRET, patient="p^", pixels=claimed, profile=profile))
    assert np.array_equal(out.pixel_array, cleaned)
    assert CLEAN_PIXEL_DATA in [c.CodeValue for c in out.DeidentificationMethodCodeSequence]
    assert "BurnedInAnnotation" not in out  # not verified: no claim either way
    verified = PixelOutcome("cleaned", pixels=cleaned, method="ocr", verified=True)
    assert _roundtrip(export_instance(ds, secret=SECRET, patient="p^", pixels=verified, profile=profile)).BurnedInAnnotation == "NO"


def test_compressed_pixels_stay_compressed(profile):
    ds = pydicom.dcmread(PYDICOM_TEST_FILES / "SC_rgb_jpeg_dcmtk.dcm")
    out = _roundtrip(export_instance(ds, secret=SECRET, patient="p^", pixels=PixelOutcome("not_needed"), profile=profile))
    assert out.file_meta.TransferSyntaxUID == JPEGBaseline8Bit
    assert out.PixelData == ds.PixelData


def test_big_endian_input_is_written_little_endian(profile):
    ds = pydicom.dcmread(PYDICOM_TEST_FILES / "MR_small_bigendian.dcm")
    out = _roundtrip(export_instance(ds, secret=SECRET, patient="p^", pixels=PixelOutcome("not_needed"), profile=profile))
    assert out.file_meta.TransferSyntaxUID == ExplicitVRLittleEndian
    assert np.array_equal(out.pixel_array, ds.pixel_array)


def _withhold(ds: Dataset) -> PixelOutcome:
    return PixelOutcome("withheld", method="test", reason="burned_in_text_remains")


def test_withheld_images_are_never_written(tmp_path):
    job = ExportJob(tmp_path, SECRET, _withhold)
    row = export_row(_instance(), sop_uid="1.2.3", source_key="a/b.dcm", patient="p^", job=job)
    assert row["status"] == "withheld" and row["deid_key"] is None and row["reason"] == "burned_in_text_remains"
    assert not list(tmp_path.rglob("*.dcm"))
    with pytest.raises(ValueError, match="withheld"):
        export_instance(_instance(), secret=SECRET, patient="p^", pixels=PixelOutcome("withheld"))


def _broken_judge(ds: Dataset) -> PixelOutcome:
    raise RuntimeError("OCR crashed")


def test_a_failing_pixel_check_withholds(tmp_path):
    row = export_row(_instance(), sop_uid="1.2.3", source_key="a/b.dcm", patient="p^", job=ExportJob(tmp_path, SECRET, _broken_judge))
    assert (row["status"], row["pixel_deid_status"]) == ("withheld", "withheld")
    assert "RuntimeError" in row["reason"]


def _as_they_are(ds: Dataset) -> PixelOutcome:
    return PixelOutcome("not_needed")


def test_extraction_exports_every_pydicom_image_or_withholds_it(tmp_path, pydicom_dir):
    files = [SourceFile(pydicom_dir / o.key, o.key, o.etag) for o in list_local_objects(pydicom_dir)]
    frames = extract_batch(files, Lineage("b1"), export=ExportJob(tmp_path, SECRET, _as_they_are))
    exports = frames["deid_exports"]
    with_pixels = frames["images"].filter(pl.col("has_pixel_data"))
    assert exports.height == with_pixels.height
    assert set(exports["SOPInstanceUID"]) == set(with_pixels["SOPInstanceUID"])
    exported = exports.filter(pl.col("status") == "exported")
    # one file per SOPInstanceUID: pydicom's files repeat some UIDs (one image in many encodings)
    assert sorted(exported["SOPInstanceUID"]) == sorted(set(with_pixels["SOPInstanceUID"]))
    withheld = exports.filter(pl.col("status") == "withheld")["reason"].to_list()
    assert withheld and all(r.startswith("duplicate_conflict") for r in withheld)
    assert not [p for p in tmp_path.rglob("*") if p.name.endswith(".partial")]
    for key, size in exported.select("deid_key", "deid_bytes").iter_rows():
        assert (tmp_path / key).stat().st_size == size
        pydicom.dcmread(tmp_path / key)
    assert exports["batch_id"].unique().to_list() == ["b1"]
    assert Path(tmp_path / "deid").is_dir()


def _exported(tmp_path: Path, ds: Dataset, job: ExportJob) -> tuple[dict, Dataset | None]:
    row = export_row(ds, sop_uid=ds.SOPInstanceUID, source_key="k.dcm", patient="p^", job=job)
    settle_exports([row], tmp_path)
    return row, (pydicom.dcmread(tmp_path / row["deid_key"]) if row["status"] == "exported" else None)


def test_ct_without_text_is_exported_as_stored(tmp_path):
    ds = _instance("CT", extras=False)
    row, out = _exported(tmp_path, ds, ExportJob(tmp_path, SECRET))
    assert (row["status"], row["pixel_deid_status"], row["pixel_deid_method"]) == ("exported", "not_needed", "triage")
    assert np.array_equal(out.pixel_array, ds.pixel_array)
    assert out.BurnedInAnnotation == "NO"
    assert CLEAN_PIXEL_DATA not in [c.CodeValue for c in out.DeidentificationMethodCodeSequence]


def test_burned_in_text_is_cleaned_before_export_and_ocr_finds_none(tmp_path):
    """Text drawn at the edges of an ultrasound image (and in an overlay plane): the exported
    file's pixels hold none of it that OCR can read, and say how they were cleaned."""
    drawn = burned_in.draw_text(240, 320, font_size=12, light_on_dark=True)
    ds = burned_in.with_overlay_text(burned_in.burned_in_dataset(drawn), drawn)
    row, out = _exported(tmp_path, ds, ExportJob(tmp_path, SECRET))
    assert row["pixel_deid_status"] in ("cleaned", "withheld")
    if out is None:  # withheld: no file at all
        assert not list(tmp_path.rglob("*.dcm")) and row["reason"]
        return
    assert row["pixel_deid_status"] == "cleaned" and "verified" in row["pixel_deid_method"]
    assert CLEAN_PIXEL_DATA in [c.CodeValue for c in out.DeidentificationMethodCodeSequence]
    assert out.BurnedInAnnotation == "NO"
    assert not [e for e in out if 0x6000 <= e.tag.group <= 0x601E]
    words = {burned_in.normalize(w.text) for w in Tesseract().read_words(to_display(out.pixel_array, out))}
    text = " ".join(words)
    assert not [t for t in burned_in.phi_tokens() if t in text]
    original = {burned_in.normalize(w.text) for w in Tesseract().read_words(to_display(ds.pixel_array, ds))}
    assert [t for t in burned_in.phi_tokens() if t in " ".join(original)]  # the same reading sees the text before
