"""Synthetic DICOM studies made with pydicom, deterministic by seed.

Used by ``python -m flows demo``, the tests and the benchmarks: several patients,
studies, series and modalities with realistic headers and real pixel data. All names,
IDs and dates are invented.
"""

from __future__ import annotations

import random
import shutil
from dataclasses import dataclass
from datetime import date, timedelta
from pathlib import Path

import numpy as np
import pydicom.data
from pydicom.dataset import Dataset, FileMetaDataset
from pydicom.uid import (
    CTImageStorage,
    ComputedRadiographyImageStorage,
    ExplicitVRLittleEndian,
    MRImageStorage,
    PYDICOM_IMPLEMENTATION_UID,
    SecondaryCaptureImageStorage,
    UltrasoundImageStorage,
    generate_uid,
)

FAMILY = ["Doe", "Smith", "Garcia", "Müller", "Nguyen", "Okafor", "Kowalski", "Rossi", "Tanaka", "Haddad"]
GIVEN = ["Jane", "John", "Maria", "Lukas", "An", "Chidi", "Zofia", "Marco", "Yuki", "Layla"]


@dataclass(frozen=True)
class Modality:
    code: str
    sop_class: str
    rows: int
    columns: int
    bits: int
    signed: bool
    photometric: str
    window: tuple[float, float] | None
    rescale: tuple[float, float]  # slope, intercept


MODALITIES = {
    "CT": Modality("CT", CTImageStorage, 128, 128, 16, True, "MONOCHROME2", (40.0, 400.0), (1.0, -1024.0)),
    "MR": Modality("MR", MRImageStorage, 128, 128, 16, False, "MONOCHROME2", None, (1.0, 0.0)),
    "CR": Modality("CR", ComputedRadiographyImageStorage, 160, 128, 16, False, "MONOCHROME1", (2048.0, 4096.0), (1.0, 0.0)),
    "US": Modality("US", UltrasoundImageStorage, 96, 128, 8, False, "RGB", None, (1.0, 0.0)),
    "OT": Modality("OT", SecondaryCaptureImageStorage, 64, 64, 8, False, "MONOCHROME2", None, (1.0, 0.0)),
}


def _uid(rng: random.Random) -> str:
    # deterministic UIDs: same seed, same files
    return generate_uid(entropy_srcs=[str(rng.random())])


def _pixels(mod: Modality, rng: np.random.Generator, index: int) -> np.ndarray:
    yy, xx = np.mgrid[0 : mod.rows, 0 : mod.columns]
    cy, cx = mod.rows / 2, mod.columns / 2
    r = np.hypot(yy - cy, xx - cx) / max(mod.rows, mod.columns)
    if mod.photometric == "RGB":
        base = (255 * (1 - r)).clip(0, 255)
        img = np.stack([base, np.roll(base, index, axis=1), base[::-1]], axis=-1)
        return img.astype(np.uint8)
    if mod.bits == 8:
        return ((1 - r) * 200 + rng.integers(0, 30, r.shape)).clip(0, 255).astype(np.uint8)
    if mod.code == "CT":  # HU: air outside, soft tissue inside, a bright "bone" ring
        hu = np.where(r < 0.4, 40, -1000) + np.where((r > 0.3) & (r < 0.34), 900, 0)
        stored = hu - mod.rescale[1] + rng.integers(-20, 20, r.shape)
        return stored.astype(np.int16)
    return ((1 - r) * 3000 + rng.integers(0, 200, r.shape) + index * 10).clip(0, 4095).astype(np.uint16)


