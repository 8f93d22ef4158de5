"""Reference implementations the end-to-end benchmark compares the pipeline against.

- ``naive_reference``: written the way the Dagster pipeline this project replaces did it:
  a full ``dcmread`` per file, one small DataFrame per entity per file, concatenated at the
  end, then Parquet, then previews one by one (scaled by the maximum, as it did).
- ``bare_loop``: the practical single-core floor: ``dcmread`` + a dict per file + window +
  Pillow JPEG, nothing else (no tables, no lineage, no error accounting).
"""

from __future__ import annotations

import io
from collections.abc import Sequence
from pathlib import Path

import numpy as np
import polars as pl
import pydicom
from PIL import Image

from tasks.dicom.entities import DEVICES, IMAGES, PATIENTS, SERIES, STUDIES
from tasks.dicom.extract import quiet_pydicom
from tasks.pixels.preview import robust_to_uint8, window_to_uint8

ENTITIES = (PATIENTS, STUDIES, SERIES, DEVICES, IMAGES)


def _text(value: object) -> str | None:
    return None if value is None else str(value)


def naive_reference(files: Sequence[Path], out_dir: Path) -> int:
    """Per-file DataFrames, concatenated, then Parquet, then previews one by one.

    Returns
    -------
    int
        Files turned into rows.
    """
    frames: dict[str, list[pl.DataFrame]] = {e.name: [] for e in ENTITIES}
    done = 0
    with quiet_pydicom():
        for path in files:
            try:
                ds = pydicom.dcmread(path)
            except Exception:  # the reference skips what it cannot read
                continue
            for entity in ENTITIES:
                row = {kw: _text(ds.get(kw)) for kw in entity.keywords}
                row["source_key"] = str(path)
                frames[entity.name].append(pl.DataFrame([row]))
            done += 1
        out_dir.mkdir(parents=True, exist_ok=True)
        for name, parts in frames.items():
            if parts:
                pl.concat(parts, how="diagonal_relaxed").write_parquet(out_dir / f"{name}.parquet")
        for path in files:
            try:
                ds = pydicom.dcmread(path)
                arr = ds.pixel_array.astype(np.float64)
                if ds.get("NumberOfFrames") and int(ds.NumberOfFrames) > 1:
                    arr = arr[0]
                img = (arr / max(arr.max(), 1) * 255).astype(np.uint8)
                Image.fromarray(img).save(out_dir / f"{path.name}.jpg", quality=85)
            except Exception:
                continue
    return done


def bare_loop(files: Sequence[Path], out_dir: Path) -> int:
    """The floor: read, a dict of a few values, window, JPEG. Single core, no tables."""
    out_dir.mkdir(parents=True, exist_ok=True)
    done = 0
    with quiet_pydicom():
        for path in files:
            try:
                ds = pydicom.dcmread(path)
                row = {kw: ds.get(kw) for kw in IMAGES.keywords}
                arr = ds.pixel_array
                if int(ds.get("NumberOfFrames") or 1) > 1:
                    arr = arr[len(arr) // 2]
                if arr.ndim == 3:
                    img = arr.astype(np.uint8)
                else:
                    values = arr * float(ds.get("RescaleSlope", 1)) + float(ds.get("RescaleIntercept", 0))
                    if row["WindowCenter"] is not None and row["WindowWidth"] is not None:
                        c, w = ds.WindowCenter, ds.WindowWidth
                        c = float(c[0] if isinstance(c, pydicom.multival.MultiValue) else c)
                        w = float(w[0] if isinstance(w, pydicom.multival.MultiValue) else w)
                        img = window_to_uint8(values, c, w)
                    else:
                        img = robust_to_uint8(values)
                buf = io.BytesIO()
                Image.fromarray(img).save(buf, format="JPEG", quality=85)
                (out_dir / f"{done}.jpg").write_bytes(buf.getvalue())
                done += 1
            except Exception:
                continue
    return done
