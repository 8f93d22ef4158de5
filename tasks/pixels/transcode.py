"""Lossless archive copies of the originals: JPEG-LS (else JPEG 2000) lossless, verified.

Each image with pixel data is re-encoded losslessly and written to the lake's archive
zone as ``archive/<xx>/<image pseudonym>.dcm`` (no PHI in the name; the file itself is
the original instance and holds PHI like ``raw/``). The archive copy is decoded back and
compared with the original's decoded pixels; it is kept only if they are identical.

Originals that are already lossy (JPEG baseline/extended, near-lossless JPEG-LS, lossy
JPEG 2000) are not transcoded: a lossless copy of a lossy image saves nothing and looks
like an original it is not. Every image gets a row in the ``archives`` raw table (status
``archived``, ``skipped_lossy``, ``already_lossless`` or ``unsupported``, original and archive bytes), so the
storage saved is a sum over that table.
"""

from __future__ import annotations

import copy
import io
from collections.abc import Sequence
from concurrent.futures import Executor
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pydicom
from pydicom.dataset import Dataset
from pydicom.pixels import pixel_array
from pydicom.uid import (
    UID,
    DeflatedExplicitVRLittleEndian,
    ExplicitVRBigEndian,
    ExplicitVRLittleEndian,
    ImplicitVRLittleEndian,
    JPEG2000Lossless,
    JPEGLossless,
    JPEGLosslessSV1,
    JPEGLSLossless,
    RLELossless,
)

from tasks.deid import pseudonym
from tasks.dicom.extract import quiet_pydicom
from tasks.lake.files import writing
from tasks.lake.storage import ARCHIVE_ZONE

#: Transfer syntaxes whose decoded pixels are the original values.
LOSSLESS_SOURCES = frozenset(
    {
        ImplicitVRLittleEndian,
        ExplicitVRLittleEndian,
        ExplicitVRBigEndian,
        DeflatedExplicitVRLittleEndian,
        RLELossless,
        JPEGLossless,
        JPEGLosslessSV1,
        JPEGLSLossless,
        JPEG2000Lossless,
        UID("1.2.840.10008.1.2.4.201"),  # HTJ2K lossless
        UID("1.2.840.10008.1.2.4.202"),  # HTJ2K lossless RPCL
    }
)

@dataclass(frozen=True)
class Archived:
    """A verified lossless copy of one instance."""

    data: bytes
    transfer_syntax_uid: str


def archive_key(image_id: str) -> str:
    """Lake key of an archive copy; ``image_id`` is a pseudonym, so the name carries no PHI."""
    return f"{ARCHIVE_ZONE}/{image_id[:2]}/{image_id}.dcm"


def _raw_array(ds: Dataset) -> np.ndarray:
    # raw: compare stored values, not a colour conversion of them
    return pixel_array(ds, raw=True)


def transcode_lossless(ds: Dataset, *, syntaxes: Sequence[str] = (JPEGLSLossless, JPEG2000Lossless)) -> Archived:
    """Re-encode an instance losslessly and prove it by decoding the result back.

    Parameters
    ----------
    ds : Dataset
        A full instance with pixel data in a lossless (or native) transfer syntax.
    syntaxes : sequence of UID
        Target transfer syntaxes, tried in order (JPEG-LS lossless, then JPEG 2000 lossless).

    Returns
    -------
    Archived

    Raises
    ------
    ValueError
        If no target syntax can encode these pixels (bit depth, samples, subsampled YBR)
        or a round trip differs from the original; the message says which and why.
    """
    with quiet_pydicom():
        original = _raw_array(ds)
        failures: list[str] = []
        for ts in syntaxes:
            work = copy.deepcopy(ds)  # compress() changes file_meta too: start each try afresh
            try:
                if work.file_meta.TransferSyntaxUID.is_compressed:
                    work.decompress(as_rgb=False, generate_instance_uid=False)
                work.compress(UID(ts), arr=original, generate_instance_uid=False)
                data = _to_bytes(work)
                back = _raw_array(pydicom.dcmread(io.BytesIO(data)))
            except Exception as exc:  # an encoder refusing these pixels: try the next syntax
                failures.append(f"{UID(ts).name}: {type(exc).__name__}: {exc}".splitlines()[0][:200])
                continue
            if back.shape == original.shape and np.array_equal(back, original):
                return Archived(data, str(ts))
            failures.append(f"{UID(ts).name}: decoded copy differs from the original")
    msg = "no lossless encoding reproduced the pixels exactly: " + "; ".join(failures)
    raise ValueError(msg)


