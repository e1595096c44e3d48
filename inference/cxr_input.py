"""DICOM chest radiograph -> display pixels -> CheXNet input tensor.

CheXNet was trained on 8-bit NIH PNGs that were already windowed for display, with
black = no attenuation. A DICOM has to be brought to the same state: Modality LUT,
then the VOI LUT or window the modality chose for display, then MONOCHROME1
inversion, before resizing and ImageNet normalisation. Anything that is not a
single-frame greyscale frontal chest radiograph is refused with ``NotAnalysable``
so the pipeline records a reason instead of a meaningless score.

Only pydicom, numpy and Pillow are used (no torch): this runs in the app.
"""

from __future__ import annotations

import logging
import math
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Mapping

import numpy as np
import pydicom
from PIL import Image
from pydicom.dataset import Dataset
from pydicom.pixels import apply_modality_lut, apply_voi_lut, apply_windowing

from inference.errors import NotAnalysable

log = logging.getLogger(__name__)

ACCEPTED_MODALITIES = ("CR", "DX")
FRONTAL_VIEWS = ("PA", "AP")
LATERAL_VIEWS = ("LL", "RL", "LATERAL", "LAT", "LLD", "RLD")
ACCEPTED_BODY_PARTS = ("CHEST",)
DX_FOR_PROCESSING = "1.2.840.10008.5.1.4.1.1.1.1.1"
MIN_SIDE = 32  # smaller than this is an icon or a secondary capture, not a radiograph
# Largest decoded frame accepted. Decoders allocate rows x columns x samples x bytes from the
# header before reading a byte of pixel data, so a hostile 65535 x 65535 header with a tiny
# payload would ask for 8 GiB; real radiographs (up to ~4300 x 4300 x 16 bit) need < 40 MiB.
MAX_DECODED_BYTES = 256 << 20

# The preprocessing written into the CheXNet manifest; the runtime reads it back from
# the manifest so a pack built with other settings still gets the right tensor.
DEFAULT_PREPROCESSING: dict[str, Any] = {
    "pixels": "display 0..1, 0 = black (Modality LUT, VOI LUT/window or min-max, MONOCHROME1 inverted)",
    "resize": [224, 224],  # [height, width]; whole image, no crop, so the CAM covers it all
    "interpolation": "bilinear",
    "channels": 3,
    "mean": [0.485, 0.456, 0.406],
    "std": [0.229, 0.224, 0.225],
    "layout": "NCHW",
}

_RESAMPLING = {
    "nearest": Image.Resampling.NEAREST,
    "bilinear": Image.Resampling.BILINEAR,
    "bicubic": Image.Resampling.BICUBIC,
    "lanczos": Image.Resampling.LANCZOS,
    "box": Image.Resampling.BOX,
}


@dataclass(frozen=True)
class CxrImage:
    """A chest radiograph ready for display and for the model.

    ``pixels`` is float32 [rows, cols] in 0..1 where 0 is black (as displayed).
    ``pixel_spacing_mm`` is (row, col) spacing; ``spacing_source`` names the DICOM
    attribute it came from (ImagerPixelSpacing is at the detector, not the patient).
    """

    pixels: np.ndarray
    pixel_spacing_mm: tuple[float, float] | None
    raw_shape: tuple[int, ...]
    spacing_source: str | None = None
    modality: str | None = None
    view: str | None = None
    photometric: str | None = None
    voi: str = "none"  # "lut", "window", "minmax" (DICOM) or "png" (8-bit file)

    @property
    def rows(self) -> int:
        return int(self.pixels.shape[0])

    @property
    def cols(self) -> int:
        return int(self.pixels.shape[1])


def _text(ds: Dataset, keyword: str) -> str:
    value = ds.get(keyword, "")
    if value is None:
        return ""
    return str(value).strip().upper()


