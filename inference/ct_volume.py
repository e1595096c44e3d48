"""DICOM head-CT series -> HU volume on BLAST-CT's axis-aligned 1 mm LPS grid, and back.

Why resample in patient coordinates: gantry-tilted series are sheared (slice planes are not
perpendicular to the stacking direction) and clinical protocols mix slice spacings (e.g. 4 mm
posterior fossa / 7 mm supratentorial). Stacking slices as if orthogonal, or taking the spacing
from the first two slices or from Slice Thickness, distorts the anatomy and the volumes.

Grid (MODEL_CARD 5.1): array axes (z, y, x) with 1 mm spacing and identity direction in LPS,
i.e. axis 0 inferior->superior, axis 1 anterior->posterior, axis 2 right->left. The grid spans
the bounding box of all native pixel centres, origin = floor(min), end = ceil(max) per axis
(this reproduces the reference geometry in the head-CT README: 233 x 239 x 251, origin
x=-125, y=-124, z=-74). Upstream's one-voxel offset on flipped axes (a SimpleITK reorientation
artefact described in the card) is deliberately not reproduced.

Sampling: for every grid point, the two neighbouring slice planes along the slice normal are
sampled bilinearly at the point's in-plane position and interpolated linearly along the
normal. Points outside the slice stack or outside a slice's matrix get the volume minimum
(the card's fill value; for most scanners the pixel-padding value, e.g. -1500).

Volumes (``volumes_ml``): counted on the native label map, each native pixel weighing
row spacing x column spacing x the slice's own extent along the normal. That extent is the
slice's Voronoi cell along the normal: half the distance to the previous plus half the
distance to the next slice (end slices: the distance to their single neighbour). This
neither double-counts overlapping slices (the 1.08 mm step between a 4 mm and a 7 mm slice)
nor leaves gaps, and it does not trust Slice Thickness.
"""

from __future__ import annotations

import logging
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Sequence

import numpy as np
import pydicom
from pydicom.dataset import Dataset
from scipy import ndimage

from inference.errors import NotAnalysable

log = logging.getLogger(__name__)

MIN_SLICES = 10
HEAD_BODY_PARTS = {"HEAD", "BRAIN", "SKULL", "HEADNECK", "HEAD NECK", "HEAD_NECK", "CEREBRUM", "NEURO"}
ORIENTATION_TOL = 1e-3
GAP_FACTOR = 1.5  # a step > 1.5 x the larger neighbouring step means a missing slice
# Checked from the headers before any slice is decoded: a hostile 65535 x 65535 header would
# otherwise make the stack allocation ask for tens of gigabytes.
MAX_SLICE_SIDE = 2048
MAX_STACK_BYTES = 4 << 30  # float32 HU stack; a 2,000-slice 512 x 512 series needs 2 GiB


@dataclass(frozen=True)
class NativeGeometry:
    """Geometry of the native slices, sorted along the slice normal (increasing)."""

    positions: np.ndarray  # [K, 3] Image Position (Patient), LPS mm
    row_dir: np.ndarray  # [3] direction of increasing column index
    col_dir: np.ndarray  # [3] direction of increasing row index
    normal: np.ndarray  # [3] row_dir x col_dir (sorting direction)
    pixel_spacing: tuple[float, float]  # (between rows, between columns) in mm
    rows: int
    cols: int
    offsets: np.ndarray  # [K] position of each slice along the normal, mm (first = 0)
    extents: np.ndarray  # [K] each slice's extent along the normal for volumes, mm
    sop_uids: tuple[str, ...]

    @property
    def n_slices(self) -> int:
        return int(self.positions.shape[0])

    def pixel_volume_ml(self) -> np.ndarray:
        """[K] volume of one pixel of each slice in mL."""
        return self.pixel_spacing[0] * self.pixel_spacing[1] * self.extents / 1000.0


@dataclass
class CtVolume:
    """HU volume on the 1 mm LPS grid plus what is needed to map results back."""

    hu: np.ndarray  # float32 [Z, Y, X]
    origin: np.ndarray  # LPS (x, y, z) mm of voxel [0, 0, 0]
    native: NativeGeometry
    series_uid: str
    fill_value: float
    timings: dict[str, float] = field(default_factory=dict)

    @property
    def sop_uids(self) -> tuple[str, ...]:
        return self.native.sop_uids

    @property
    def shape(self) -> tuple[int, int, int]:
        return tuple(int(s) for s in self.hu.shape)  # type: ignore[return-value]


