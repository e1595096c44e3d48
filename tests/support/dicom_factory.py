"""Real DICOM test instances made from the shared NIH radiographs (and small synthetic CTs).

The PNGs are 8-bit; we spread them over 12 stored bits and write DX or CR objects with
MONOCHROME1 or MONOCHROME2 so the decode path (Modality LUT, VOI, inversion) is exercised.
"""

from __future__ import annotations

import io
import math
from pathlib import Path

import numpy as np
import pydicom
from PIL import Image
from pydicom.dataset import Dataset
from pydicom.filewriter import write_dataset
from pydicom.uid import (
    UID,
    ExplicitVRLittleEndian,
    ImplicitVRLittleEndian,
    JPEG2000Lossless,
    RLELossless,
    generate_uid,
)

from app.core.synthetic_dicom import base_dataset, set_pixels, with_file_meta

DX_FOR_PRESENTATION = UID("1.2.840.10008.5.1.4.1.1.1.1")
CR_IMAGE = UID("1.2.840.10008.5.1.4.1.1.1")
CT_IMAGE = UID("1.2.840.10008.5.1.4.1.1.2")
MR_IMAGE = UID("1.2.840.10008.5.1.4.1.1.4")


def png_to_12bit(png_path: Path, photometric: str = "MONOCHROME2", bits_stored: int = 12) -> np.ndarray:
    """Grey PNG (L or RGBA) -> uint16 stored values; MONOCHROME1 stores the inverted image."""
    grey = np.asarray(Image.open(png_path).convert("L"), dtype=np.float64)
    top = (1 << bits_stored) - 1
    stored = np.round(grey * top / 255.0).astype(np.uint16)
    if photometric == "MONOCHROME1":
        stored = (top - stored).astype(np.uint16)
    return stored


def _base(modality: str, sop_class: UID, study_uid: str | None, series_uid: str | None,
          patient_id: str, patient_name: str) -> Dataset:
    ds = base_dataset(modality, sop_class, study_uid, series_uid, patient_name, patient_id=patient_id,
                      manufacturer="FirstLook test factory")
    ds.PatientBirthDate = "19600101"
    ds.PatientSex = "O"
    ds.AccessionNumber = "ACC" + ds.SOPInstanceUID[-6:]
    ds.StudyID = "1"
    return ds


def make_cxr_dataset(
    png_path: Path,
    modality: str = "DX",
    photometric: str = "MONOCHROME2",
    bits_stored: int = 12,
    view: str | None = "PA",
    body_part: str | None = "CHEST",
    study_uid: str | None = None,
    series_uid: str | None = None,
    patient_id: str | None = None,
    patient_name: str = "TEST^CHEST",
    transfer_syntax: UID = ExplicitVRLittleEndian,
    window: bool = True,
) -> Dataset:
    """A DX (for presentation) or CR chest radiograph carrying the PNG's pixels."""
    sop_class = DX_FOR_PRESENTATION if modality == "DX" else CR_IMAGE
    ds = _base(modality, sop_class, study_uid, series_uid, patient_id or Path(png_path).stem.split("_")[0],
               patient_name)
    pixels = png_to_12bit(Path(png_path), photometric, bits_stored)
    ds.StudyDescription = "CHEST PA" if view != "LL" else "CHEST LAT"
    ds.SeriesDescription = f"{modality} chest"
    if body_part:
        ds.BodyPartExamined = body_part
    if view:
        ds.ViewPosition = view
    ds.ImageType = ["ORIGINAL", "PRIMARY"]
    set_pixels(ds, pixels, bits_stored, signed=False, photometric=photometric)
    ds.PixelSpacing = [0.4, 0.4]
    ds.ImagerPixelSpacing = [0.4, 0.4]
    ds.RescaleIntercept = 0
    ds.RescaleSlope = 1
    ds.RescaleType = "US"
    if modality == "DX":
        ds.PresentationIntentType = "FOR PRESENTATION"
    if window:
        top = (1 << bits_stored) - 1
        ds.WindowCenter = top / 2
        ds.WindowWidth = top + 1
    return _finish(ds, transfer_syntax)


