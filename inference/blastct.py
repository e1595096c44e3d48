"""BLAST-CT runtime: 12-member DeepMedic ensemble on a 1 mm head-CT volume (OpenVINO only).

Tiling follows MODEL_CARD 5.3/5.4: output tiles on a grid anchored at voxel 0 with a 30-voxel
pitch, input = output + 40 voxels each side with edge replication, softmax summed over the
members, argmax. Three exact speed-ups are applied (each verified by tests/inference/test_blastct_runtime.py):

* Larger tiles. An output tile of T = 30*m voxels (input T + 80) equals m^3 reference 30^3 tiles
  up to float rounding: tile starts move by multiples of 30, i.e. of both sub-sampling factors
  (3 and 5), so every pathway samples the same voxels. Per output voxel T = 90 runs ~2x (INT8)
  to ~3x (FP32) faster than T = 30 on 2 cores (the 40-voxel margins are shared). Tiles are
  then shrunk to the 30-cells they must cover, giving a few static shapes (~4), each compiled
  once per member and study (the OpenVINO compile cache makes that cheap after the first).
* Constant patches. A patch whose whole input is at the window floor (all HU <= -15, hence -1
  after normalisation) produces one constant output vector (the network is fully
  convolutional), computed once per member and reused.
* Only what is reported is computed. Results are reported on the native slices (nearest
  neighbour) so a 30^3 cell that no native pixel samples cannot change any result; tiles are
  placed to cover only the cells that do (with a gantry tilt the bounding box has large empty
  wedges). Set ``native_cells_only=False`` to label the whole 1 mm grid.
* The 1x1x1 head only where it is read. The three 1x1x1 blocks after the pathway concat act per
  voxel, so (``head_at_sampled_voxels``, CPU) each member runs as two models cut from its own IR:
  the pathways (outputs: the two sub-sampled pathways before their nearest-neighbour upsampling,
  and the full-resolution pathway, all in the precision they have inside the whole model) and
  the head on a fixed-size batch of gathered voxels ([1, HEAD_CHUNK, 1, 1, 150], channels last
  like the pathway outputs, so no reorder). The head then runs only at the ~15-22 % of grid
  voxels some native pixel samples, and the full-resolution upsample + concat disappear. The logits at those voxels are bit-identical to the whole model's
  (tests/inference/test_blastct_runtime.py; bench/bench_ensemble_speed.py on the real series);
  grid labels elsewhere stay 0, as in cells no native pixel samples.

Precision: the pack says which runtime precision passed its fidelity gate ("runtime"). The INT8
IR is mixed precision (inference/pack_builder/blastct_build.py: the expensive, insensitive convolutions
are INT8, the rest floating point); its floating-point part, like the "bf16" fallback, runs
in bf16 where the CPU has it natively and in f32 elsewhere (emulated bf16 would be slow).

Members are compiled one at a time and released, so peak memory is one model's working set;
``keep_compiled=True`` keeps every member's compiled models for the next study instead (no
recompilation; each member's working buffers are released after it ran, so memory stays bounded).
"""

from __future__ import annotations

import itertools
import logging
import time
from dataclasses import dataclass, field
from typing import Callable, Iterator, Sequence

import numpy as np
import openvino as ov

from inference.ct_volume import CtVolume, labels_to_native, load_ct_volume, volumes_ml
from inference.errors import InferenceError
from inference.packs import ModelPack
from inference.runner import CompiledModel

log = logging.getLogger(__name__)

CLASSES: tuple[str, ...] = ("IPH", "EAH", "oedema", "IVH")  # label values 1..4
N_CLASSES = 5
WINDOW_HU: tuple[float, float] = (-15.0, 100.0)
MARGIN = 40
CELL = 30  # reference output tile (and grid pitch)
# precision -> (IR folder, inference precision hint for the non-INT8 operations)
PRECISIONS: dict[str, tuple[str, str]] = {"int8": ("int8", "bf16"), "fp32": ("fp32", "f32"), "bf16": ("fp32", "bf16")}
HEAD_CHUNK = 16384  # voxels per head call (static shape; the last chunk is padded)
Voxels = tuple[np.ndarray, np.ndarray, np.ndarray]  # (z, y, x) indices inside one output tile


