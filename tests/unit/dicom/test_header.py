"""The direct PS3.18 F decoder against pydicom's own ``to_json_dict``, and its guards."""

from __future__ import annotations

import base64
import io
import json
import struct
from pathlib import Path

import pydicom
import pytest
from pydicom.dataset import Dataset, FileMetaDataset
from pydicom.sequence import Sequence
from pydicom.uid import ExplicitVRLittleEndian, ImplicitVRLittleEndian, generate_uid

from tasks.dicom.header import MAX_DEPTH, decode_dataset
from tasks.errors import FileRejected, Reason
from tasks.dicom.extract import quiet_pydicom

DATA = Path(pydicom.data.__file__).parent
NO_BULK = 10**9


def _normalise(body: dict) -> dict:
    """pydicom writes ``"Value": []`` for an empty sequence; PS3.18 F.2.5 omits Value."""
    out = {}
    for tag, elem in body.items():
        elem = dict(elem)
        if elem.get("vr") == "SQ":
            items = [_normalise(item) for item in elem.get("Value", [])]
            elem.pop("Value", None)
            if items:
                elem["Value"] = items
        out[tag] = elem
    return json.loads(json.dumps(out))  # UID, DSfloat... -> plain JSON types


def _readable(paths):
    with quiet_pydicom():
        for path in paths:
            try:
                ds = pydicom.dcmread(path)
                expected = ds.to_json_dict(bulk_data_threshold=NO_BULK)
            except Exception:
                continue  # not a file pydicom can turn into JSON: nothing to compare
            if path.name in {"rtplan_truncated.dcm", "MR_truncated.dcm"}:
                continue
            yield path, expected


def test_matches_pydicom_to_json_dict_on_every_bundled_file():
    paths = sorted(p for p in (DATA / "test_files").rglob("*") if p.is_file())
    paths += sorted(p for p in (DATA / "charset_files").rglob("*") if p.is_file())
    compared = 0
    with quiet_pydicom():
        for path, expected in _readable(paths):
            ours = decode_dataset(pydicom.dcmread(path), bulk_threshold=NO_BULK)
            assert _normalise(ours) == _normalise(expected), path.name
            compared += 1
    assert compared > 150


def test_binary_values_above_the_threshold_are_dropped_with_tag_and_length():
    ds = pydicom.dcmread(DATA / "test_files" / "CT_small.dcm")
    body = decode_dataset(ds, bulk_threshold=1024)
    pixel = body["7FE00010"]
    assert "InlineBinary" not in pixel
    assert pixel["BulkDataURI"] == f"urn:dicom-etl:dropped:7FE00010:{len(ds.PixelData)}"
    small = decode_dataset(_roundtrip(_minimal(ExplicitVRLittleEndian)), bulk_threshold=4)
    assert small["00091001"]["InlineBinary"] == base64.b64encode(b"\x01\x02\x03\x04").decode()


def _minimal(ts: str, **extra) -> Dataset:
    ds = Dataset()
    ds.SOPClassUID = "1.2.840.10008.5.1.4.1.1.7"
    ds.SOPInstanceUID = generate_uid()
    ds.StudyInstanceUID = generate_uid()
    ds.SeriesInstanceUID = generate_uid()
    ds.PatientName = "Doe^Jane"
    block = ds.private_block(0x0009, "DICOM ETL TEST", create=True)
    block.add_new(0x01, "OB", b"\x01\x02\x03\x04")
    for k, v in extra.items():
        setattr(ds, k, v)
    ds.file_meta = FileMetaDataset()
    ds.file_meta.TransferSyntaxUID = ts
    ds.file_meta.MediaStorageSOPClassUID = ds.SOPClassUID
    ds.file_meta.MediaStorageSOPInstanceUID = ds.SOPInstanceUID
    return ds


def _roundtrip(ds: Dataset) -> Dataset:
    buf = io.BytesIO()
    ds.save_as(buf, enforce_file_format=True)
    return pydicom.dcmread(io.BytesIO(buf.getvalue()))


