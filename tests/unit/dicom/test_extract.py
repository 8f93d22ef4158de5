from __future__ import annotations

import json
import random
from pathlib import Path

import polars as pl
import pydicom
import pytest

from tasks.errors import FileRejected, Reason
from tasks.dicom.extract import Lineage, SourceFile, extract_batch, header_json, read_dicom
from tasks.lake.storage import list_local_objects
from tasks.dicom.synthetic import MODALITIES, make_instance


def _files(root: Path) -> list[SourceFile]:
    return [SourceFile(root / o.key, o.key, o.etag) for o in list_local_objects(root)]


def test_every_pydicom_test_file_is_accounted_for(pydicom_dir):
    files = _files(pydicom_dir)
    frames = extract_batch(files, Lineage("b1"))
    images = set(frames["images"]["source_key"])
    errors = frames["ingest_errors"]
    rejected = set(errors.filter(pl.col("reason") != "duplicate_conflict")["source_key"])
    conflicts = set(errors.filter(pl.col("reason") == "duplicate_conflict")["source_key"])
    assert images.isdisjoint(rejected)
    assert conflicts <= images  # conflicting copies stay visible in images
    assert images | rejected == {f.key for f in files}
    assert len(images) > 100
    assert frames["ingest_errors"]["reason"].is_in([r.value for r in Reason]).all()


@pytest.mark.parametrize(
    ("name", "reason"),
    [
        ("MR_truncated.dcm", Reason.TRUNCATED),
        ("rtplan_truncated.dcm", Reason.TRUNCATED),  # cut inside the header, not the pixels
        ("README.txt", Reason.NOT_DICOM),
        ("dicomdirtests/DICOMDIR", Reason.DICOMDIR),
        ("UN_sequence.dcm", Reason.MISSING_REQUIRED_UID),
    ],
)
def test_bad_files_get_their_reason(pydicom_dir, name, reason):
    frames = extract_batch([SourceFile(pydicom_dir / name, name)], Lineage("b"))
    assert frames["images"].height == 0
    assert frames["ingest_errors"].row(0, named=True)["reason"] == reason


def test_read_dicom_rejects_empty_bytes():
    with pytest.raises(FileRejected) as info:
        read_dicom(b"")
    assert info.value.reason == Reason.EMPTY_FILE


def test_empty_and_random_bytes_are_rejected(tmp_path):
    (tmp_path / "empty.dcm").write_bytes(b"")
    (tmp_path / "noise.dcm").write_bytes(random.Random(1).randbytes(4096))
    frames = extract_batch(_files(tmp_path), Lineage("b"))
    reasons = dict(frames["ingest_errors"].select("source_key", "reason").iter_rows())
    assert reasons["empty.dcm"] == "empty_file"
    assert reasons["noise.dcm"] in {"not_dicom", "unreadable", "missing_required_uid"}
    assert frames["images"].height == 0


def test_files_without_preamble_and_meta_are_read(pydicom_dir):
    frames = extract_batch(_files(pydicom_dir), Lineage("b"))
    keys = set(frames["images"]["source_key"])
    assert {"ExplVR_BigEndNoMeta.dcm", "ExplVR_LitEndNoMeta.dcm", "rtstruct.dcm"} <= keys


def test_values_match_pydicom(pydicom_dir):
    path = pydicom_dir / "CT_small.dcm"
    ds = pydicom.dcmread(path)
    frames = extract_batch([SourceFile(path, "CT_small.dcm", "e1")], Lineage("b"))
    image = frames["images"].row(0, named=True)
    assert image["SOPInstanceUID"] == ds.SOPInstanceUID
    assert image["Rows"] == ds.Rows and image["Columns"] == ds.Columns
    assert image["PixelSpacing"] == [str(v) for v in ds.PixelSpacing]
    assert image["ImageType"] == list(ds.ImageType)
    assert image["TransferSyntaxUID"] == ds.file_meta.TransferSyntaxUID
    assert image["source_etag"] == "e1" and image["batch_id"] == "b"
    assert image["content_hash"] and image["file_size"] == path.stat().st_size
    patient = frames["patients"].row(0, named=True)
    assert patient["PatientName"] == str(ds.PatientName)
    assert frames["images"].schema["Rows"] == pl.Int64
    assert frames["images"].schema["ImagePositionPatient"] == pl.List(pl.Utf8)


