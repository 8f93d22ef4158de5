from __future__ import annotations

import io

import numpy as np
import pydicom
import pytest
from PIL import Image

from tasks.deid import pseudo_uid, pseudonym
from tests.key_material import hmac_pads
from tasks.pixels.preview import render_batch, render_preview, robust_to_uint8, window_to_uint8


def test_window_maps_center_to_mid_grey_and_clips():
    x = np.array([-1000.0, 40.0 - 200, 40.0, 40.0 + 200, 3000.0])
    y = window_to_uint8(x, 40.0, 400.0)
    assert y[0] == 0 and y[-1] == 255
    assert 126 <= y[2] <= 129
    assert y[1] <= 1 and y[3] >= 254


def test_sixteen_bit_data_is_windowed_not_wrapped():
    # a naive astype(uint8) wraps 256 -> 0; the window keeps the order of values
    x = np.array([0, 255, 256, 4000], dtype=np.uint16)
    y = robust_to_uint8(x, low=0, high=100)
    assert list(np.argsort(y, kind="stable")) == [0, 1, 2, 3]
    assert y[-1] == 255 and y[0] == 0


@pytest.mark.parametrize("qs", [(0.5, 99.5), (0, 100), (25, 75), (50, 50)])
def test_percentiles_are_numpys_to_the_last_bit(qs):
    from tasks.pixels.display import percentiles

    rng = np.random.default_rng(7)
    for n in [1, 2, 3, 17, 200, 4096, 5001]:
        for x in (rng.normal(0, 1000, n), rng.integers(-2000, 4000, n), np.full(n, 7.5)):
            values = x.astype(np.float32)
            assert percentiles(values, qs) == [float(v) for v in np.percentile(values, qs)]


def test_robust_range_of_whole_numbers_and_of_floats_with_nan_agree():
    x = np.random.default_rng(3).integers(0, 4096, (64, 64)).astype(np.int16)
    with_nan = x.astype(np.float32)
    with_nan[0, 0] = np.nan  # not finite: left out of the range, drawn black
    expected = robust_to_uint8(x)
    got = robust_to_uint8(with_nan)
    assert got[0, 0] == 0 and (got.ravel()[1:] == expected.ravel()[1:]).mean() > 0.99


def _decode(jpeg: bytes) -> np.ndarray:
    return np.asarray(Image.open(io.BytesIO(jpeg)))


def test_ct_preview_shows_soft_tissue_grey_and_air_black(pydicom_dir):
    ds = pydicom.dcmread(pydicom_dir / "CT_small.dcm")
    preview = render_preview(ds)
    img = _decode(preview.jpeg)
    assert img.shape == (128, 128)
    assert img.std() > 20  # not a flat image