def _read(item: Dataset | str | Path) -> Dataset:
    if isinstance(item, Dataset):
        return item
    try:
        return pydicom.dcmread(str(item))
    except Exception as exc:  # unreadable file: not a volume we can build
        raise NotAnalysable(f"unreadable DICOM file {Path(item).name}: {exc.__class__.__name__}") from exc


def _upper_list(value: object) -> list[str]:
    if value is None:
        return []
    if isinstance(value, (list, tuple, pydicom.multival.MultiValue)):
        return [str(v).upper().strip() for v in value]
    return [s.upper().strip() for s in str(value).split("\\")]


def _check_series(datasets: list[Dataset]) -> None:
    """Refuse anything that cannot be one head-CT volume, with a reason a person can act on."""
    if len(datasets) < MIN_SLICES:
        raise NotAnalysable(f"only {len(datasets)} slices: a head CT volume needs at least {MIN_SLICES}")
    modalities = {str(getattr(ds, "Modality", "")).upper() for ds in datasets}
    if modalities != {"CT"}:
        raise NotAnalysable(f"not a CT series (modality {', '.join(sorted(m or '?' for m in modalities))})")
    series = {str(getattr(ds, "SeriesInstanceUID", "")) for ds in datasets}
    if len(series) > 1:
        raise NotAnalysable(f"slices from {len(series)} different series")
    for ds in datasets:
        image_type = _upper_list(getattr(ds, "ImageType", None))
        if "LOCALIZER" in image_type or "SCOUT" in image_type or "TOPOGRAM" in image_type:
            raise NotAnalysable("series contains localizer/scout images")
    parts = {str(getattr(ds, "BodyPartExamined", "") or "").upper().strip() for ds in datasets} - {""}
    if parts and not parts & HEAD_BODY_PARTS:
        raise NotAnalysable(f"body part examined is {', '.join(sorted(parts))}, not head")
    for ds in datasets:
        for tag in ("ImagePositionPatient", "ImageOrientationPatient", "PixelSpacing", "Rows", "Columns"):
            if getattr(ds, tag, None) in (None, ""):
                raise NotAnalysable(f"slice without {tag}: cannot place it in space")
    if len({(int(ds.Rows), int(ds.Columns)) for ds in datasets}) > 1:
        raise NotAnalysable("mixed image matrix sizes within the series")
    rows, cols = int(datasets[0].Rows), int(datasets[0].Columns)
    if not (0 < rows <= MAX_SLICE_SIDE and 0 < cols <= MAX_SLICE_SIDE) or \
            rows * cols * len(datasets) * 4 > MAX_STACK_BYTES:
        raise NotAnalysable(f"{len(datasets)} slices of {rows}x{cols} pixels is not a head CT this model can read")
    iop = np.array([[float(v) for v in ds.ImageOrientationPatient] for ds in datasets])
    if np.abs(iop - iop[0]).max() > ORIENTATION_TOL:
        raise NotAnalysable("mixed slice orientations within the series")
    ps = np.array([[float(v) for v in ds.PixelSpacing] for ds in datasets])
    if ps.shape != (len(datasets), 2) or not np.isfinite(ps).all() or (ps <= 0).any() or (ps > 100).any():
        raise NotAnalysable("pixel spacing is not two finite positive numbers")
    if np.abs(ps - ps[0]).max() > 1e-4:
        raise NotAnalysable("mixed pixel spacing within the series")


