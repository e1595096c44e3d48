"""Seeded synthetic DICOM series for the self-test and tests: never patient data.

A 12-bit DX chest radiograph phantom and a small head-CT phantom, written as Part-10 files
with pydicom, so the real input loaders and models can be exercised on any machine.
"""

from __future__ import annotations

import datetime
from pathlib import Path
from typing import Any

import numpy as np


def synthetic_cxr(directory: Path, size: int = 640, seed: int = 6) -> Path:
    """A 12-bit DX PA chest radiograph phantom (lungs, mediastinum, ribs, noise)."""
    from pydicom.uid import generate_uid

    rng = np.random.default_rng(seed)
    yy, xx = np.mgrid[0:size, 0:size].astype(np.float64) / size
    img = np.full((size, size), 0.75)
    for cx in (0.32, 0.68):  # lungs: dark ellipses
        lung = ((xx - cx) / 0.17) ** 2 + ((yy - 0.5) / 0.32) ** 2 < 1
        img[lung] = 0.25
    img[(np.abs(xx - 0.5) < 0.07) & (yy > 0.2)] = 0.8  # mediastinum
    heart = ((xx - 0.55) / 0.14) ** 2 + ((yy - 0.66) / 0.12) ** 2 < 1
    img[heart] = 0.85
    for k in range(8):  # ribs
        band = np.abs(yy - (0.22 + 0.075 * k) - 0.08 * np.abs(xx - 0.5)) < 0.012
        img[band] += 0.15
    img += rng.normal(0, 0.02, img.shape)
    stored = np.clip(img * 4095, 0, 4095).astype(np.uint16)
    ds = base_dataset("DX", "1.2.840.10008.5.1.4.1.1.1.1", generate_uid(), generate_uid(), "SELFTEST^CXR")
    ds.BodyPartExamined = "CHEST"
    ds.ViewPosition = "PA"
    ds.PresentationIntentType = "FOR PRESENTATION"
    ds.ImageType = ["ORIGINAL", "PRIMARY"]
    set_pixels(ds, stored, bits_stored=12, signed=False)
    ds.PixelSpacing = ds.ImagerPixelSpacing = [0.5, 0.5]
    ds.WindowCenter, ds.WindowWidth = 2048, 4096
    return save_part10(ds, directory / "cxr.dcm")


def synthetic_head_ct(directory: Path, n_slices: int = 12, size: int = 64, seed: int = 6) -> list[Path]:
    """A small axial head phantom (skull, brain, a hyperdense blob) that fits one BLAST-CT tile.

    64 x 64 pixels of 1.25 mm and 12 slices 6 mm apart: about 80 x 80 x 67 mm, so the
    ensemble runs exactly one tile per member and the latency is the per-tile cost.
    """
    from pydicom.uid import generate_uid

    rng = np.random.default_rng(seed)
    study, series = generate_uid(), generate_uid()
    spacing, step = 1.25, 6.0
    yy, xx = np.mgrid[0:size, 0:size].astype(np.float64)
    c = (size - 1) / 2
    paths: list[Path] = []
    for k in range(n_slices):
        z = (k - (n_slices - 1) / 2) / (n_slices / 2)
        scale = np.sqrt(max(0.2, 1 - 0.6 * z * z))
        r = np.hypot((xx - c) / (0.46 * size * scale), (yy - c) / (0.48 * size * scale))
        hu = np.full((size, size), -1000.0)
        hu[r < 1.0] = 1000.0           # skull
        hu[r < 0.88] = 35.0            # brain
        blob = np.hypot(xx - c - 8, yy - c + 6) < 6 + 2 * (1 - abs(z))
        hu[blob & (r < 0.88)] = 70.0   # acute-blood density
        hu += rng.normal(0, 4, hu.shape)
        ds = base_dataset("CT", "1.2.840.10008.5.1.4.1.1.2", study, series, "SELFTEST^HEAD")
        ds.BodyPartExamined = "HEAD"
        ds.ImageType = ["ORIGINAL", "PRIMARY", "AXIAL"]
        ds.InstanceNumber = k + 1
        ds.ImagePositionPatient = [-c * spacing, -c * spacing, k * step]
        ds.ImageOrientationPatient = [1.0, 0.0, 0.0, 0.0, 1.0, 0.0]
        ds.PixelSpacing = [spacing, spacing]
        ds.SliceThickness = step
        set_pixels(ds, np.clip(hu + 1024, -32768, 32767).astype(np.int16), bits_stored=16, signed=True)
        ds.RescaleIntercept, ds.RescaleSlope = -1024, 1
        ds.WindowCenter, ds.WindowWidth = 40, 80
        paths.append(save_part10(ds, directory / "headct" / f"ct{k + 1:03d}.dcm"))
    return paths


def base_dataset(modality: str, sop_class: str, study: str | None, series: str | None, name: str,
                 patient_id: str = "SELFTEST", description: str = "FirstLook self-test (synthetic)",
                 manufacturer: str = "FirstLook self-test") -> Any:
    """Patient, study, series and SOP modules of a synthetic instance (new UIDs where None)."""
    from pydicom.dataset import Dataset
    from pydicom.uid import generate_uid

    now = datetime.datetime.now()
    ds = Dataset()
    ds.SOPClassUID = sop_class
    ds.SOPInstanceUID = generate_uid()
    ds.StudyInstanceUID, ds.SeriesInstanceUID = study or generate_uid(), series or generate_uid()
    ds.PatientID, ds.PatientName = patient_id, name
    ds.StudyDate, ds.StudyTime = now.strftime("%Y%m%d"), now.strftime("%H%M%S")
    ds.Modality = modality
    ds.SeriesNumber, ds.InstanceNumber = 1, 1
    ds.StudyDescription = ds.SeriesDescription = description
    ds.Manufacturer = manufacturer
    return ds


def set_pixels(ds: Any, array: np.ndarray, bits_stored: int, signed: bool,
               photometric: str = "MONOCHROME2") -> None:
    """Single-frame greyscale pixel module, 16 bits allocated."""
    ds.SamplesPerPixel = 1
    ds.PhotometricInterpretation = photometric
    ds.Rows, ds.Columns = array.shape
    ds.BitsAllocated, ds.BitsStored, ds.HighBit = 16, bits_stored, bits_stored - 1
    ds.PixelRepresentation = 1 if signed else 0
    ds.PixelData = np.ascontiguousarray(array).tobytes()


def with_file_meta(ds: Any) -> Any:
    """File Meta for explicit VR little endian, the encoding the dataset is then written in."""
    from pydicom.dataset import FileMetaDataset
    from pydicom.uid import ExplicitVRLittleEndian

    meta = FileMetaDataset()
    meta.MediaStorageSOPClassUID = ds.SOPClassUID
    meta.MediaStorageSOPInstanceUID = ds.SOPInstanceUID
    meta.TransferSyntaxUID = ExplicitVRLittleEndian
    ds.file_meta = meta
    ds.set_original_encoding(False, True)
    return ds


def save_part10(ds: Any, path: Path) -> Path:
    """Write as a Part 10 file (File Meta added when missing)."""
    if not hasattr(ds, "file_meta") or "TransferSyntaxUID" not in ds.file_meta:
        with_file_meta(ds)
    path.parent.mkdir(parents=True, exist_ok=True)
    ds.save_as(path, enforce_file_format=True)
    return path
