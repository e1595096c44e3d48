"""Stored DICOM series -> pixels for display (no Qt here, so it is testable and reusable).

Slices are shown as acquired: a gantry-tilted CT is not resampled, only ordered along the
slice normal (the cross product of the row and column directions), because that is what a
radiologist scrolls through on the modality. Pixel values go through the Modality LUT
(rescale slope/intercept or LUT sequence) so that window presets mean HU on CT.
"""

from __future__ import annotations

import logging
import threading
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable

import numpy as np
import pydicom
from pydicom.pixels import apply_modality_lut

log = logging.getLogger(__name__)

# Attributes shown in the viewer's "DICOM" panel, in this order.
KEY_ATTRIBUTES: tuple[str, ...] = (
    "PatientName", "PatientID", "PatientBirthDate", "PatientSex", "StudyDate", "StudyTime",
    "AccessionNumber", "Modality", "StudyDescription", "SeriesDescription", "BodyPartExamined",
    "ViewPosition", "Manufacturer", "ManufacturerModelName", "StationName", "SliceThickness",
    "GantryDetectorTilt", "KVP", "PhotometricInterpretation", "Rows", "Columns",
)


@dataclass(frozen=True)
class SliceInfo:
    """One instance of the series, in display order."""

    path: Path
    sop_uid: str
    instance_number: int | None
    location_mm: float | None  # position along the slice normal; None for projection images


@dataclass
class SeriesGeometry:
    """Everything needed to lay out and label a series before any pixel is decoded."""

    slices: list[SliceInfo]
    rows: int
    cols: int
    pixel_spacing: tuple[float, float]  # (between rows, between columns) in mm
    spacing_known: bool
    modality: str
    monochrome1: bool
    default_window: tuple[float, float] | None  # (centre, width) from the first slice
    attributes: dict[str, str] = field(default_factory=dict)
    skipped: list[str] = field(default_factory=list)  # files that could not be read, and why

    @property
    def n_slices(self) -> int:
        return len(self.slices)

    @property
    def aspect(self) -> float:
        """Physical height / width of one pixel; 1.0 when the spacing is unknown."""
        row_sp, col_sp = self.pixel_spacing
        return row_sp / col_sp if col_sp > 0 else 1.0

    def index_of(self, sop_uid: str) -> int | None:
        for i, s in enumerate(self.slices):
            if s.sop_uid == sop_uid:
                return i
        return None


def _floats(value: Any, n: int) -> list[float] | None:
    try:
        out = [float(v) for v in value]
    except (TypeError, ValueError):
        return None
    return out if len(out) == n else None


def _first_float(value: Any) -> float | None:
    if value is None or value == "":
        return None
    try:
        if isinstance(value, (list, tuple)) or hasattr(value, "__len__") and not isinstance(value, str):
            value = value[0]
        return float(value)
    except (TypeError, ValueError, IndexError):
        return None


def _spacing(ds: pydicom.Dataset) -> tuple[tuple[float, float], bool]:
    for keyword in ("PixelSpacing", "ImagerPixelSpacing"):
        sp = _floats(ds.get(keyword), 2)
        if sp and sp[0] > 0 and sp[1] > 0:
            return (sp[0], sp[1]), True
    return (1.0, 1.0), False


def _location(ds: pydicom.Dataset) -> float | None:
    orientation = _floats(ds.get("ImageOrientationPatient"), 6)
    position = _floats(ds.get("ImagePositionPatient"), 3)
    if orientation is None or position is None:
        return None
    normal = np.cross(np.array(orientation[:3]), np.array(orientation[3:]))
    return float(np.dot(normal, np.array(position)))


def read_series_geometry(paths: list[Path]) -> SeriesGeometry:
    """Read headers only (fast), order the slices along the normal, keep layout facts."""
    entries: list[tuple[SliceInfo, pydicom.Dataset]] = []
    skipped: list[str] = []
    for path in paths:
        try:
            ds = pydicom.dcmread(path, stop_before_pixels=True)
        except Exception as exc:  # one unreadable file must not stop the rest of the series
            skipped.append(f"{Path(path).name}: {exc.__class__.__name__}")
            log.warning("cannot read %s for display: %s", path, exc)
            continue
        if "Rows" not in ds or "Columns" not in ds:
            skipped.append(f"{Path(path).name}: no image")
            continue
        number = ds.get("InstanceNumber")
        try:
            number = int(number) if number not in (None, "") else None
        except (TypeError, ValueError):
            number = None
        entries.append((SliceInfo(Path(path), str(ds.get("SOPInstanceUID", "")), number, _location(ds)), ds))
    if not entries:
        raise ValueError("no displayable image in the series" + (f" ({'; '.join(skipped[:3])})" if skipped else ""))
    if all(info.location_mm is not None for info, _ in entries) and len(entries) > 1:
        entries.sort(key=lambda e: (e[0].location_mm, e[0].instance_number or 0))
    else:
        entries.sort(key=lambda e: (e[0].instance_number if e[0].instance_number is not None else 1 << 30,
                                    e[0].sop_uid))
    first = entries[0][1]
    spacing, known = _spacing(first)
    centre = _first_float(first.get("WindowCenter"))
    width = _first_float(first.get("WindowWidth"))
    attributes = {}
    for keyword in KEY_ATTRIBUTES:
        value = first.get(keyword)
        if value not in (None, ""):
            attributes[keyword] = str(value)
    return SeriesGeometry(
        slices=[info for info, _ in entries], rows=int(first.Rows), cols=int(first.Columns),
        pixel_spacing=spacing, spacing_known=known, modality=str(first.get("Modality", "")),
        monochrome1=str(first.get("PhotometricInterpretation", "")).upper() == "MONOCHROME1",
        default_window=(centre, width) if centre is not None and width and width > 0 else None,
        attributes=attributes, skipped=skipped,
    )