def _geometry(datasets: list[Dataset]) -> tuple[list[Dataset], NativeGeometry]:
    iop = np.array([float(v) for v in datasets[0].ImageOrientationPatient])
    if not (np.isfinite(iop).all() and np.linalg.norm(iop[:3]) > 1e-6 and np.linalg.norm(iop[3:]) > 1e-6):
        raise NotAnalysable("invalid image orientation (a direction is zero or not finite)")
    row_dir, col_dir = iop[:3] / np.linalg.norm(iop[:3]), iop[3:] / np.linalg.norm(iop[3:])
    normal = np.cross(row_dir, col_dir)
    if not np.linalg.norm(normal) >= 0.5:  # NaN-safe
        raise NotAnalysable("invalid image orientation (row and column directions are parallel)")
    normal /= np.linalg.norm(normal)
    pos = np.array([[float(v) for v in ds.ImagePositionPatient] for ds in datasets])
    if pos.shape != (len(datasets), 3) or not np.isfinite(pos).all() or not np.isfinite(iop).all():
        raise NotAnalysable("slice position or orientation is not three finite numbers")
    along = pos @ normal
    order = np.argsort(along, kind="stable")
    datasets = [datasets[i] for i in order]
    pos, along = pos[order], along[order]
    steps = np.diff(along)
    if np.any(steps < 0.01):
        raise NotAnalysable("two or more slices share the same position (duplicate or overlapping reconstructions)")
    for i, step in enumerate(steps):
        neighbours = [steps[j] for j in (i - 1, i + 1) if 0 <= j < len(steps)]
        if step > GAP_FACTOR * max(neighbours):
            raise NotAnalysable(
                f"missing slices: a {step:.1f} mm gap between slices {i + 1} and {i + 2} "
                f"(neighbouring steps {', '.join(f'{n:.1f}' for n in neighbours)} mm)"
            )
    offsets = along - along[0]
    extents = np.empty_like(offsets)
    extents[1:-1] = (offsets[2:] - offsets[:-2]) / 2.0
    extents[0] = steps[0]
    extents[-1] = steps[-1]
    ps = [float(v) for v in datasets[0].PixelSpacing]
    geo = NativeGeometry(
        positions=pos,
        row_dir=row_dir,
        col_dir=col_dir,
        normal=normal,
        pixel_spacing=(ps[0], ps[1]),
        rows=int(datasets[0].Rows),
        cols=int(datasets[0].Columns),
        offsets=offsets,
        extents=extents,
        sop_uids=tuple(str(getattr(ds, "SOPInstanceUID", "")) for ds in datasets),
    )
    return datasets, geo


def _hu_stack(datasets: list[Dataset]) -> np.ndarray:
    out = np.empty((len(datasets), int(datasets[0].Rows), int(datasets[0].Columns)), dtype=np.float32)
    for k, ds in enumerate(datasets):
        try:
            raw = ds.pixel_array
        except BaseException as exc:  # also pyo3 PanicException (a BaseException) from Rust decoders
            if isinstance(exc, (KeyboardInterrupt, SystemExit)):
                raise
            raise NotAnalysable(f"pixel data cannot be decoded ({exc.__class__.__name__})") from exc
        if raw.ndim != 2:
            raise NotAnalysable("multi-frame or colour pixel data is not a CT slice")
        slope = float(getattr(ds, "RescaleSlope", 1) or 1)
        intercept = float(getattr(ds, "RescaleIntercept", 0) or 0)
        out[k] = raw.astype(np.float32) * slope + intercept
    return out


def _corners(geo: NativeGeometry) -> np.ndarray:
    r, c = geo.rows - 1, geo.cols - 1
    dr, dc = geo.pixel_spacing
    inplane = np.array([[0, 0], [0, c], [r, 0], [r, c]], dtype=np.float64)
    pts = []
    for p in geo.positions:
        pts.append(p + inplane[:, 1:2] * dc * geo.row_dir + inplane[:, 0:1] * dr * geo.col_dir)
    return np.concatenate(pts)


