"""Pixel privacy: triage from the header, burned-in text removed (checked by OCR), or withheld."""

from __future__ import annotations

import numpy as np
import pydicom
import pytest
from pydicom.data import get_testdata_file

from tasks.pixels.display import to_display
from tasks.pixels.ocr import Tesseract
from tasks.pixels.phi_text import header_terms, is_sensitive
from tasks.pixels.privacy import (
    checked_frames,
    clean_batch,
    clean_pixels,
    matching_regions,
    read_region_rules,
    read_triage_rules,
    triage,
)
from tests import burned_in
from tests.conftest import PYDICOM_TEST_FILES

#: The test's own reading: two settings other than cleaning's, their words put together.
TEST_OCR = (Tesseract(), Tesseract(upscale_below=1200, thresholding=1))

# (rows, cols, font size, light on dark, rgb, frames)
CASES = {
    "small-mono-light": (128, 160, 9, True, False, 1),
    "mono-dark-on-light": (240, 320, 12, False, False, 1),
    "rgb-light": (240, 320, 11, True, True, 1),
    "us-multiframe": (360, 480, 13, True, False, 3),
    "rgb-dark-multiframe": (200, 300, 12, False, True, 2),
}


@pytest.fixture(scope="session")
def rules():
    return read_triage_rules(), read_region_rules()


@pytest.fixture(scope="session")
def cleaned(rules):
    """Every case cleaned once per session, in both text modes: {(case, mode): (ds, drawn, result)}."""
    triage_rules, regions = rules
    made = {}
    for name, (rows, cols, size, light, rgb, frames) in CASES.items():
        drawn = burned_in.draw_text(rows, cols, font_size=size, light_on_dark=light)
        made[name] = (burned_in.burned_in_dataset(drawn, rgb=rgb, frames=frames), drawn)
    out = {}
    for mode, names in (("all", list(CASES)), ("sensitive", ["mono-dark-on-light", "us-multiframe"])):
        batch = clean_batch([(made[n][0], made[n][0].pixel_array) for n in names], mode=mode, rules=triage_rules, regions=regions)
        out |= {(n, mode): (*made[n], result) for n, result in zip(names, batch)}
    return out


def _frames(ds, pixels):
    return list(pixels) if int(ds.get("NumberOfFrames") or 1) > 1 else [pixels]


def _read(image) -> set[str]:
    return {burned_in.normalize(w.text) for ocr in TEST_OCR for w in ocr.read_words(image)}


def _survivors(ds, pixels) -> set[str]:
    """The drawn PHI tokens the test's OCR still reads in any frame's display."""
    words = _read(np.concatenate([to_display(frame, ds) for frame in _frames(ds, pixels)]))
    text = " ".join(words)
    return {t for t in burned_in.phi_tokens() if t in text or t in words}


@pytest.mark.parametrize("case", [(c, "all") for c in CASES] + [("mono-dark-on-light", "sensitive"), ("us-multiframe", "sensitive")], ids=lambda c: f"{c[0]}-{c[1]}")
def test_no_drawn_phi_survives_in_the_cleaned_pixels(cleaned, case):
    ds, drawn, result = cleaned[case]
    assert result.status == "cleaned", result.reason
    assert result.method.endswith("ocr;verified") and result.triage.status == "at_risk"
    assert result.pixels.shape == ds.pixel_array.shape and result.pixels.dtype == ds.pixel_array.dtype
    # the test can fail: the same OCR reads the drawn PHI in the original
    assert _survivors(ds, ds.pixel_array), "OCR should read the drawn text before cleaning"
    assert _survivors(ds, result.pixels) == set()


@pytest.mark.parametrize("case", list(CASES))
def test_every_drawn_glyph_is_blanked_in_every_frame_in_mode_all(cleaned, case):
    """Independent of OCR: every pixel of every glyph, and its neighbours, is the fill value in every frame."""
    ds, drawn, result = cleaned[case, "all"]
    near = drawn.glyphs.copy()
    for axis in (0, 1):
        for step in (-1, 1):
            near |= np.roll(drawn.glyphs, step, axis=axis)
    for index, frame in enumerate(_frames(ds, result.pixels)):
        shifted = np.roll(near, index % 2, axis=0)  # odd frames were drawn a row lower
        fill = 0 if frame.ndim == 3 else frame.min()
        values = frame[shifted]
        assert (values == fill).all(), f"{(values != fill).sum()} text pixels left in frame {index} of {case}"