def check_chest_radiograph(ds: Dataset) -> None:
    """Refuse anything that is not a single-frame greyscale frontal chest CR/DX image."""
    modality = _text(ds, "Modality")
    if modality not in ACCEPTED_MODALITIES:
        shown = modality or "absent"
        raise NotAnalysable(f"modality {shown} is not a chest radiograph (CR or DX expected)")
    if _text(ds, "PresentationIntentType") == "FOR PROCESSING" or str(ds.get("SOPClassUID", "")) == DX_FOR_PROCESSING:
        raise NotAnalysable("DX image is 'for processing' (raw detector data), not 'for presentation'")
    body_part = _text(ds, "BodyPartExamined")
    if body_part and body_part not in ACCEPTED_BODY_PARTS:
        raise NotAnalysable(f"body part {body_part} is not CHEST")
    view = _text(ds, "ViewPosition")
    if view in LATERAL_VIEWS:
        raise NotAnalysable(f"lateral view ({view}); CheXNet reads frontal PA/AP views only")
    if view and view not in FRONTAL_VIEWS:
        raise NotAnalysable(f"view position {view} is not a frontal PA/AP view")
    if not view:
        for item in ds.get("ViewCodeSequence", None) or []:
            meaning = str(item.get("CodeMeaning", "")).lower()
            if "lateral" in meaning:
                raise NotAnalysable(f"lateral view ({item.get('CodeMeaning')}); CheXNet reads frontal PA/AP views only")
    frames = int(ds.get("NumberOfFrames", 1) or 1)
    if frames > 1:
        raise NotAnalysable(f"multi-frame image ({frames} frames); a single radiograph is expected")
    samples = int(ds.get("SamplesPerPixel", 1) or 1)
    photometric = _text(ds, "PhotometricInterpretation")
    if samples != 1 or photometric not in ("MONOCHROME1", "MONOCHROME2"):
        raise NotAnalysable(
            f"colour image ({photometric or 'unknown'}, {samples} samples per pixel); greyscale expected"
        )
    if "PixelData" not in ds:
        raise NotAnalysable("no pixel data")
    rows, cols = int(ds.get("Rows", 0) or 0), int(ds.get("Columns", 0) or 0)
    if rows < MIN_SIDE or cols < MIN_SIDE:
        raise NotAnalysable(f"image is {rows}x{cols} pixels; too small to be a radiograph")
    check_decoded_size(ds)