def _to_bytes(ds: Dataset) -> bytes:
    buf = io.BytesIO()
    pydicom.dcmwrite(buf, ds, enforce_file_format=True, implicit_vr=False, little_endian=True)
    return buf.getvalue()


def archive_file(lake: Path, path: Path, key: str, sop_uid: str, image_id: str) -> dict:
    """Transcode one file into the archive zone; the ``archives`` row (lineage columns excluded).

    A top-level function of plain arguments, so a process pool can run it. Never raises
    for a bad file: the row's ``status`` says what happened and the original stays in raw.
    """
    row = {
        "SOPInstanceUID": sop_uid,
        "source_key": key,
        "archive_key": None,
        "status": "unsupported",
        "detail": None,
        "source_transfer_syntax_uid": None,
        "archive_transfer_syntax_uid": None,
        "original_bytes": path.stat().st_size if path.exists() else None,
        "archive_bytes": None,
    }
    try:
        with quiet_pydicom():
            ds = pydicom.dcmread(path, force=True)
        source_ts = UID(str(ds.file_meta.get("TransferSyntaxUID", ImplicitVRLittleEndian)))
        row["source_transfer_syntax_uid"] = str(source_ts)
        if source_ts not in LOSSLESS_SOURCES:
            row.update(status="skipped_lossy", detail=f"original is {source_ts.name}; kept as is")
            return row
        if source_ts in (JPEGLSLossless, JPEG2000Lossless):
            row.update(status="already_lossless", detail=f"original is {source_ts.name}; kept as is")
            return row
        archived = transcode_lossless(ds)
    except Exception as exc:
        row["detail"] = f"{type(exc).__name__}: {exc}"[:500]
        return row
    akey = archive_key(image_id)
    with writing(lake / akey) as tmp:
        tmp.write_bytes(archived.data)
    row.update(
        archive_key=akey,
        status="archived",
        archive_transfer_syntax_uid=archived.transfer_syntax_uid,
        archive_bytes=len(archived.data),
    )
    return row


def _archive_file_star(args: tuple) -> dict:
    return archive_file(*args)


def archive_batch(
    lake: Path,
    images: Sequence[tuple[Path, str, str]],
    *,
    secret: str,
    executor: Executor | None = None,
) -> list[dict]:
    """Transcode a batch of images into the archive zone.

    Parameters
    ----------
    lake : Path
    images : sequence of (path, source key, SOPInstanceUID)
    secret : str
        De-identification secret; the archive name is the image's pseudonym.
    executor : concurrent.futures.Executor, optional
        A process pool to spread the files over; in this process if None.

    Returns
    -------
    list of dict
        ``archives`` rows without lineage columns.
    """
    jobs = [(lake, Path(p), key, uid, pseudonym(uid, secret)) for p, key, uid in images]
    if executor is None or len(jobs) < 2:
        return [_archive_file_star(job) for job in jobs]
    return list(executor.map(_archive_file_star, jobs, chunksize=max(1, len(jobs) // 8)))


def storage_saved(rows: Sequence[dict]) -> tuple[int, int]:
    """Original and archive bytes over the archived rows: ``(original, archive)``."""
    done = [r for r in rows if r["status"] == "archived"]
    return sum(r["original_bytes"] or 0 for r in done), sum(r["archive_bytes"] or 0 for r in done)