def load_slice(path: Path) -> np.ndarray:
    """One slice in modality units (HU on CT); first frame of a multi-frame object."""
    ds = pydicom.dcmread(path)
    pixels = ds.pixel_array
    if pixels.ndim == 3 and int(ds.get("SamplesPerPixel", 1)) == 1:
        pixels = pixels[0]
    if pixels.ndim != 2:
        raise ValueError(f"{Path(path).name}: only greyscale images are displayed")
    values = apply_modality_lut(pixels, ds)
    return compact(values)


def compact(values: np.ndarray) -> np.ndarray:
    """int16 when the values are whole numbers that fit (CT HU), else float32.

    A 300-slice 512x512 CT then holds 150 MB in the slice cache instead of 300 MB."""
    if values.dtype.kind in "iu" or (values.dtype.kind == "f" and np.array_equal(values, np.rint(values))):
        lo, hi = (values.min(), values.max()) if values.size else (0, 0)
        if -32768 <= lo and hi <= 32767:
            return values.astype(np.int16)
    return np.asarray(values, dtype=np.float32)


def auto_window(pixels: np.ndarray) -> tuple[float, float]:
    """Window from the 1st-99th percentile when the file carries none."""
    sample = pixels[::4, ::4]
    lo, hi = np.percentile(sample, [1, 99])
    return float((lo + hi) / 2), float(max(hi - lo, 1.0))


class SeriesPixels:
    """Slice cache filled by a background thread, nearest-to-the-wanted-slice first.

    The GUI asks ``get(i)``: a hit returns at once; a miss returns None and moves slice i to
    the front of the queue, and ``on_loaded(i)`` fires (on the loader thread) when it lands.
    """

    def __init__(self, geometry: SeriesGeometry, on_loaded: Callable[[int], None],
                 loader: Callable[[Path], np.ndarray] = load_slice) -> None:
        self.geometry = geometry
        self._on_loaded = on_loaded
        self._loader = loader
        self._cache: dict[int, np.ndarray] = {}
        self._errors: dict[int, str] = {}
        self._wanted = 0
        self._cond = threading.Condition()
        self._stop = False
        self._thread = threading.Thread(target=self._run, name="series-pixels", daemon=True)

    def start(self, first: int = 0) -> None:
        self._wanted = first
        self._thread.start()

    def stop(self) -> None:
        with self._cond:
            self._stop = True
            self._cond.notify_all()

    def join(self, timeout: float | None = None) -> None:
        if self._thread.is_alive():
            self._thread.join(timeout)

    def get(self, index: int) -> np.ndarray | None:
        with self._cond:
            pixels = self._cache.get(index)
            if pixels is None and index not in self._errors:
                self._wanted = index
                self._cond.notify_all()
            return pixels

    def error(self, index: int) -> str | None:
        with self._cond:
            return self._errors.get(index)

    @property
    def loaded_count(self) -> int:
        with self._cond:
            return len(self._cache) + len(self._errors)

    def _next(self) -> int | None:
        n = self.geometry.n_slices
        for step in range(n):
            for candidate in (self._wanted + step, self._wanted - step):
                if 0 <= candidate < n and candidate not in self._cache and candidate not in self._errors:
                    return candidate
        return None

    def _run(self) -> None:
        while True:
            with self._cond:
                if self._stop:
                    return
                index = self._next()
                if index is None:
                    return
            try:
                pixels = self._loader(self.geometry.slices[index].path)
                with self._cond:
                    self._cache[index] = pixels
            except Exception as exc:  # a damaged slice is reported in the viewer, never a crash
                log.warning("cannot decode %s: %s", self.geometry.slices[index].path, exc)
                with self._cond:
                    self._errors[index] = f"{exc.__class__.__name__}: {exc}"[:200]
            self._on_loaded(index)