def test_sensitive_mode_keeps_text_that_is_not_phi(cleaned):
    ds, drawn, sensitive = cleaned["mono-dark-on-light", "sensitive"]
    _, _, everything = cleaned["mono-dark-on-light", "all"]
    assert 0 < sensitive.boxes < everything.boxes  # labels such as "MRN" and "DOB" stay
    assert (sensitive.pixels != drawn.pixels).sum() < (everything.pixels != drawn.pixels).sum()


def test_ct_and_mr_without_text_are_left_untouched(rules):
    triage_rules, regions = rules
    ct = pydicom.dcmread(PYDICOM_TEST_FILES / "CT_small.dcm")  # ORIGINAL\PRIMARY: nothing to pay
    pixels = ct.pixel_array
    result = clean_pixels(ct, pixels, rules=triage_rules, regions=regions)
    assert (result.status, result.method, result.triage.status) == ("not_needed", "triage", "not_at_risk")
    assert result.pixels is pixels
    mr = pydicom.dcmread(PYDICOM_TEST_FILES / "MR_small.dcm")  # DERIVED\SECONDARY: read, nothing found
    result = clean_pixels(mr, mr.pixel_array, rules=triage_rules, regions=regions)
    assert (result.status, result.triage.reasons, result.boxes) == ("cleaned", ("image_type_secondary",), 0)
    assert np.array_equal(result.pixels, mr.pixel_array)


def test_triage_reads_burned_in_annotation_sop_class_image_type_and_overlays(rules):
    triage_rules, _ = rules
    ds = pydicom.dcmread(PYDICOM_TEST_FILES / "CT_small.dcm")
    assert triage(ds, triage_rules).status == "not_at_risk"
    ds.BurnedInAnnotation = "YES"
    assert triage(ds, triage_rules).status == "declared"
    del ds.BurnedInAnnotation
    ds.ImageType = ["DERIVED", "SECONDARY", "SCREEN SAVE"]
    assert triage(ds, triage_rules).reasons[0].startswith("image_type")
    ds.ImageType = ["ORIGINAL", "PRIMARY"]
    ds.SOPClassUID = "1.2.840.10008.5.1.4.1.1.7.4"  # multi-frame true colour secondary capture
    assert triage(ds, triage_rules).reasons == ("secondary_capture",)
    ds.SOPClassUID = "1.2.840.10008.5.1.4.1.1.2"
    burned_in.with_overlay_text(ds, burned_in.draw_text(ds.Rows, ds.Columns, font_size=9))
    assert triage(ds, triage_rules).reasons == ("overlay_planes",)
    ds.RecognizableVisualFeatures = "YES"
    assert triage(ds, triage_rules).withhold == "recognizable_visual_features"


def test_text_only_in_an_overlay_is_never_burned_in(rules):
    triage_rules, regions = rules
    text = burned_in.draw_text(128, 160, font_size=10)
    clean = burned_in.draw_text(128, 160, font_size=10)
    plain = np.where(clean.pixels > 200, 0, clean.pixels).astype(np.uint8)  # the organ, no text
    ds = burned_in.burned_in_dataset(burned_in.Drawn(plain, ()), modality="CT")
    ds.SOPClassUID = "1.2.840.10008.5.1.4.1.1.2"
    burned_in.with_overlay_text(ds, text)
    result = clean_pixels(ds, ds.pixel_array, rules=triage_rules, regions=regions)
    assert result.triage.reasons == ("overlay_planes",) and result.status == "cleaned"
    assert _survivors(ds, result.pixels) == set()
    assert _survivors(ds, np.maximum(ds.pixel_array, ds.overlay_array(0x6000) * 255))  # the overlay holds text


def test_obxxxx1a_burned_in_date_and_id_are_removed(rules):
    triage_rules, regions = rules
    ds = pydicom.dcmread(get_testdata_file("OBXXXX1A.dcm"))
    before = _read(to_display(ds.pixel_array, ds))
    assert {"5252011", "110525142825"} & before  # the study date and the patient ID, as printed
    result = clean_pixels(ds, ds.pixel_array, rules=triage_rules, regions=regions)
    assert result.status == "cleaned" and result.method.startswith("region:cx50")
    after = [w.text for ocr in TEST_OCR for w in ocr.read_words(to_display(result.pixels, ds))]
    assert not [w for w in after if is_sensitive(w, header_terms(ds))]