def check_decoded_size(ds: Dataset, limit: int = MAX_DECODED_BYTES) -> int:
    """Refuse, before any decoder allocates, pixel data whose header promises more than ``limit``
    bytes or an unsupported Bits Allocated; returns the decoded size in bytes."""
    try:
        rows, cols = int(ds.get("Rows", 0) or 0), int(ds.get("Columns", 0) or 0)
        samples = int(ds.get("SamplesPerPixel", 1) or 1)
        frames = int(ds.get("NumberOfFrames", 1) or 1)
        bits = int(ds.get("BitsAllocated", 0) or 0)
    except (TypeError, ValueError) as exc:
        raise NotAnalysable(f"image dimensions cannot be read: {exc}") from exc
    if bits not in (1, 8, 16, 32):
        raise NotAnalysable(f"Bits Allocated {bits} is not supported (1, 8, 16 or 32 expected)")
    if min(rows, cols, samples, frames) < 1:
        raise NotAnalysable(f"image dimensions {rows}x{cols}x{samples}, {frames} frame(s) are not valid")
    decoded = rows * cols * samples * frames * max(1, bits // 8)
    if decoded > limit:
        raise NotAnalysable(f"image of {rows}x{cols}x{samples} pixels, {frames} frame(s) would take "
                            f"{decoded >> 20} MiB decoded (limit {limit >> 20} MiB); not decoded")
    return decoded


def _stored_values(ds: Dataset) -> np.ndarray:
    """Decode pixel data (pydicom handlers, pylibjpeg for JPEG/J2K/RLE) and honour Bits Stored."""
    try:
        arr = ds.pixel_array
    except BaseException as exc:  # missing plugin, corrupt stream, truncated data
        if isinstance(exc, (KeyboardInterrupt, SystemExit)):
            raise
        # Rust decoders (pylibjpeg-rle via pyo3) panic on corrupt streams with PanicException,
        # a BaseException: uncaught it ended the analysis worker thread.
        syntax = getattr(getattr(ds, "file_meta", None), "TransferSyntaxUID", None)
        name = getattr(syntax, "name", str(syntax)) if syntax is not None else "unknown transfer syntax"
        raise NotAnalysable(f"pixel data could not be decoded ({name}): {exc}") from exc
    arr = np.asarray(arr)
    if arr.ndim != 2:
        raise NotAnalysable(f"pixel array has shape {arr.shape}; one greyscale frame expected")
    bits_stored = int(ds.get("BitsStored", 0) or 0)
    if np.issubdtype(arr.dtype, np.integer) and 0 < bits_stored < arr.dtype.itemsize * 8:
        # Bits above Bits Stored may hold overlays or garbage; drop them, then sign-extend.
        wide = arr.astype(np.int64) & ((1 << bits_stored) - 1)
        if int(ds.get("PixelRepresentation", 0) or 0) == 1:
            sign = 1 << (bits_stored - 1)
            wide = np.where(wide >= sign, wide - (1 << bits_stored), wide)
        arr = wide
    return arr


def _padding_mask(stored: np.ndarray, ds: Dataset) -> np.ndarray | None:
    """Pixels outside the exposed field (Pixel Padding Value / Range Limit), if declared."""
    value = ds.get("PixelPaddingValue", None)
    if value is None or isinstance(value, (bytes, list)):
        return None
    limit = ds.get("PixelPaddingRangeLimit", None)
    lo, hi = (int(value), int(limit)) if isinstance(limit, int) else (int(value), int(value))
    mask = (stored >= min(lo, hi)) & (stored <= max(lo, hi))
    return mask if mask.any() else None


def _window(ds: Dataset) -> tuple[float, float] | None:
    """First window centre/width, or None when absent or unusable (PS3.3 C.11.2.1.2: width >= 1;
    a broken window is ignored, not trusted)."""
    if "WindowCenter" not in ds or "WindowWidth" not in ds:
        return None
    try:
        center, width = _numbers(ds, "WindowCenter")[0], _numbers(ds, "WindowWidth")[0]
    except (TypeError, ValueError, OverflowError, IndexError) as exc:
        log.warning("window centre/width not usable (%s); stretching min/max", exc)
        return None
    if width <= 0:
        log.warning("window width %s is not positive; stretching min/max", width)
        return None
    return center, width


def _voi_to_unit(values: np.ndarray, ds: Dataset, padding: np.ndarray | None = None) -> tuple[np.ndarray, str]:
    """Apply the VOI LUT or window (first one) and scale its output range to 0..1.

    The output range is probed through pydicom itself (LUT entries, window extremes),
    so unusual slopes or LUT bit depths are treated exactly as pydicom maps them.
    Without either, the image's own min..max is stretched (what viewers do too),
    ignoring declared padding pixels so a padded border does not squash the contrast.
    """
    seq = ds.get("VOILUTSequence", None)
    if seq:
        descriptor = [int(v) for v in seq[0].LUTDescriptor]
        entries = descriptor[0] or 65536
        first = descriptor[1]
        if first >= 32768 and int(ds.get("PixelRepresentation", 0) or 0) == 1:
            first -= 65536  # US-encoded signed first mapped value
        probe = np.arange(first, first + entries, dtype=np.int64)
        lut_out = apply_voi_lut(probe, ds, index=0, prefer_lut=True).astype(np.float64)
        lo, hi = float(lut_out.min()), float(lut_out.max())
        # A LUT is indexed by integers; rescaled values are floats (integral for usual slopes).
        out = apply_voi_lut(np.rint(values).astype(np.int64), ds, index=0, prefer_lut=True).astype(np.float64)
        if hi > lo:
            return (out - lo) / (hi - lo), "lut"
        log.warning("VOI LUT is constant; falling back to the window or min/max")
    window = _window(ds)
    if window is not None:
        center, width = window
        try:
            with np.errstate(over="ignore"):
                ends = apply_windowing(np.array([center - 1e6 * width, center + 1e6 * width]), ds, index=0)
                out = apply_windowing(values, ds, index=0).astype(np.float64)
        except ValueError as exc:
            log.warning("window not usable (%s); stretching min/max", exc)
        else:
            lo, hi = float(ends[0]), float(ends[1])
            if hi != lo:
                return np.clip((out - lo) / (hi - lo), 0.0, 1.0), "window"
    content = values if padding is None else values[~padding]
    if content.size == 0:
        raise NotAnalysable("pixel data are all padding (no image content)")
    vmin, vmax = float(content.min()), float(content.max())
    if vmax <= vmin:
        raise NotAnalysable("pixel data are constant (no image content)")
    return (values.astype(np.float64) - vmin) / (vmax - vmin), "minmax"


def _numbers(ds: Dataset, keyword: str) -> list[float]:
    """Finite values of a DS/IS attribute; ValueError/TypeError when malformed (hostile input
    reaches here as empty strings, text, NaN or a single value where two are expected)."""
    value = ds[keyword].value
    values = list(value) if isinstance(value, (list, tuple, pydicom.multival.MultiValue)) else [value]
    out = [float(v) for v in values]
    if not out or not all(math.isfinite(v) for v in out):
        raise ValueError(f"{keyword} {value!r} is not a finite number")
    return out


def _check_rescale(ds: Dataset) -> None:
    for keyword in ("RescaleSlope", "RescaleIntercept"):
        if keyword in ds:
            try:
                values = _numbers(ds, keyword)
            except (TypeError, ValueError, OverflowError) as exc:
                raise NotAnalysable(f"{keyword} is not a usable number ({exc})") from exc
            if keyword == "RescaleSlope" and values[0] == 0:
                raise NotAnalysable("Rescale Slope is 0: every pixel would have the same value")


def _spacing(ds: Dataset) -> tuple[tuple[float, float] | None, str | None]:
    for keyword in ("PixelSpacing", "ImagerPixelSpacing"):
        if keyword not in ds:
            continue
        try:
            values = _numbers(ds, keyword)
        except (TypeError, ValueError, OverflowError):
            continue
        if len(values) == 2 and values[0] > 0 and values[1] > 0:
            return (values[0], values[1]), keyword
    return None, None


def load_cxr(source: Dataset | Path | str) -> CxrImage:
    """Read a DICOM chest radiograph (dataset or file) into display pixels 0..1."""
    if isinstance(source, Dataset):
        ds = source
    else:
        try:
            ds = pydicom.dcmread(str(source))
        except Exception as exc:
            raise NotAnalysable(f"not a readable DICOM file: {exc}") from exc
    try:
        check_chest_radiograph(ds)
        _check_rescale(ds)
        stored = _stored_values(ds)
        values = np.asarray(apply_modality_lut(stored, ds), dtype=np.float64)
        padding = _padding_mask(stored, ds)
        unit, voi = _voi_to_unit(values, ds, padding)
    except NotAnalysable:
        raise
    except Exception as exc:
        # pydicom converts values lazily and raises many types (ValueError, TypeError, OSError for
        # a broken sequence, NotImplementedError for a LUT depth...) for what a broken sender wrote
        raise NotAnalysable(f"malformed header: {exc.__class__.__name__}: {str(exc)[:200]}") from exc
    if not np.isfinite(unit).all():
        raise NotAnalysable("pixel values are not finite after the Modality LUT and VOI")
    photometric = _text(ds, "PhotometricInterpretation")
    if photometric == "MONOCHROME1":
        unit = 1.0 - unit  # MONOCHROME1: minimum value is white
    if padding is not None:
        unit = np.where(padding, 0.0, unit)  # padding is shown black, as the NIH PNGs have it
    spacing, source_kw = _spacing(ds)
    return CxrImage(
        pixels=np.clip(unit, 0.0, 1.0).astype(np.float32),
        pixel_spacing_mm=spacing,
        raw_shape=tuple(int(n) for n in stored.shape),
        spacing_source=source_kw,
        modality=_text(ds, "Modality") or None,
        view=_text(ds, "ViewPosition") or None,
        photometric=photometric,
        voi=voi,
    )


def cxr_from_array(array: np.ndarray, *, pixel_spacing_mm: tuple[float, float] | None = None) -> CxrImage:
    """An 8-bit display image (grey, RGB or RGBA with R=G=B) as a CxrImage, value/255.

    This is how CheXNet's training PNGs were read, so calibration and tests match it.
    """
    arr = np.asarray(array)
    raw_shape = tuple(int(n) for n in arr.shape)
    if arr.ndim == 3:
        if arr.shape[2] in (3, 4):
            rgb = arr[..., :3].astype(np.float64)
            arr = rgb @ np.array([0.299, 0.587, 0.114])  # equals R when R = G = B
        elif arr.shape[2] == 1:
            arr = arr[..., 0]
    if arr.ndim != 2:
        raise NotAnalysable(f"image array has shape {raw_shape}; a 2-D greyscale image is expected")
    scale = 255.0 if np.issubdtype(np.asarray(array).dtype, np.integer) else 1.0
    pixels = np.clip(arr.astype(np.float64) / scale, 0.0, 1.0).astype(np.float32)
    return CxrImage(pixels=pixels, pixel_spacing_mm=pixel_spacing_mm, raw_shape=raw_shape, voi="png")


def load_png(path: Path | str) -> CxrImage:
    """A ChestX-ray14 PNG (mode L, or RGBA with R=G=B) as a CxrImage."""
    with Image.open(path) as img:
        if img.mode not in ("L", "RGB", "RGBA", "LA"):
            raise NotAnalysable(f"PNG mode {img.mode} is not an 8-bit display image")
        if img.mode == "LA":
            img = img.convert("L")
        return cxr_from_array(np.asarray(img))


def to_model_input(image: CxrImage, preprocessing: Mapping[str, Any] | None = None) -> np.ndarray:
    """Display pixels -> float32 [1, C, H, W] per the manifest's preprocessing."""
    prep = dict(DEFAULT_PREPROCESSING)
    if preprocessing:
        prep.update(preprocessing)
    height, width = (int(v) for v in prep["resize"])
    resample = _RESAMPLING[str(prep.get("interpolation", "bilinear")).lower()]
    pixels = np.ascontiguousarray(image.pixels, dtype=np.float32)
    resized = np.asarray(Image.fromarray(pixels).resize((width, height), resample), dtype=np.float32)
    channels = int(prep.get("channels", 3))
    mean = np.asarray(prep["mean"], dtype=np.float32).reshape(channels, 1, 1)
    std = np.asarray(prep["std"], dtype=np.float32).reshape(channels, 1, 1)
    tensor = (np.broadcast_to(resized, (channels, height, width)) - mean) / std
    return np.ascontiguousarray(tensor[np.newaxis], dtype=np.float32)