def make_instance(
    *,
    patient: dict,
    study: dict,
    series: dict,
    mod: Modality,
    index: int,
    rng: random.Random,
    nprng: np.random.Generator,
) -> Dataset:
    """One synthetic instance of a series, with pixel data."""
    ds = Dataset()
    ds.file_meta = FileMetaDataset()
    ds.file_meta.MediaStorageSOPClassUID = mod.sop_class
    sop_uid = _uid(rng)
    ds.file_meta.MediaStorageSOPInstanceUID = sop_uid
    ds.file_meta.TransferSyntaxUID = ExplicitVRLittleEndian
    ds.file_meta.ImplementationClassUID = PYDICOM_IMPLEMENTATION_UID
    ds.SpecificCharacterSet = "ISO_IR 192"
    ds.ImageType = ["ORIGINAL", "PRIMARY", "AXIAL" if mod.code == "CT" else "OTHER"]
    ds.SOPClassUID = mod.sop_class
    ds.SOPInstanceUID = sop_uid
    ds.StudyDate = study["date"]
    ds.SeriesDate = study["date"]
    ds.ContentDate = study["date"]
    ds.StudyTime = study["time"]
    ds.ContentTime = f"{study['time']}.{index:03d}"
    ds.AccessionNumber = study["accession"]
    ds.Modality = mod.code
    ds.Manufacturer = series["manufacturer"]
    ds.ManufacturerModelName = series["model"]
    ds.DeviceSerialNumber = series["serial"]
    ds.StationName = series["station"]
    ds.SoftwareVersions = "1.0"
    ds.InstitutionName = "Synthetic General Hospital"
    ds.InstitutionAddress = "1 Example Road, Springfield"
    ds.ReferringPhysicianName = "Welby^Marcus"
    ds.StudyDescription = study["description"]
    ds.SeriesDescription = series["description"]
    ds.OperatorsName = "Tech^Terry"
    ds.PatientName = patient["name"]
    ds.PatientID = patient["id"]
    ds.IssuerOfPatientID = "SYNTH"
    ds.PatientBirthDate = patient["birth"]
    ds.PatientSex = patient["sex"]
    ds.PatientAge = patient["age"]
    ds.BodyPartExamined = series["body_part"]
    ds.StudyInstanceUID = study["uid"]
    ds.SeriesInstanceUID = series["uid"]
    ds.StudyID = study["id"]
    ds.SeriesNumber = series["number"]
    ds.InstanceNumber = index + 1
    ds.FrameOfReferenceUID = series["frame_uid"]
    ds.ImagePositionPatient = [-100.0, -100.0, round(index * 2.5, 2)]
    ds.ImageOrientationPatient = [1, 0, 0, 0, 1, 0]
    ds.PixelSpacing = [0.7, 0.7]
    ds.SliceThickness = 2.5
    arr = _pixels(mod, nprng, index)
    ds.Rows, ds.Columns = arr.shape[0], arr.shape[1]
    ds.SamplesPerPixel = 3 if arr.ndim == 3 else 1
    ds.PhotometricInterpretation = mod.photometric
    if arr.ndim == 3:
        ds.PlanarConfiguration = 0
    ds.BitsAllocated = arr.dtype.itemsize * 8
    ds.BitsStored = 12 if mod.bits == 16 else 8
    if mod.code == "CT":
        ds.BitsStored = 16
    ds.HighBit = ds.BitsStored - 1
    ds.PixelRepresentation = 1 if arr.dtype.kind == "i" else 0
    if mod.photometric.startswith("MONOCHROME"):
        ds.RescaleSlope, ds.RescaleIntercept = mod.rescale
        ds.RescaleType = "HU" if mod.code == "CT" else "US"
    if mod.window:
        ds.WindowCenter, ds.WindowWidth = mod.window
    ds.PixelData = arr.tobytes()
    return ds


def generate_studies(
    out_dir: Path,
    *,
    patients: int = 4,
    studies_per_patient: int = 2,
    series_per_study: int = 2,
    images_per_series: int = 3,
    seed: int = 7,
) -> list[Path]:
    """Write a synthetic multi-patient set of DICOM files under ``out_dir``.

    Files are nested ``<patient>/<study>/<series>/<n>.dcm`` (some without the
    ``.dcm`` suffix, as providers send them). Modalities rotate through CT, MR, CR,
    US and OT.

    Returns
    -------
    list of Path
        The files written.
    """
    rng = random.Random(seed)
    nprng = np.random.default_rng(seed)
    codes = list(MODALITIES)
    written: list[Path] = []
    for p in range(patients):
        birth = date(1940, 1, 1) + timedelta(days=rng.randrange(0, 365 * 60))
        patient = {
            "name": f"{FAMILY[p % len(FAMILY)]}^{GIVEN[(p * 3) % len(GIVEN)]}",
            "id": f"PID{seed:02d}{p:05d}",
            "birth": birth.strftime("%Y%m%d"),
            "sex": "FM"[p % 2],
            "age": f"{2024 - birth.year:03d}Y",
        }
        for s in range(studies_per_patient):
            when = date(2024, 1, 1) + timedelta(days=rng.randrange(0, 365))
            study = {
                "uid": _uid(rng),
                "id": f"S{s + 1}",
                "date": when.strftime("%Y%m%d"),
                "time": f"{rng.randrange(7, 19):02d}{rng.randrange(60):02d}{rng.randrange(60):02d}",
                "accession": f"ACC{seed:02d}{p:04d}{s:02d}",
                "description": f"Synthetic study {s + 1}",
            }
            for r in range(series_per_study):
                mod = MODALITIES[codes[(p + s + r) % len(codes)]]
                series = {
                    "uid": _uid(rng),
                    "frame_uid": _uid(rng),
                    "number": r + 1,
                    "description": f"{mod.code} series {r + 1}",
                    "manufacturer": ["ACME Medical", "Imaging Corp"][r % 2],
                    "model": f"{mod.code}-{1000 + (p % 3)}",
                    "serial": f"SN{(p % 3):04d}{mod.code}",
                    "station": f"STATION{p % 3}",
                    "body_part": {"CT": "HEAD", "MR": "BRAIN", "CR": "CHEST", "US": "ABDOMEN"}.get(mod.code, ""),
                }
                folder = out_dir / patient["id"] / study["id"] / f"SE{r + 1}"
                folder.mkdir(parents=True, exist_ok=True)
                for i in range(images_per_series):
                    ds = make_instance(
                        patient=patient, study=study, series=series, mod=mod, index=i, rng=rng, nprng=nprng
                    )
                    name = f"IM{i + 1:04d}" + (".dcm" if i % 2 == 0 else "")
                    path = folder / name
                    ds.save_as(path, enforce_file_format=True)
                    written.append(path)
    return written


def copy_pydicom_test_files(out_dir: Path) -> list[Path]:
    """Copy pydicom's bundled test files (every odd kind of DICOM, and some non-DICOM)."""
    root = Path(pydicom.data.__file__).parent / "test_files"
    copied: list[Path] = []
    for src in sorted(root.rglob("*")):
        if src.is_file():
            dst = out_dir / src.relative_to(root)
            dst.parent.mkdir(parents=True, exist_ok=True)
            shutil.copy2(src, dst)
            copied.append(dst)
    return copied