CHARSET_FILES = Path(pydicom.data.__file__).parent / "charset_files"


@pytest.mark.parametrize(
    ("name", "expected"),
    [
        ("chrH31.dcm", "Yamada^Tarou=山田^太郎=やまだ^たろう"),  # ISO 2022 Japanese, 3 PN groups
        ("chrFren.dcm", "Buc^Jérôme"),  # Latin-1
        ("chrRuss.dcm", "Люкceмбypг"),  # Cyrillic
        ("chrI2.dcm", "Hong^Gildong=洪^吉洞=홍^길동"),  # Korean
    ],
)
def test_specific_character_set_is_honoured_and_pn_components_kept(name, expected):
    frames = extract_batch([SourceFile(CHARSET_FILES / name, name)], Lineage("b"))
    assert frames["patients"]["PatientName"].to_list() == [expected]


def test_header_json_keeps_sequences_and_private_tags_and_drops_bulk(pydicom_dir):
    ds = pydicom.dcmread(pydicom_dir / "nested_priv_SQ.dcm")
    body = json.loads(header_json(ds))
    assert any(int(tag[:4], 16) % 2 == 1 for tag in body)  # private group kept
    ct = pydicom.dcmread(pydicom_dir / "CT_small.dcm")
    body = json.loads(header_json(ct))
    assert "BulkDataURI" in body["7FE00010"] and "InlineBinary" not in body["7FE00010"]
    assert body["00100010"]["Value"][0]["Alphabetic"] == str(ct.PatientName)


@pytest.mark.parametrize("name", ["chrI2.dcm", "chrX1.dcm", "nested_priv_SQ.dcm", "CT_small.dcm"])
def test_header_json_is_the_text_the_standard_library_writes(pydicom_dir, name):
    from tasks.dicom.instance import decode_header, dump_json

    path = CHARSET_FILES / name if (CHARSET_FILES / name).exists() else pydicom_dir / name
    body = decode_header(read_dicom(path.read_bytes()))[1]
    assert dump_json(body) == json.dumps(body, separators=(",", ":"), ensure_ascii=False)
    # what orjson refuses (an integer beyond 64 bits) is still written, by the standard library
    assert json.loads(dump_json(body | {"00191001": {"vr": "IS", "Value": [2**70]}}))["00191001"]["Value"] == [2**70]


def test_entities_are_deduplicated_within_a_batch(synthetic_dir):
    frames = extract_batch(_files(synthetic_dir), Lineage("b"))
    assert frames["patients"].height == 3
    assert frames["studies"].height == 6
    assert frames["series"].height == 12
    assert frames["images"].height == 24
    assert frames["images"]["SOPInstanceUID"].n_unique() == 24


def test_extraction_is_idempotent(synthetic_dir):
    files = _files(synthetic_dir)
    lineage = Lineage("b")
    first = extract_batch(files, lineage)
    second = extract_batch(list(reversed(files)), lineage)
    for name in first.frames:
        assert first[name].equals(second[name]), name


def test_device_key_is_stable_across_batches(synthetic_dir):
    files = _files(synthetic_dir)
    a = extract_batch(files[:10], Lineage("a"))["devices"]
    b = extract_batch(files, Lineage("b"))["devices"]
    assert set(a["device_key"]) <= set(b["device_key"])