@dataclass
class BlastCtOutput:
    """Result for one series; slice indices refer to ``sop_uids`` (sorted along the slice normal)."""

    labels: np.ndarray  # uint8 [slices, rows, cols] on the native slices
    sop_uids: tuple[str, ...]
    volumes_ml: dict[str, float]
    slices_involved: dict[str, int]  # number of native slices with the class
    max_slice: dict[str, int | None]
    timings: dict[str, float]
    device: str
    fallback_note: str | None
    precision: str
    members: int
    tile: int
    tiles_run: int
    tiles_constant: int
    grid_labels: np.ndarray | None = field(default=None, repr=False)  # uint8 on the 1 mm grid

    def findings(self) -> dict[str, dict]:
        """The JSON findings block of ``AnalysisResult`` (docs/architecture.md)."""
        return {"volumes_ml": self.volumes_ml, "slices_involved": self.slices_involved, "max_slice": self.max_slice}


def normalise(hu: np.ndarray) -> np.ndarray:
    """MODEL_CARD 5.2: clip to [-15, 100] HU and map linearly to [-1, 1]."""
    lo, hi = WINDOW_HU
    return ((2.0 * np.clip(hu, lo, hi) - lo - hi) / (hi - lo)).astype(np.float32)


def softmax(logits: np.ndarray) -> np.ndarray:
    """Softmax over axis 0 of [5, ...] logits."""
    e = np.exp(logits - logits.max(axis=0, keepdims=True))
    return e / e.sum(axis=0, keepdims=True)


