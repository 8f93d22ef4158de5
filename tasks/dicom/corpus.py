"""Synthetic corpora for benchmarks and scale tests, deterministic by seed.

``generate_corpus`` writes N files laid out as patients x studies x series x images with
realistic headers (tasks/dicom/synthetic.py) and pixel data whose size and encoding follow a
profile:

- ``small``: 64x64 images, header-dominated files (thousands per second), the worst case
  for per-file orchestration overhead;
- ``realistic``: CT 512x512 16-bit signed (some JPEG-LS lossless, some RLE), MR 256x256,
  CR 1024x1024 MONOCHROME1, US RGB, and multi-frame MR;
- ``ct``: CT slices only, 512x512 16-bit signed, native (a scanner's series as it arrives).
"""

from __future__ import annotations

import random
from dataclasses import dataclass, replace
from pathlib import Path

import numpy as np
from pydicom.uid import JPEGLSLossless, RLELossless

from tasks.dicom.synthetic import MODALITIES, Modality, make_instance

#: (weight, modality code, rows, columns, frames, transfer syntax or None for native)
PROFILES: dict[str, list[tuple[float, str, int, int, int, str | None]]] = {
    "small": [
        (0.5, "CT", 64, 64, 1, None),
        (0.3, "MR", 64, 64, 1, None),
        (0.1, "CR", 64, 64, 1, None),
        (0.1, "US", 48, 64, 1, None),
    ],
    "realistic": [
        (0.45, "CT", 512, 512, 1, None),
        (0.10, "CT", 512, 512, 1, JPEGLSLossless),
        (0.05, "CT", 512, 512, 1, RLELossless),
        (0.20, "MR", 256, 256, 1, None),
        (0.05, "MR", 256, 256, 8, None),
        (0.05, "CR", 1024, 1024, 1, None),
        (0.10, "US", 480, 640, 1, None),
    ],
    "ct": [(1.0, "CT", 512, 512, 1, None)],
}


@dataclass(frozen=True)
class CorpusInfo:
    """What was written."""

    root: Path
    files: int
    bytes: int


def _series_plan(profile: str, rng: random.Random) -> tuple[Modality, int, str | None]:
    weights = [p[0] for p in PROFILES[profile]]
    _, code, rows, columns, frames, syntax = rng.choices(PROFILES[profile], weights=weights)[0]
    return replace(MODALITIES[code], rows=rows, columns=columns), frames, syntax


def generate_corpus(
    out_dir: Path,
    *,
    files: int,
    profile: str = "small",
    seed: int = 0,
    images_per_series: int = 40,
    series_per_study: int = 3,
    studies_per_patient: int = 2,
) -> CorpusInfo:
    """Write ``files`` synthetic DICOM files under ``out_dir``.

    Parameters
    ----------
    out_dir : Path
        Created if missing; files go to ``<patient>/<study>/<series>/IMnnnn``.
    files : int
        Number of files.
    profile : {"small", "realistic", "ct"}
        Image sizes and encodings, see the module docstring.
    seed : int
        Same seed, same bytes.
    images_per_series, series_per_study, studies_per_patient : int
        Shape of the hierarchy.

    Returns
    -------
    CorpusInfo

    Raises
    ------
    ValueError
        If ``profile`` is unknown or ``files`` is negative.
    """
    if profile not in PROFILES:
        msg = f"unknown corpus profile {profile!r}; use one of {sorted(PROFILES)}"
        raise ValueError(msg)
    if files < 0:
        msg = f"files must be >= 0, got {files}"
        raise ValueError(msg)
    rng = random.Random(seed)
    nprng = np.random.default_rng(seed)
    written = size = 0
    patient_no = 0
    while written < files:
        patient = {
            "name": f"Bench^Patient{patient_no}",
            "id": f"BENCH{seed:02d}{patient_no:06d}",
            "birth": f"19{rng.randrange(30, 99)}0{rng.randrange(1, 9)}1{rng.randrange(0, 9)}",
            "sex": "FM"[patient_no % 2],
            "age": f"0{rng.randrange(20, 90)}Y",
        }
        for s in range(studies_per_patient):
            study = {
                "uid": f"2.25.{rng.getrandbits(120)}",
                "id": f"S{s + 1}",
                "date": f"2024{rng.randrange(1, 13):02d}{rng.randrange(1, 29):02d}",
                "time": f"{rng.randrange(7, 19):02d}{rng.randrange(60):02d}00",
                "accession": f"BA{seed:02d}{patient_no:06d}{s}",
                "description": f"Benchmark study {s + 1}",
            }
            for r in range(series_per_study):
                mod, frames, syntax = _series_plan(profile, rng)
                series = {
                    "uid": f"2.25.{rng.getrandbits(120)}",
                    "frame_uid": f"2.25.{rng.getrandbits(120)}",
                    "number": r + 1,
                    "description": f"{mod.code} {mod.rows}x{mod.columns}",
                    "manufacturer": "ACME Medical",
                    "model": f"{mod.code}-9000",
                    "serial": f"SN{patient_no % 7:04d}",
                    "station": f"ST{patient_no % 5}",
                    "body_part": "CHEST",
                }
                folder = out_dir / patient["id"] / study["id"] / f"SE{r + 1}"
                folder.mkdir(parents=True, exist_ok=True)
                for i in range(images_per_series):
                    if written >= files:
                        break
                    ds = make_instance(
                        patient=patient, study=study, series=series, mod=mod, index=i, rng=rng, nprng=nprng
                    )
                    if frames > 1:
                        ds.NumberOfFrames = frames
                        ds.PixelData = ds.PixelData * frames
                    if syntax is not None:
                        ds.compress(syntax)
                    path = folder / f"IM{i + 1:04d}"
                    ds.save_as(path, enforce_file_format=True)
                    written += 1
                    size += path.stat().st_size
                if written >= files:
                    break
            if written >= files:
                break
        patient_no += 1
    return CorpusInfo(out_dir, written, size)