def test_monochrome1_is_inverted(synthetic_dir):
    cr = next(p for p in synthetic_dir.rglob("*") if p.is_file() and pydicom.dcmread(p).Modality == "CR")
    ds = pydicom.dcmread(cr)
    img = _decode(render_preview(ds).jpeg).astype(float)
    # the synthetic CR is brightest (highest values) in the centre: MONOCHROME1 shows it dark
    h, w = img.shape
    assert img[h // 2 - 5 : h // 2 + 5, w // 2 - 5 : w // 2 + 5].mean() < img[:5, :5].mean()


@pytest.mark.parametrize("name", ["examples_palette.dcm", "examples_ybr_color.dcm", "SC_rgb_rle_2frame.dcm"])
def test_colour_images_become_rgb(pydicom_dir, name):
    ds = pydicom.dcmread(pydicom_dir / name)
    preview = render_preview(ds, max_size=64)
    img = _decode(preview.jpeg)
    assert img.ndim == 3 and img.shape[2] == 3
    assert max(preview.width, preview.height) <= 64


def test_batch_names_previews_by_pseudonym_and_reports_decode_failures(pydicom_dir, tmp_path, secret):
    good = pydicom_dir / "CT_small.dcm"
    bad = pydicom_dir / "JPEG-lossy.dcm"  # 12-bit JPEG extended: no installed decoder
    uid_good = pydicom.dcmread(good).SOPInstanceUID
    previews, errors = render_batch(
        tmp_path, [(good, "ct", uid_good), (bad, "bad", "1.2.3")], secret=secret
    )
    assert [p["source_key"] for p in previews] == ["ct"]
    assert uid_good not in previews[0]["preview_key"]
    assert pseudonym(uid_good, secret) in previews[0]["preview_key"]
    assert (tmp_path / previews[0]["preview_key"]).read_bytes()[:2] == b"\xff\xd8"
    assert [(e["source_key"], e["reason"]) for e in errors] == [("bad", "pixel_decode")]


def test_pseudonyms_are_keyed_and_uids_valid(secret):
    a = pseudo_uid("1.2.840.1", secret)
    assert a == pseudo_uid("1.2.840.1", secret)
    assert a != pseudo_uid("1.2.840.1", secret + "x")
    assert a.startswith("2.25.") and len(a) <= 64 and a[5:].isdigit()
    ipad, opad = hmac_pads(secret)
    assert len(ipad) == len(opad) == 128
    with pytest.raises(ValueError, match="secret"):
        pseudonym("x", "")


def test_multiframe_renders_middle_frame_and_optionally_every_frame(pydicom_dir, tmp_path, secret):
    from tasks.pixels.preview import PreviewOptions, preview_key

    path = pydicom_dir / "examples_ybr_color.dcm"  # 30 frames
    uid = pydicom.dcmread(path).SOPInstanceUID
    previews, errors = render_batch(
        tmp_path, [(path, "us", uid)], secret=secret, options=PreviewOptions(max_size=64, frames="all")
    )
    assert not errors and previews[0]["frame_index"] == 15
    image_id = pseudonym(uid, secret)
    frames = sorted((tmp_path / preview_key(image_id, 0)).parent.glob("frame-*.jpg"))
    assert len(frames) == 30
    assert (tmp_path / previews[0]["preview_key"]).read_bytes() == (tmp_path / preview_key(image_id, 15)).read_bytes()


def test_process_pool_gives_the_same_rows_as_in_process(pydicom_dir, tmp_path, secret):
    from tasks.pool import make_process_pool

    names = ["CT_small.dcm", "MR_small.dcm", "examples_palette.dcm", "JPEG-lossy.dcm", "rtdose.dcm"]
    images = [(pydicom_dir / n, n, f"1.2.{i}") for i, n in enumerate(names)]
    alone = render_batch(tmp_path / "a", images, secret=secret)
    with make_process_pool(2) as pool:
        pooled = render_batch(tmp_path / "b", images, secret=secret, executor=pool)
    assert alone == pooled
    assert [e["source_key"] for e in pooled[1]] == ["JPEG-lossy.dcm"]


def test_quality_and_max_size_options(pydicom_dir):
    ds = pydicom.dcmread(pydicom_dir / "examples_palette.dcm")  # 800 x 600
    small = render_preview(ds, max_size=200, quality=30)
    large = render_preview(ds, max_size=2000, quality=95)
    assert max(small.width, small.height) == 200
    assert (large.width, large.height) == (ds.Columns, ds.Rows)  # never upscaled
    assert len(small.jpeg) < len(large.jpeg)


def test_enhanced_multiframe_uses_functional_group_window_and_rescale():
    from pydicom.dataset import Dataset

    from tasks.pixels.display import display_attributes, to_display

    ds = Dataset()
    ds.PhotometricInterpretation = "MONOCHROME2"
    shared = Dataset()
    pvt = Dataset()
    pvt.RescaleSlope, pvt.RescaleIntercept = 1, -1000
    shared.PixelValueTransformationSequence = [pvt]
    ds.SharedFunctionalGroupsSequence = [shared]
    frames = []
    for center in (0, 500):
        item, voi = Dataset(), Dataset()
        voi.WindowCenter, voi.WindowWidth = center, 100
        item.FrameVOILUTSequence = [voi]
        frames.append(item)
    ds.PerFrameFunctionalGroupsSequence = frames
    arr = np.array([[1000, 1500]], dtype=np.uint16)  # -> 0 and 500 after rescale
    first = to_display(arr, display_attributes(ds, 0))
    second = to_display(arr, display_attributes(ds, 1))
    assert 120 <= first[0, 0] <= 135 and first[0, 1] == 255
    assert second[0, 0] == 0 and 120 <= second[0, 1] <= 135