def reference_starts(shape: Sequence[int]) -> list[tuple[int, int, int]]:
    """Upstream tile starts: centres 15 + 30 i, i = 0 .. floor(S/30), per axis (last axis fastest)."""
    axes = [range(0, CELL * (s // CELL + 1), CELL) for s in shape]
    return list(itertools.product(*axes))


def _sampled_indices(volume: CtVolume) -> Iterator[tuple[np.ndarray, np.ndarray, np.ndarray]]:
    """Per native slice: (z, y, x) of the 1 mm voxels its pixels sample (the nearest-neighbour
    rule of ``labels_to_native``), inside the grid."""
    geo = volume.native
    shape = volume.shape
    dr, dc = geo.pixel_spacing
    rr = np.arange(geo.rows, dtype=np.float64) * dr
    cc = np.arange(geo.cols, dtype=np.float64) * dc
    for k in range(geo.n_slices):
        p = geo.positions[k] - volume.origin
        ix, iy, iz = (
            np.floor(p[a] + rr[:, None] * geo.col_dir[a] + cc[None, :] * geo.row_dir[a] + 0.5).astype(np.int64)
            for a in range(3)
        )
        ok = (ix >= 0) & (ix < shape[2]) & (iy >= 0) & (iy < shape[1]) & (iz >= 0) & (iz < shape[0])
        yield iz[ok], iy[ok], ix[ok]


def native_cells(volume: CtVolume) -> np.ndarray:
    """bool [ceil(Z/30), ceil(Y/30), ceil(X/30)]: 30^3 cells holding a voxel that some native pixel samples."""
    cells = np.zeros([-(-s // CELL) for s in volume.shape], dtype=bool)
    for iz, iy, ix in _sampled_indices(volume):
        cells[iz // CELL, iy // CELL, ix // CELL] = True
    return cells


def sampled_voxels(volume: CtVolume) -> np.ndarray:
    """bool [Z, Y, X]: the 1 mm voxels some native pixel samples; labels anywhere else never reach a result."""
    mask = np.zeros(volume.shape, dtype=bool)
    for iz, iy, ix in _sampled_indices(volume):
        mask[iz, iy, ix] = True
    return mask


Tile = tuple[tuple[int, int, int], tuple[int, int, int]]  # (start, size) in voxels, multiples of 30


def plan_tiles(cells: np.ndarray, tile: int, shrink: bool = True) -> list[Tile]:
    """Tiles (start, size) of at most ``tile`` per axis covering every True 30^3 cell.

    Tries every grid shift (in cells), keeps the one needing the fewest tiles, then shrinks each
    tile to the bounding box of the cells it must cover (sizes stay multiples of 30, starts stay
    on the 30-grid, so results are unchanged; a handful of distinct shapes results).
    """
    if tile % CELL:
        raise ValueError(f"tile {tile} is not a multiple of {CELL}")
    m = tile // CELL
    padded = np.zeros([s + 2 * m for s in cells.shape], dtype=bool)
    padded[m: m + cells.shape[0], m: m + cells.shape[1], m: m + cells.shape[2]] = cells
    best: list[Tile] | None = None
    for shift in itertools.product(range(m), repeat=3):
        # shift sh puts tile starts at cells -sh + t*m (padded index m - sh + t*m)
        plan: list[Tile] = []
        rng = [range(m - sh, padded.shape[a], m) for a, sh in enumerate(shift)]
        for corner in itertools.product(*rng):
            block = padded[tuple(slice(c, c + m) for c in corner)]
            if not block.any():
                continue
            if shrink:
                idx = np.argwhere(block)
                lo, hi = idx.min(axis=0), idx.max(axis=0) + 1
            else:
                lo, hi = np.zeros(3, int), np.full(3, m)
            start = tuple(int((c + l - m) * CELL) for c, l in zip(corner, lo))
            size = tuple(int((h - l) * CELL) for l, h in zip(lo, hi))
            plan.append((start, size))  # type: ignore[arg-type]
        if best is None or sum(np.prod(t[1]) for t in plan) < sum(np.prod(t[1]) for t in best):
            best = plan
    return best or []


def _take_patch(x: np.ndarray, start: Sequence[int], size: Sequence[int]) -> np.ndarray:
    """Input patch [start - 40, start + size + 40) with edge replication (clipped indices)."""
    lo = [s - MARGIN for s in start]
    hi = [s + n + MARGIN for s, n in zip(start, size)]
    inner = tuple(slice(max(a, 0), min(b, dim)) for a, b, dim in zip(lo, hi, x.shape))
    if all(sl.stop > sl.start for sl in inner):
        # a slice plus edge padding: the same values as clipped indices, without a gather
        pad = [(sl.start - a, b - sl.stop) for sl, a, b in zip(inner, lo, hi)]
        if not any(p for pair in pad for p in pair):
            return np.ascontiguousarray(x[inner])
        return np.pad(x[inner], pad, mode="edge")
    idx = [np.clip(np.arange(a, b), 0, dim - 1) for a, b, dim in zip(lo, hi, x.shape)]
    return x[np.ix_(*idx)]


def destination(start: Sequence[int], size: Sequence[int], shape: Sequence[int]) -> tuple[slice, ...]:
    """The part of a tile inside the grid (tiles may hang over its edges)."""
    return tuple(slice(max(s, 0), min(s + n, d)) for s, n, d in zip(start, size, shape))


def source(start: Sequence[int], dst: Sequence[slice]) -> tuple[slice, ...]:
    """``destination`` in tile-local indices."""
    return tuple(slice(d.start - s, d.stop - s) for d, s in zip(dst, start))


def tile_voxels(sampled: np.ndarray, start: Sequence[int], size: Sequence[int]) -> tuple[Voxels, Voxels]:
    """The sampled voxels of one tile: (tile-local indices, grid indices), in C order."""
    dst = destination(start, size, sampled.shape)
    src = source(start, dst)
    gz, gy, gx = np.nonzero(sampled[dst])
    local = (gz + src[0].start, gy + src[1].start, gx + src[2].start)
    grid = (gz + dst[0].start, gy + dst[1].start, gx + dst[2].start)
    return local, grid


def constant_softmax(infer: Callable[..., np.ndarray], size: Sequence[int], split: bool) -> np.ndarray:
    """A member's softmax [5] for an all-floor input patch of output ``size`` (the network is
    fully convolutional, so every voxel of such a tile gets this vector)."""
    const_in = np.full((1, 1) + tuple(n + 2 * MARGIN for n in size), -1.0, np.float32)
    if split:
        return softmax(infer(const_in, (np.zeros(1, np.int64),) * 3))[:, 0]
    return softmax(infer(const_in)[0])[:, 0, 0, 0]


def tile_softmax(infer: Callable[..., np.ndarray], patch: np.ndarray, local: Voxels | None,
                 split: bool) -> np.ndarray:
    """One tile's softmax: [5, D, H, W] (``local`` None), or [5, n] at the tile-local voxels,
    computed only there (``split``: ``infer(patch, voxels)``) or indexed from the whole output."""
    if local is None:
        return softmax(infer(patch)[0])
    if split:
        return softmax(infer(patch, local))
    return softmax(infer(patch)[0][(slice(None),) + local])


def run_tiles(
    x: np.ndarray,
    compile_shape: Callable[[tuple[int, int, int]], Callable[[np.ndarray], np.ndarray]],
    plan: Sequence[Tile],
    acc: np.ndarray,
    skip_constant: bool = True,
    sampled: np.ndarray | None = None,
) -> tuple[int, int]:
    """Add one member's softmax to ``acc`` [5, Z, Y, X] over the planned tiles; returns (run, constant).

    Tiles are grouped by shape; each shape is compiled once and released before the next.
    With ``sampled`` (bool [Z, Y, X], see ``sampled_voxels``) only those voxels of ``acc`` are
    computed (constant patches still fill their whole tile): the compiled callables are then
    called as ``infer(patch, voxels)`` and return logits [5, n] at the tile-local ``voxels``.
    """
    const_probs: np.ndarray | None = None
    run = constant = 0
    split = sampled is not None
    by_size: dict[tuple[int, int, int], list[tuple[int, int, int]]] = {}
    for start, size in plan:
        if all(d.stop > d.start for d in destination(start, size, x.shape)):
            by_size.setdefault(size, []).append(start)
    for size, starts in sorted(by_size.items()):
        infer = None
        for start in starts:
            patch = _take_patch(x, start, size)
            dst = destination(start, size, x.shape)
            if skip_constant and patch.max() <= -1.0:
                if const_probs is None:
                    infer = infer or compile_shape(size)
                    const_probs = constant_softmax(infer, size, split)
                acc[(slice(None),) + dst] += const_probs[:, None, None, None]
                constant += 1
                continue
            infer = infer or compile_shape(size)
            if sampled is None:
                acc[(slice(None),) + dst] += tile_softmax(infer, patch[None, None], None, split)[
                    (slice(None),) + source(start, dst)]
            else:
                local, grid = tile_voxels(sampled, start, size)
                if not local[0].size:
                    continue
                acc[(slice(None),) + grid] += tile_softmax(infer, patch[None, None], local, split)
            run += 1
        del infer
    return run, constant


def split_model(model: ov.Model, feature_type: ov.Type) -> tuple[ov.Model, ov.Model]:
    """Cut a BLAST-CT IR at the pathway concat into (pathways, head).

    pathways: the original input -> the concat's three inputs, the sub-sampled pathways taken
    before their upsampling (nearest neighbour, i.e. output voxel v reads v // factor), in
    ``feature_type`` (the precision the features have inside the whole model, so nothing is
    rounded differently), channels last ([1, D, H, W, C]). head: a [1, HEAD_CHUNK, 1, 1, 150] input in
``feature_type`` (channels last) -> the original output [1, 5, HEAD_CHUNK, 1, 1].
    """
    head_model = model.clone()  # before the pathways model shares (and re-types) the original's nodes
    concat = next(op for op in model.get_ordered_ops() if op.get_type_name() == "Concat")
    outs = []
    for i in range(concat.get_input_size()):
        src = concat.input_value(i)
        if src.get_node().get_type_name() == "Interpolate":
            src = src.get_node().input_value(0)
        outs.append(src)
    pathways = ov.Model(outs, model.get_parameters(), "blastct_pathways")
    ppp = ov.preprocess.PrePostProcessor(pathways)
    for i in range(len(outs)):
        # channels last: the CPU plugin's own layout (no output reorder) and one voxel's features contiguous
        ppp.output(i).model().set_layout(ov.Layout("NCDHW"))
        ppp.output(i).tensor().set_layout(ov.Layout("NDHWC")).set_element_type(feature_type)
    pathways = ppp.build()
    head_concat = next(op for op in head_model.get_ordered_ops() if op.get_type_name() == "Concat")
    channels = head_concat.get_output_partial_shape(0)[1].get_length()
    feats = ov.opset13.parameter([1, channels, HEAD_CHUNK, 1, 1], ov.Type.f32, name="features")
    for target in list(head_concat.output(0).get_target_inputs()):
        target.replace_source_output(feats.output(0))
    head = ov.Model([r.input_value(0) for r in head_model.get_results()], [feats], "blastct_head")
    ppp = ov.preprocess.PrePostProcessor(head)
    ppp.input(0).model().set_layout(ov.Layout("NCDHW"))
    # [1, HEAD_CHUNK, 1, 1, 150] in the features' own type: they are gathered straight into it
    ppp.input(0).tensor().set_layout(ov.Layout("NDHWC")).set_element_type(feature_type)
    return pathways, ppp.build()


class SplitMember:
    """One member as pathways (per tile shape) + head (per gathered voxels); see the module docstring."""

    def __init__(self, pathways: ov.CompiledModel, head: ov.InferRequest, factors: Sequence[int], bf16: bool) -> None:
        self._compiled = pathways
        self._pathways = pathways.create_infer_request()
        self._head = head
        self._factors = list(factors)
        self._bf16 = bf16

    def release_memory(self) -> None:
        """Free the working buffers (~1.3 GB per member over the real series' tile shapes) but keep
        the compiled code; the next call allocates them again."""
        self._compiled.release_memory()

    def __call__(self, patch: np.ndarray, voxels: Voxels | None = None) -> np.ndarray:
        """Logits [5, n] at the tile-local ``voxels`` (all voxels, [1, 5, D, H, W], when None)."""
        self._pathways.infer([patch])
        full = voxels is None
        if full:
            n = [d - 2 * MARGIN for d in patch.shape[2:]]
            voxels = tuple(g.ravel() for g in np.indices(n))  # type: ignore[assignment]
        assert voxels is not None
        # Per pathway: its features as [voxels, channels] rows and the row each voxel reads
        # (nearest-neighbour upsampling: v // factor), in the concat's channel order.
        sources = []
        for i, f in enumerate(self._factors):
            data = self._pathways.get_output_tensor(i).data  # [1, D, H, W, C]
            rows = (data.view(np.uint16) if self._bf16 else data).reshape(-1, data.shape[-1])
            index = np.ravel_multi_index(tuple(v // f for v in voxels) if f > 1 else voxels, data.shape[1:4])
            sources.append((rows, index))
        count = len(voxels[0])
        logits = np.empty((N_CLASSES, count), dtype=np.float32)
        inp = self._head.get_input_tensor(0).data  # [1, HEAD_CHUNK, 1, 1, 150], the features' type
        feats = inp.view(np.uint16)[0, :, 0, 0] if self._bf16 else inp[0, :, 0, 0]
        for a in range(0, count, HEAD_CHUNK):
            b = min(a + HEAD_CHUNK, count)
            channel = 0
            for rows, index in sources:  # gathered straight into the head's input: no concat, no conversion
                width = rows.shape[1]
                feats[: b - a, channel: channel + width] = rows[index[a:b]]
                channel += width
            if b - a < HEAD_CHUNK:
                feats[b - a:] = 0
            self._head.infer()
            logits[:, a:b] = self._head.get_output_tensor(0).data[0, :, : b - a, 0, 0]
        if full:
            return logits.reshape((1, N_CLASSES, *n))
        return logits


def output_from_grid(grid: np.ndarray, volume: CtVolume, *, timings: dict[str, float], device: str,
                     note: str | None, precision: str, members: int, tile: int, tiles_run: int,
                     tiles_constant: int, keep_grid: bool = False) -> BlastCtOutput:
    """Labels on the native slices, volumes in mL and per-class slice facts from a 1 mm label grid
    (computed here or on the cluster: one post-processing for both)."""
    native = labels_to_native(grid, volume)
    ml = volumes_ml(native, volume.native, N_CLASSES)
    counts = np.stack([np.bincount(s.ravel(), minlength=N_CLASSES)[:N_CLASSES] for s in native])
    vols: dict[str, float] = {}
    involved: dict[str, int] = {}
    max_slice: dict[str, int | None] = {}
    for c, name in enumerate(CLASSES, start=1):
        vols[name] = round(float(ml[c]), 2)
        involved[name] = int(np.count_nonzero(counts[:, c]))
        max_slice[name] = int(counts[:, c].argmax()) if counts[:, c].any() else None
    return BlastCtOutput(labels=native, sop_uids=volume.native.sop_uids, volumes_ml=vols, slices_involved=involved,
                         max_slice=max_slice, timings=timings, device=device, fallback_note=note,
                         precision=precision, members=members, tile=tile, tiles_run=tiles_run,
                         tiles_constant=tiles_constant, grid_labels=grid if keep_grid else None)


class BlastCt:
    """A loaded BLAST-CT pack ready to analyse volumes on one device."""

    def __init__(
        self,
        pack: ModelPack,
        core: ov.Core | None = None,
        device: str = "CPU",
        *,
        precision: str | None = None,
        tile: int | None = None,
        members: int | None = None,
        member_order: Sequence[str] | None = None,
        skip_constant: bool = True,
        native_cells_only: bool = True,
        check_device: bool = True,
        head_at_sampled_voxels: bool = True,
        keep_compiled: bool = False,
    ) -> None:
        self.pack = pack
        self.requested_device = device
        self.device = device  # the device actually used (after a fallback)
        self.fallback_note: str | None = None
        # "int8": mixed INT8 IR; "fp32": FP32 IR, exact; "bf16": FP32 IR with the bf16 hint. Default: the
        # precision that passed the pack's fidelity gate.
        self.precision = precision or str(pack.manifest.get("runtime", {}).get("precision", "int8"))
        if self.precision not in PRECISIONS:
            raise ValueError(f"unknown precision {self.precision!r}")
        self.core = core or ov.Core()
        geometry = pack.manifest.get("input", {})
        self.pack_tile = int(geometry.get("output_patch", CELL))
        self.tile = int(tile or self.pack_tile)
        if self.tile % CELL:
            raise ValueError(f"tile {self.tile} is not a multiple of {CELL}")
        names = [m.name for m in pack.members]
        if member_order:
            unknown = [n for n in member_order if n not in names]
            if unknown:
                raise ValueError(f"unknown ensemble member(s) {unknown}")
            names = list(dict.fromkeys(member_order)) + [n for n in names if n not in member_order]
        self.member_names = names[:members] if members else names
        self.skip_constant = skip_constant
        self.native_cells_only = native_cells_only
        # the split head is exact on CPU (verified there); other devices run the whole model
        self.head_at_sampled_voxels = head_at_sampled_voxels and native_cells_only
        self.keep_compiled = keep_compiled
        self._compiled: dict[tuple[str, tuple[int, int, int] | None], Callable[..., np.ndarray]] = {}
        self._heads: dict[str, ov.InferRequest] = {}
        self.last_tiles: tuple[int, int] = (0, 0)  # tiles run / constant per member, last study
        if check_device:
            # Compile one member now so a failing device falls back (and says so) at load time;
            # members are compiled again per study and released, to bound memory.
            self._compile(self.member_names[0])

    def _config(self, device: str) -> dict[str, str]:
        # Explicit hint: CPUs with native bf16 would otherwise silently run FP32/INT8 IRs in bf16;
        # bf16 is only requested where it is native (elsewhere it would be emulated, slowly).
        if not device.startswith("CPU"):
            return {}
        hint = PRECISIONS[self.precision][1]
        if hint == "bf16" and not self._native_bf16():
            hint = "f32"
        return {"INFERENCE_PRECISION_HINT": hint}

    def _ir_key(self, member: str) -> str:
        """Which IR of the member runs: bf16 runs its own copy if the pack has one, else the FP32 IR."""
        files = next((m.files for m in self.pack.members if m.name == member), {})
        return self.precision if self.precision in files else PRECISIONS[self.precision][0]

    def _native_bf16(self) -> bool:
        try:
            return "BF16" in self.core.get_property("CPU", "OPTIMIZATION_CAPABILITIES")
        except RuntimeError:
            return False

    def _compile(self, member: str, size: tuple[int, int, int] | None = None) -> Callable[[np.ndarray], np.ndarray]:
        """Compile one member for output tiles of ``size``; the pack's own shape goes through
        CompiledModel (device fallback), other shapes reshape the shape-independent IR."""
        xml = self.pack.member_xml(member, self._ir_key(member))
        size = size or (self.pack_tile,) * 3
        if size == (self.pack_tile,) * 3:
            cm = CompiledModel(self.core, xml, self.device, "LATENCY", self._config(self.device))
            if cm.fallback_note:
                self.device, self.fallback_note = cm.device, cm.fallback_note
            return lambda patch: cm.infer(patch)[0]
        model = self.core.read_model(str(xml))
        model.reshape([1, 1, *(n + 2 * MARGIN for n in size)])
        compiled = self.core.compile_model(model, self.device, {"PERFORMANCE_HINT": "LATENCY", **self._config(self.device)})
        request = compiled.create_infer_request()

        def infer(patch: np.ndarray) -> np.ndarray:
            request.infer([patch])
            return request.get_output_tensor(0).data.copy()

        return infer

    @property
    def split_head(self) -> bool:
        """Whether the head runs only at sampled voxels (CPU): a caller that tiles a study
        elsewhere (the cluster) must do the same so its logits are the same bits."""
        return self.head_at_sampled_voxels and self.device.startswith("CPU")

    def compile_tile(self, member: str, size: tuple[int, int, int], split: bool) -> Callable[..., np.ndarray]:
        """One member compiled for output tiles of ``size``: split (``infer(patch, voxels)`` ->
        logits [5, n]) or whole (``infer(patch)`` -> logits [1, 5, D, H, W]). Not kept: the
        caller decides what stays resident."""
        return self._compile_split(member, size) if split else self._compile(member, size)

    def _compile_split(self, member: str, size: tuple[int, int, int]) -> Callable[..., np.ndarray]:
        """The member as pathways for tiles of ``size`` + its head (compiled once per member)."""
        config = {"PERFORMANCE_HINT": "LATENCY", **self._config(self.device)}
        bf16 = config.get("INFERENCE_PRECISION_HINT") == "bf16"
        model = self.core.read_model(str(self.pack.member_xml(member, self._ir_key(member))))
        model.reshape([1, 1, *(n + 2 * MARGIN for n in size)])
        pathways, head = split_model(model, ov.Type.bf16 if bf16 else ov.Type.f32)
        if member not in self._heads:
            self._heads[member] = self.core.compile_model(head, self.device, config).create_infer_request()
        factors = [self._pathway_factor(o, size) for o in pathways.outputs]
        compiled = self.core.compile_model(pathways, self.device, config)
        return SplitMember(compiled, self._heads[member], factors, bf16)

    @staticmethod
    def _pathway_factor(output: ov.Output, size: tuple[int, int, int]) -> int:
        """Upsampling factor of a pathway output (output tile edge / its edge)."""
        edge = output.get_partial_shape()[1].get_length()  # [1, D, H, W, C]
        return size[0] // edge

    def _member_compiler(self, member: str) -> Callable[[tuple[int, int, int]], Callable[..., np.ndarray]]:
        split = self.split_head

        def compile_shape(size: tuple[int, int, int]) -> Callable[..., np.ndarray]:
            key = (member, size)
            if key in self._compiled:
                return self._compiled[key]
            fn = self.compile_tile(member, size, split)
            if self.keep_compiled:
                self._compiled[key] = fn
            return fn

        return compile_shape

    def release(self) -> None:
        """Drop every compiled model kept by ``keep_compiled`` (and the heads)."""
        self._compiled.clear()
        self._heads.clear()

    def probabilities(self, volume: CtVolume, timings: dict[str, float] | None = None,
                      on_member: Callable[[int, np.ndarray], None] | None = None) -> tuple[np.ndarray, int, int]:
        """Summed member softmax [5, Z, Y, X] (float32) plus tiles run / constant per member.

        ``on_member(members_done, acc)`` is called after each member with the sum so far (the
        live array: read it, do not keep a reference). With the split head only voxels some
        native pixel samples (and constant tiles) are filled."""
        timings = timings if timings is not None else {}
        t0 = time.perf_counter()
        x = normalise(volume.hu)
        if self.native_cells_only:
            cells = native_cells(volume)
        else:
            cells = np.ones([-(-s // CELL) for s in volume.shape], dtype=bool)
        if self.tile == CELL and not self.native_cells_only:
            plan: list[Tile] = [(start, (CELL, CELL, CELL)) for start in reference_starts(volume.shape)]
        else:
            plan = plan_tiles(cells, self.tile)
        acc = np.zeros((N_CLASSES,) + volume.shape, dtype=np.float32)
        sampled = sampled_voxels(volume) if self.split_head else None
        timings["prepare"] = time.perf_counter() - t0
        run = constant = 0
        for done, member in enumerate(self.member_names, start=1):
            t1 = time.perf_counter()
            compile_s = 0.0
            compiler = self._member_compiler(member)

            def compile_shape(size: tuple[int, int, int], compiler=compiler) -> Callable[..., np.ndarray]:
                nonlocal compile_s
                tc = time.perf_counter()
                fn = compiler(size)
                compile_s += time.perf_counter() - tc
                return fn

            run, constant = run_tiles(x, compile_shape, plan, acc, self.skip_constant, sampled)
            if not self.keep_compiled:
                self._heads.pop(member, None)
            else:  # kept compiled, but not its working memory: 12 members would hold ~16 GB
                for (name, _), fn in self._compiled.items():
                    if name == member and isinstance(fn, SplitMember):
                        fn.release_memory()
                if member in self._heads:
                    self._heads[member].get_compiled_model().release_memory()
            t2 = time.perf_counter()
            timings["compile"] = timings.get("compile", 0.0) + compile_s
            timings["infer"] = timings.get("infer", 0.0) + (t2 - t1 - compile_s)
            log.debug("%s: %d tiles (+%d constant) in %.1f s", member, run, constant, t2 - t1)
            self.last_tiles = (run, constant)
            if on_member is not None:
                on_member(done, acc)
        return acc, run, constant

    def analyse(self, volume: CtVolume | Sequence, keep_grid: bool = False,
                on_member: Callable[[int, "BlastCtOutput"], None] | None = None) -> BlastCtOutput:
        """Segment one head CT; ``volume`` is a CtVolume or a DICOM series (datasets or paths).

        ``on_member(k, output)`` receives the partial result of the first k members after each
        member but the last (the full ensemble is what this returns)."""
        timings: dict[str, float] = {}
        t0 = time.perf_counter()
        if not isinstance(volume, CtVolume):
            volume = load_ct_volume(volume)
            timings.update(volume.timings)
        ct: CtVolume = volume
        tiles = [0, 0]

        def partial(done: int, acc: np.ndarray) -> None:
            if on_member is not None and done < len(self.member_names):
                on_member(done, self._output(acc, ct, done, tiles, dict(timings), t0, keep_grid))

        try:
            acc, tiles[0], tiles[1] = self.probabilities(volume, timings, partial if on_member else None)
        except (RuntimeError, ValueError) as exc:
            raise InferenceError(f"BLAST-CT inference failed: {exc}") from exc
        return self._output(acc, volume, len(self.member_names), tiles, timings, t0, keep_grid)

    def _output(self, acc: np.ndarray, volume: CtVolume, members: int, tiles: Sequence[int],
                timings: dict[str, float], t0: float, keep_grid: bool) -> BlastCtOutput:
        """Labels, volumes and slice facts from summed softmax ``acc`` of ``members`` members."""
        t1 = time.perf_counter()
        grid = acc.argmax(axis=0).astype(np.uint8)
        out = output_from_grid(grid, volume, timings=timings, device=self.device, note=self.fallback_note,
                               precision=self.precision, members=members, tile=self.tile,
                               tiles_run=int(tiles[0]), tiles_constant=int(tiles[1]), keep_grid=keep_grid)
        t2 = time.perf_counter()
        timings["postprocess"] = t2 - t1
        timings["total"] = t2 - t0
        return out
