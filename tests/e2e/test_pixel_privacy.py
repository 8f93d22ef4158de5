"""Burned-in text end to end: the ingest flow on a real Prefect server, local folder -> DuckDB.

Three images: a CT (not at risk: its preview is the one rendered before pixel privacy
existed), an ultrasound with a name, an MRN, dates and a time drawn into its pixels
(cleaned: no drawn string is left in its preview) and an image whose header says it shows
recognizable features (withheld: no preview file, an ingest_errors row, metadata kept, and
``errors``/``requeue`` work on it).
"""

from __future__ import annotations

import io
import shutil
from datetime import UTC, datetime

import duckdb
import numpy as np
import pydicom
import pytest
from PIL import Image

from tasks.deid import pseudo_uid, pseudonym
from tasks.lake.quarantine import read_errors, requeue
from tasks.pixels.ocr import Tesseract
from tasks.pixels.preview import preview_key, render_preview
from tests import burned_in

pytestmark = pytest.mark.e2e
SECRET = "e2e-pixel-secret"


@pytest.fixture(scope="module")
def ingested(prefect_server, pydicom_dir, tmp_path_factory):
    from flows.ingest import ingest_dicom

    root = tmp_path_factory.mktemp("pixels")
    source = root / "incoming"
    source.mkdir()
    shutil.copy(pydicom_dir / "CT_small.dcm", source / "ct.dcm")
    text = burned_in.draw_text(240, 320, font_size=12)
    burned_in.write(burned_in.burned_in_dataset(text, rgb=True), source / "us-text.dcm")
    face = burned_in.burned_in_dataset(burned_in.draw_text(64, 96, font_size=8), modality="XC")
    face.RecognizableVisualFeatures = "YES"
    burned_in.write(face, source / "photo.dcm")
    mp = pytest.MonkeyPatch()
    mp.setenv("DICOM_ETL_DEID_SECRET", SECRET)
    lake, warehouse = root / "lake", root / "warehouse.duckdb"
    summary = ingest_dicom(source=str(source), lake=str(lake), warehouse=str(warehouse))
    uids = {p.stem: str(pydicom.dcmread(p, stop_before_pixels=True).SOPInstanceUID) for p in source.iterdir()}
    yield {"source": source, "lake": lake, "warehouse": warehouse, "summary": summary, "uids": uids}
    mp.undo()


def _status(ingested) -> dict[str, tuple]:
    with duckdb.connect(str(ingested["warehouse"]), read_only=True) as con:
        rows = con.sql(
            "select sop_instance_pseudo_uid, pixel_deid_status, pixel_deid_method, preview_key, deidentification_method_codes"
            " from processed.processed_images"
        ).fetchall()
    by_uid = {r[0]: r[1:] for r in rows}
    return {name: by_uid[pseudo_uid(uid, SECRET)] for name, uid in ingested["uids"].items()}


def test_withheld_image_has_no_preview_file_and_an_error_row_and_keeps_its_metadata(ingested):
    lake, uid = ingested["lake"], ingested["uids"]["photo"]
    assert not (lake / preview_key(pseudonym(uid, SECRET))).exists()
    errors = read_errors(str(lake))
    withheld = errors.filter(errors["source_key"] == "photo.dcm").select("stage", "reason").rows()
    assert withheld == [("pixels", "burned_in_text")]
    status, method, key, codes = _status(ingested)["photo"]
    assert (status, method, key) == ("withheld", None, None)
    assert "113101" not in codes
    assert ingested["summary"]["rejected"] == {"burned_in_text": 1}


def test_cleaned_preview_shows_none_of_the_drawn_strings(ingested):
    status, method, key, codes = _status(ingested)["us-text"]
    assert (status, method) == ("cleaned", "ocr;verified")
    assert codes.split("\\")[-1] == "113101"
    preview = np.asarray(Image.open(ingested["lake"] / key))
    text = " ".join(burned_in.normalize(w.text) for w in Tesseract().read_words(preview))
    assert text.strip() == "" or not [t for t in burned_in.phi_tokens() if t in text]


def test_ct_preview_is_the_one_rendered_without_pixel_privacy(ingested):
    status, method, key, codes = _status(ingested)["ct"]
    assert (status, method) == ("not_needed", "triage") and "113101" not in codes
    before = render_preview(pydicom.dcmread(ingested["source"] / "ct.dcm"))
    stored = (ingested["lake"] / key).read_bytes()
    assert np.array_equal(np.asarray(Image.open(io.BytesIO(stored))), np.asarray(Image.open(io.BytesIO(before.jpeg))))


def test_requeue_sends_a_withheld_image_back(ingested):
    assert requeue(str(ingested["lake"]), ["photo.dcm"], requeued_at=datetime.now(UTC)) == 1