def make_ct_slice(
    pixels_hu: np.ndarray,
    position: tuple[float, float, float],
    orientation: tuple[float, ...] = (1, 0, 0, 0, 1, 0),
    spacing: tuple[float, float] = (1.0, 1.0),
    thickness: float = 5.0,
    instance: int = 1,
    study_uid: str | None = None,
    series_uid: str | None = None,
    modality: str = "CT",
    body_part: str = "HEAD",
    image_type: tuple[str, ...] = ("ORIGINAL", "PRIMARY", "AXIAL"),
    patient_id: str = "CT0001",
    transfer_syntax: UID = ExplicitVRLittleEndian,
) -> Dataset:
    """One CT slice stored as int16 with slope 1 / intercept -1024 (as many scanners do)."""
    sop_class = CT_IMAGE if modality == "CT" else MR_IMAGE
    ds = _base(modality, sop_class, study_uid, series_uid, patient_id, "TEST^HEAD")
    ds.StudyDescription = "HEAD"
    ds.SeriesDescription = "HEAD axial"
    ds.BodyPartExamined = body_part
    ds.ImageType = list(image_type)
    ds.InstanceNumber = instance
    ds.ImagePositionPatient = [float(v) for v in position]
    ds.ImageOrientationPatient = [float(v) for v in orientation]
    ds.PixelSpacing = [float(spacing[0]), float(spacing[1])]
    ds.SliceThickness = thickness
    set_pixels(ds, (np.asarray(pixels_hu) + 1024).astype(np.int16), 16, signed=True)
    ds.RescaleIntercept = -1024
    ds.RescaleSlope = 1
    ds.WindowCenter = 40
    ds.WindowWidth = 80
    return _finish(ds, transfer_syntax)


def _finish(ds: Dataset, transfer_syntax: UID) -> Dataset:
    with_file_meta(ds)
    if transfer_syntax == ImplicitVRLittleEndian:
        ds.file_meta.TransferSyntaxUID = ImplicitVRLittleEndian
        ds.set_original_encoding(True, True)
    elif transfer_syntax in (RLELossless, JPEG2000Lossless):
        ds.compress(transfer_syntax)
    elif transfer_syntax != ExplicitVRLittleEndian:
        raise ValueError(f"factory cannot encode {transfer_syntax}")
    return ds


def write(ds: Dataset, directory: Path, name: str | None = None) -> Path:
    directory.mkdir(parents=True, exist_ok=True)
    path = directory / (name or f"{ds.SOPInstanceUID}.dcm")
    ds.save_as(path, enforce_file_format=True)
    return path


def write_cxr(directory: Path, png_path: Path, **kwargs: object) -> Path:
    return write(make_cxr_dataset(png_path, **kwargs), directory)  # type: ignore[arg-type]


def encode_body(ds: Dataset) -> bytes:
    """Dataset body (no meta) in explicit VR LE, as a sender would put it on the wire."""
    buf = io.BytesIO()
    ds = ds.copy()
    if hasattr(ds, "file_meta"):
        del ds.file_meta
    write_dataset(_little_endian_explicit(buf), ds)
    return buf.getvalue()


def _little_endian_explicit(buf: io.BytesIO) -> pydicom.filebase.DicomFileLike:
    fp = pydicom.filebase.DicomFileLike(buf)
    fp.is_little_endian = True
    fp.is_implicit_VR = False
    return fp


SPHERE_CENTRE = np.array([3.0, -4.0, 40.0])  # LPS mm
SPHERE_R = 25.0


def sphere_series(tilt_deg: float = 20.0, steps: tuple[float, ...] | None = None, matrix: int = 120,
                   **kwargs) -> list[pydicom.Dataset]:
    """A tilted axial series (slices stacked along the table axis z, planes tilted about x) of a
    100 HU sphere in -1000 HU air, with variable table steps (3 mm then 5 mm)."""
    t = math.radians(tilt_deg)
    row = np.array([1.0, 0.0, 0.0])
    col = np.array([0.0, math.cos(t), -math.sin(t)])
    steps = steps or tuple([3.0] * 12 + [5.0] * 10)
    zs = np.concatenate([[0.0], np.cumsum(steps)]) + 40.0 - sum(steps) / 2
    series_uid, study_uid = generate_uid(), generate_uid()
    half = (matrix - 1) / 2.0
    rr, cc = np.meshgrid(np.arange(matrix), np.arange(matrix), indexing="ij")
    out = []
    for k, z in enumerate(zs):
        ipp = np.array([-half, -half * math.cos(t), z + half * math.sin(t)])
        pts = ipp + cc[..., None] * row + rr[..., None] * col
        inside = np.linalg.norm(pts - SPHERE_CENTRE, axis=-1) <= SPHERE_R
        hu = np.where(inside, 100, -1000).astype(np.int16)
        out.append(make_ct_slice(hu, tuple(ipp), orientation=tuple(row) + tuple(col), spacing=(1.0, 1.0),
                                 instance=k + 1, series_uid=series_uid, study_uid=study_uid, **kwargs))
    return out
