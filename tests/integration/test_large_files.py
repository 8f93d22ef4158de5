"""A file of 3 GB is extracted and previewed in bounded memory (mapped, streamed, one frame).

Not in the unit tier: it runs its own Python process (its peak RSS is the measure) over a
3 GiB sparse file, ~20 s of mostly kernel time. The mapped and read paths' equality on small
files stays a unit test (tests/unit/dicom/test_large_files.py).
"""

from __future__ import annotations

import io
import json
import struct
import subprocess
import sys
from pathlib import Path

import pytest
from pydicom.dataset import Dataset, FileMetaDataset
from pydicom.uid import ExplicitVRLittleEndian, generate_uid

ROOT = Path(__file__).resolve().parents[2]
pytestmark = pytest.mark.integration


def _sparse_multiframe(path: Path, *, frames: int, rows: int = 1024, cols: int = 1024) -> int:
    """A native 16-bit multi-frame file of ``frames`` frames; the pixel bytes are a hole (no disk used)."""
    ds = Dataset()
    ds.file_meta = FileMetaDataset()
    ds.file_meta.TransferSyntaxUID = ExplicitVRLittleEndian
    ds.file_meta.MediaStorageSOPClassUID = "1.2.840.10008.5.1.4.1.1.4"
    ds.file_meta.MediaStorageSOPInstanceUID = uid = generate_uid()
    ds.SOPClassUID, ds.SOPInstanceUID = "1.2.840.10008.5.1.4.1.1.4", uid
    ds.StudyInstanceUID, ds.SeriesInstanceUID, ds.PatientID, ds.Modality = generate_uid(), generate_uid(), "P", "MR"
    ds.Rows, ds.Columns, ds.NumberOfFrames = rows, cols, frames
    ds.SamplesPerPixel, ds.PhotometricInterpretation = 1, "MONOCHROME2"
    ds.BitsAllocated, ds.BitsStored, ds.HighBit, ds.PixelRepresentation = 16, 16, 15, 0
    ds.WindowCenter, ds.WindowWidth = 100, 200
    ds.PixelData = b"\0\0\0\0"  # written last: its 4-byte length sits just before these 4 bytes
    buf = io.BytesIO()
    ds.save_as(buf, enforce_file_format=True)
    head = bytearray(buf.getvalue()[:-4])
    length = rows * cols * 2 * frames
    head[-4:] = struct.pack("<I", length)
    with path.open("wb") as fh:
        fh.write(head)
        fh.truncate(len(head) + length)
    return len(head) + length


@pytest.mark.skipif(sys.platform != "linux", reason="needs a filesystem with sparse files and /proc")
def test_a_3_gb_file_is_extracted_and_previewed_in_bounded_memory(tmp_path):
    big = tmp_path / "big.dcm"
    size = _sparse_multiframe(big, frames=1440)  # 1440 x 2 MiB = 3 GiB
    script = f"""
import json, re
from pathlib import Path
from tasks.dicom.extract import Lineage, PreviewJob, SourceFile, extract_batch
frames = extract_batch([SourceFile(Path({str(big)!r}), "big.dcm", "e")], Lineage("b"),
                       previews=PreviewJob(Path({str(tmp_path / 'lake')!r}), "s"))
image = frames["images"].row(0, named=True)
print(json.dumps({{
    "errors": frames["ingest_errors"].height,
    "previews": frames["previews"].select("preview_key", "frame_index", "preview_width").to_dicts(),
    "file_size": image["file_size"], "hash": image["content_hash"], "pixels": image["has_pixel_data"],
    "header_bytes": frames["instances_header"].row(0, named=True)["header_json"].__len__(),
    # VmHWM, this process's own peak: ru_maxrss would also count the pytest process that
    # started it (Linux carries the peak over from the forked parent through exec)
    "peak_rss_mb": int(re.search(r"VmHWM:\\s+(\\d+) kB", Path("/proc/self/status").read_text())[1]) / 1024,
}}))
"""
    done = subprocess.run([sys.executable, "-c", script], cwd=ROOT, capture_output=True, text=True, timeout=600, check=False)
    assert done.returncode == 0, done.stderr[-3000:]
    out = json.loads(done.stdout.strip().splitlines()[-1])
    assert out["errors"] == 0 and out["pixels"]
    assert out["file_size"] == size == big.stat().st_size
    assert len(out["hash"]) == 64
    assert out["header_bytes"] < 10_000  # the pixel data is described, never inlined
    [preview] = out["previews"]
    assert preview["frame_index"] == 720 and preview["preview_width"] == 512  # middle frame, downscaled
    assert (tmp_path / "lake" / preview["preview_key"]).stat().st_size > 0
    # the file is 3 GiB; the process never holds more than a frame or two of it
    assert out["peak_rss_mb"] < 600, out["peak_rss_mb"]