def load_ct_volume(series: Sequence[Dataset | str | Path]) -> CtVolume:
    """Read, check and resample one head-CT series; raises NotAnalysable with a reason."""
    t0 = time.perf_counter()
    datasets = [_read(item) for item in series]
    try:
        _check_series(datasets)
        datasets, geo = _geometry(datasets)
        stack = _hu_stack(datasets)
    except NotAnalysable:
        raise
    except Exception as exc:  # hostile header values: text or NaN where numbers belong, broken sequences
        raise NotAnalysable(f"malformed header: {exc.__class__.__name__}: {str(exc)[:200]}") from exc
    if not np.isfinite(stack).all():
        raise NotAnalysable("HU values are not finite (Rescale Slope/Intercept)")
    t1 = time.perf_counter()
    fill = float(stack.min())

    corners = _corners(geo)
    lo = np.floor(corners.min(axis=0) + 1e-6)
    hi = np.ceil(corners.max(axis=0) - 1e-6)
    size_xyz = (hi - lo).astype(int) + 1
    if np.any(size_xyz > 1024):
        raise NotAnalysable(f"volume extent {size_xyz.tolist()} mm is too large for a head")
    nx, ny, nz = (int(v) for v in size_xyz)
    hu = np.full((nz, ny, nx), fill, dtype=np.float32)

    # Per-axis contributions of grid coordinates to (u, v, s): along row_dir, col_dir, normal.
    axes = [lo[a] + np.arange(n, dtype=np.float64) for a, n in enumerate((nx, ny, nz))]
    p0 = geo.positions[0]
    dr, dc = geo.pixel_spacing
    ref_u = (geo.positions - p0) @ geo.row_dir  # slice in-plane offsets (shear from tilt)
    ref_v = (geo.positions - p0) @ geo.col_dir
    s_last = geo.offsets[-1]
    yy_x = [(axes[0] - p0[0]) * d[0] for d in (geo.row_dir, geo.col_dir, geo.normal)]
    yy_y = [(axes[1] - p0[1]) * d[1] for d in (geo.row_dir, geo.col_dir, geo.normal)]
    for iz in range(nz):
        dz = axes[2][iz] - p0[2]
        s = (yy_y[2][:, None] + yy_x[2][None, :]) + dz * geo.normal[2]
        inside = (s >= -1e-6) & (s <= s_last + 1e-6)
        if not inside.any():
            continue
        iy, ix = np.nonzero(inside)
        s_in = np.clip(s[iy, ix], 0.0, s_last)
        k = np.clip(np.searchsorted(geo.offsets, s_in, side="right") - 1, 0, geo.n_slices - 2)
        w = (s_in - geo.offsets[k]) / (geo.offsets[k + 1] - geo.offsets[k])
        u = yy_y[0][iy] + yy_x[0][ix] + dz * geo.row_dir[2]
        v = yy_y[1][iy] + yy_x[1][ix] + dz * geo.col_dir[2]
        vals = np.zeros(len(iy), dtype=np.float64)
        for kk, weight in ((k, 1.0 - w), (k + 1, w)):
            col = (u - ref_u[kk]) / dc
            row = (v - ref_v[kk]) / dr
            sampled = ndimage.map_coordinates(stack, [kk.astype(np.float64), row, col], order=1,
                                              mode="constant", cval=fill, prefilter=False)
            vals += weight * sampled
        hu[iz, iy, ix] = vals
    t2 = time.perf_counter()
    log.info("CT volume %s from %d slices in %.1f s", hu.shape, geo.n_slices, t2 - t0)
    return CtVolume(
        hu=hu,
        origin=lo,
        native=geo,
        series_uid=str(getattr(datasets[0], "SeriesInstanceUID", "")),
        fill_value=fill,
        timings={"decode": t1 - t0, "resample": t2 - t1},
    )


def load_ct_series(series: Sequence[Dataset | str | Path]) -> CtVolume:
    """Alias used by app/core/series_analysis.py."""
    return load_ct_volume(series)


def labels_to_native(labels: np.ndarray, volume: CtVolume) -> np.ndarray:
    """1 mm label grid -> uint8 [slices, rows, cols] on the native slices (nearest neighbour, outside = 0).

    Slices are in the order of ``volume.native.sop_uids`` (sorted along the normal).
    """
    geo = volume.native
    out = np.zeros((geo.n_slices, geo.rows, geo.cols), dtype=np.uint8)
    dr, dc = geo.pixel_spacing
    rr = np.arange(geo.rows, dtype=np.float64) * dr
    cc = np.arange(geo.cols, dtype=np.float64) * dc
    nz, ny, nx = labels.shape
    for k in range(geo.n_slices):
        p = geo.positions[k] - volume.origin
        idx = []
        for a in range(3):
            coord = p[a] + rr[:, None] * geo.col_dir[a] + cc[None, :] * geo.row_dir[a]
            idx.append(np.floor(coord + 0.5).astype(np.int64))
        ix, iy, iz = idx
        ok = (ix >= 0) & (ix < nx) & (iy >= 0) & (iy < ny) & (iz >= 0) & (iz < nz)
        out[k][ok] = labels[iz[ok], iy[ok], ix[ok]]
    return out


def volumes_ml(native_labels: np.ndarray, geometry: NativeGeometry, n_classes: int = 5) -> np.ndarray:
    """[n_classes] volume in mL of each label on the native slices (see module docstring)."""
    per_slice = np.stack([np.bincount(s.ravel(), minlength=n_classes)[:n_classes] for s in native_labels])
    return (per_slice * geometry.pixel_volume_ml()[:, None]).sum(axis=0)