@pytest.mark.parametrize("ts", [ExplicitVRLittleEndian, ImplicitVRLittleEndian])
def test_values_keep_their_meaning(ts):
    ds = _minimal(
        ts,
        ImageType=["ORIGINAL", "PRIMARY", "AXIAL"],
        PixelSpacing=["0.5", "0.25"],
        InstanceNumber="7",
        Rows=512,
        RescaleSlope="1.0",
        StudyDate="20240131",
        ReferringPhysicianName="Smith^John^^Dr=スミス^ジョン",
    )
    ds.SpecificCharacterSet = "ISO_IR 192"
    body = decode_dataset(_roundtrip(ds), bulk_threshold=NO_BULK)
    assert body["00080008"] == {"vr": "CS", "Value": ["ORIGINAL", "PRIMARY", "AXIAL"]}
    assert body["00280030"] == {"vr": "DS", "Value": [0.5, 0.25]}
    assert body["00200013"] == {"vr": "IS", "Value": [7]}
    assert body["00280010"] == {"vr": "US", "Value": [512]}
    assert body["00080020"] == {"vr": "DA", "Value": ["20240131"]}
    assert body["00080090"]["Value"] == [{"Alphabetic": "Smith^John^^Dr", "Ideographic": "スミス^ジョン"}]
    assert body["00091001"]["vr"] in {"OB", "UN"}  # private: kept, typed by pydicom's rules


def _nested(depth: int) -> Dataset:
    ds = _minimal(ExplicitVRLittleEndian)
    inner = ds
    for _ in range(depth):
        item = Dataset()
        item.CodeValue = "X"
        inner.ContentSequence = Sequence([item])
        inner = item
    return ds


def test_absurdly_deep_nesting_is_rejected():
    ok = decode_dataset(_roundtrip(_nested(5)), bulk_threshold=NO_BULK)
    assert "0040A730" in ok
    with pytest.raises(FileRejected) as info:
        decode_dataset(_roundtrip(_nested(MAX_DEPTH + 3)), bulk_threshold=NO_BULK)
    assert info.value.reason == Reason.TOO_DEEP


def test_a_huge_declared_length_is_truncation_not_a_crash():
    buf = io.BytesIO()
    _minimal(ExplicitVRLittleEndian).save_as(buf, enforce_file_format=True)
    # a long text element that claims ~4 GB: explicit VR LE, (0010,4000) LT, 2-byte length
    # cannot say that, so use UT (4-byte length)
    data = buf.getvalue() + struct.pack("<HH2sHI", 0x0010, 0x4000, b"UT", 0, 0xFFFFFFF0) + b"abc"
    with quiet_pydicom():
        ds = pydicom.dcmread(io.BytesIO(data))
        with pytest.raises(FileRejected) as info:
            decode_dataset(ds, bulk_threshold=NO_BULK)
    assert info.value.reason == Reason.TRUNCATED


def test_the_lean_reader_gives_what_dcmread_gives(synthetic_dir):
    """Files split by parse_simple extract to exactly the rows and JSON dcmread's dataset gives."""
    from tasks.dicom.parse import parse_simple
    from tasks.dicom.instance import extract_dataset

    def extract(ds):
        try:
            return extract_dataset(ds)
        except FileRejected as exc:
            return exc.reason

    paths = sorted(p for p in (DATA / "test_files").rglob("*") if p.is_file())
    paths += sorted(p for p in (DATA / "charset_files").rglob("*") if p.is_file())
    paths += sorted(p for p in synthetic_dir.rglob("*") if p.is_file())
    simple = 0
    with quiet_pydicom():
        for path in paths:
            data = path.read_bytes()
            ds = parse_simple(data)
            if ds is None:
                continue
            simple += 1
            assert extract(ds) == extract(pydicom.dcmread(io.BytesIO(data))), path.name
    assert simple > 100