def test_withheld_when_ocr_is_unavailable(rules, tmp_path):
    triage_rules, regions = rules
    ds = burned_in.burned_in_dataset(burned_in.draw_text(64, 96, font_size=8))
    result = clean_pixels(ds, ds.pixel_array, rules=triage_rules, regions=regions, ocr=Tesseract(command=str(tmp_path / "no-tesseract")))
    assert (result.status, result.pixels) == ("withheld", None)
    assert result.reason.startswith("ocr_unavailable")


def test_withheld_by_rule_and_none_mode_changes_nothing(rules):
    triage_rules, regions = rules
    ds = burned_in.burned_in_dataset(burned_in.draw_text(64, 96, font_size=8))
    pixels = ds.pixel_array
    none = clean_pixels(ds, pixels, mode="none", rules=triage_rules, regions=regions)
    assert (none.status, none.method) == ("not_needed", "pixel_text=none") and none.pixels is pixels
    ds.RecognizableVisualFeatures = "YES"
    assert clean_pixels(ds, pixels, rules=triage_rules, regions=regions).status == "withheld"
    with pytest.raises(ValueError, match="pixel_text='some'"):
        clean_pixels(ds, pixels, mode="some")  # type: ignore[arg-type]


def test_region_rules_match_device_signatures(rules):
    _, regions = rules
    ds = pydicom.dcmread(get_testdata_file("OBXXXX1A.dcm"), stop_before_pixels=True)
    assert [r.rule for r in matching_regions(ds, regions)] == ["cx50"]
    ds.ManufacturerModelName = "Some Other Model"
    assert matching_regions(ds, regions) == []


@pytest.mark.parametrize(
    ("word", "sensitive"),
    [("4/14/2020", True), ("O8/29/l951", True), ("13:45", True), ("84736251", True), ("DOE*JANE", True),
     ("14-APR-2020", True), ("MRN", False), ("cm", False), ("1.8", False), ("Gn", False)],
)
def test_phi_words(word, sensitive):
    ds = burned_in.burned_in_dataset(burned_in.draw_text(32, 32, font_size=6))
    assert is_sensitive(word, header_terms(ds)) is sensitive


def test_one_ocr_run_reads_many_images_as_each_alone():
    images = [burned_in.draw_text(96, 160, font_size=10, light_on_dark=light).pixels for light in (True, False)]
    ocr = Tesseract()
    assert [[w.text for w in page] for page in ocr.read_many(images)] == [[w.text for w in ocr.read_words(i)] for i in images]


def test_checked_frames():
    assert checked_frames(1) == [0]
    assert checked_frames(2) == [0, 1]
    assert checked_frames(10) == [0, 5, 9]


def test_pixel_text_setting_layers_and_checks(tmp_path):
    from blocks.settings import PIXEL_TEXT_MODES as SETTINGS_MODES
    from blocks.settings import DicomPipelineSettings, merge_config
    from flows.cli import build_parser
    from pydantic import SecretStr
    from tasks.errors import ConfigError
    from tasks.pixels.privacy import PIXEL_TEXT_MODES

    assert SETTINGS_MODES == PIXEL_TEXT_MODES
    assert merge_config({}, environ={}, data_dir=tmp_path).pixel_text == "all"
    assert merge_config({}, environ={"DICOM_ETL_PIXEL_TEXT": "sensitive"}, data_dir=tmp_path).pixel_text == "sensitive"
    block = DicomPipelineSettings(deid_secret=SecretStr("s"), pixel_text="none")
    assert merge_config({}, block=block, environ={}, data_dir=tmp_path).pixel_text == "none"
    assert merge_config({"pixel_text": "all"}, block=block, environ={}, data_dir=tmp_path).pixel_text == "all"
    with pytest.raises(ConfigError, match="pixel_text='some'"):
        merge_config({"pixel_text": "some"}, environ={}, data_dir=tmp_path)
    assert build_parser().parse_args(["ingest", "--pixel-text", "sensitive"]).pixel_text == "sensitive"