def test_make_instance_round_trips(tmp_path):
    rng = random.Random(1)
    import numpy as np

    mod = MODALITIES["CT"]
    common = {"uid": "1.2.3", "frame_uid": "1.2.4", "number": 1, "description": "d", "manufacturer": "m",
              "model": "x", "serial": "s", "station": "st", "body_part": "HEAD"}
    ds = make_instance(
        patient={"name": "A^B", "id": "P", "birth": "19700101", "sex": "F", "age": "054Y"},
        study={"uid": "1.2.5", "id": "S1", "date": "20240101", "time": "101010", "accession": "A1", "description": "d"},
        series=common, mod=mod, index=0, rng=rng, nprng=np.random.default_rng(1),
    )
    path = tmp_path / "x.dcm"
    ds.save_as(path, enforce_file_format=True)
    assert pydicom.dcmread(path).pixel_array.shape == (mod.rows, mod.columns)


def _copy_with_change(src: Path, dst: Path, **changes) -> None:
    ds = pydicom.dcmread(src)
    for k, v in changes.items():
        setattr(ds, k, v)
    dst.parent.mkdir(parents=True, exist_ok=True)
    ds.save_as(dst, enforce_file_format=True)


def test_conflicting_duplicates_stay_visible_and_get_an_error_row(synthetic_dir, tmp_path):
    original = sorted(p for p in synthetic_dir.rglob("*") if p.is_file())[0]
    (tmp_path / "a.dcm").write_bytes(original.read_bytes())
    (tmp_path / "b.dcm").write_bytes(original.read_bytes())  # identical copy: not a conflict
    _copy_with_change(original, tmp_path / "c.dcm", SeriesDescription="edited by the provider")
    frames = extract_batch(_files(tmp_path), Lineage("b"))
    images = frames["images"]
    assert images.height == 3 and images["SOPInstanceUID"].n_unique() == 1
    errors = frames["ingest_errors"]
    assert errors.select("source_key", "reason").rows() == [("c.dcm", "duplicate_conflict")]
    conflict = errors.row(0, named=True)
    assert conflict["SOPInstanceUID"] == images["SOPInstanceUID"][0]
    assert conflict["content_hash"] == images.filter(pl.col("source_key") == "c.dcm")["content_hash"][0]


def test_process_pool_gives_the_same_rows_as_one_process(pydicom_dir):
    import multiprocessing
    from concurrent.futures import ProcessPoolExecutor

    files = _files(pydicom_dir)
    lineage = Lineage("b")
    serial = extract_batch(files, lineage)
    with ProcessPoolExecutor(2, mp_context=multiprocessing.get_context("forkserver")) as pool:
        parallel = extract_batch(list(reversed(files)), lineage, executor=pool, parts=2)
    for name in serial.frames:
        assert serial[name].equals(parallel[name]), name


def test_deep_nesting_in_a_file_is_rejected_not_crashing(tmp_path):
    from pydicom.dataset import Dataset
    from pydicom.sequence import Sequence

    ds = pydicom.dcmread(Path(pydicom.data.__file__).parent / "test_files" / "CT_small.dcm")
    inner = ds
    for _ in range(100):  # real files nest < 10 levels
        item = Dataset()
        item.CodeValue = "X"
        inner.ContentSequence = Sequence([item])
        inner = item
    ds.save_as(tmp_path / "deep.dcm")
    frames = extract_batch(_files(tmp_path), Lineage("b"))
    assert frames["ingest_errors"]["reason"].to_list() == ["too_deep"]


def test_every_row_of_images_has_its_header(pydicom_dir):
    frames = extract_batch(_files(pydicom_dir), Lineage("b"))
    assert frames["instances_header"]["source_key"].to_list() == frames["images"]["source_key"].to_list()
    for text in frames["instances_header"]["header_json"]:
        json.loads(text)


def test_an_ingest_error_row_with_its_batch_lineage_fills_every_column_of_the_table():
    from tasks.dicom.entities import INGEST_ERRORS, LINEAGE_SCHEMA, ingest_error

    row = ingest_error("a.zip!/m", Reason.NESTED_ARCHIVE, "a ZIP in a ZIP", stage="archive", file_size=3)
    assert set(row) | set(LINEAGE_SCHEMA) == set(INGEST_ERRORS.schema)
    assert row["reason"] == "nested_archive" and row["file_size"] == 3 and row["quarantine_key"] is None
