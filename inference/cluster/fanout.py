"""BLAST-CT as member x tile work items, summed exactly as ``inference.blastct.run_tiles`` sums them.

The local runtime adds, per member in pack order, each tile's softmax into one float32
accumulator; tiles of one member never overlap, so each voxel sums the members in member
order. Work items here may finish in any order on any replica, but they are *added* in the
local order (member, then tile shape, then start), so the summed probabilities and hence the
labels are bit-identical to the local run. A constant tile (all input at the window floor)
reuses one output vector per member, computed at the tile shape the local code would use.

With ``sampled`` (the voxels some native pixel samples, ``inference.blastct.sampled_voxels``) an
item computes and returns only those voxels of its tile, as the local split head does: the
same logits, ~15 % of the bytes.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Callable, Sequence

import numpy as np

from inference.blastct import (
    N_CLASSES,
    Tile,
    _take_patch,
    constant_softmax,
    destination,
    source,
    tile_softmax,
    tile_voxels,
)

Size = tuple[int, int, int]
Start = tuple[int, int, int]


@dataclass(frozen=True)
class WorkItem:
    """One member on one tile; ``constant``: the member's output for an all-floor input of ``size``."""

    member: str
    size: Size
    start: Start
    constant: bool = False


@dataclass(frozen=True)
class TileGroup:
    """The planned tiles of one shape, split into the ones to infer and the constant ones."""

    size: Size
    run: tuple[Start, ...]
    constant: tuple[Start, ...]


def item_output(infer: Callable[..., np.ndarray], x: np.ndarray, item: "WorkItem",
                sampled: np.ndarray | None, split: bool) -> np.ndarray:
    """One work item's softmax, computed as ``run_tiles`` computes it (the same helpers): the
    constant [5] vector, the tile's destination box [5, d, h, w], or (``sampled``) [5, n] at the
    tile's sampled voxels. ``split``: ``infer`` is a split member; otherwise the whole model,
    whose full output is indexed (the same logits per voxel)."""
    if item.constant:
        return constant_softmax(infer, item.size, split)
    patch = _take_patch(x, item.start, item.size)[None, None]
    if sampled is None:
        dst = destination(item.start, item.size, x.shape)
        return tile_softmax(infer, patch, None, split)[(slice(None),) + source(item.start, dst)]
    local, _ = tile_voxels(sampled, item.start, item.size)
    if not local[0].size:
        return np.zeros((N_CLASSES, 0), np.float32)
    return tile_softmax(infer, patch, local, split)


def group_tiles(x: np.ndarray, plan: Sequence[Tile], skip_constant: bool = True) -> list[TileGroup]:
    """The tile groups in ``run_tiles`` order (shapes sorted, starts in plan order)."""
    by_size: dict[Size, list[Start]] = {}
    for start, size in plan:
        dst = destination(start, size, x.shape)
        if all(d.stop > d.start for d in dst):
            by_size.setdefault(tuple(size), []).append(tuple(start))  # type: ignore[arg-type]
    groups = []
    for size, starts in sorted(by_size.items()):
        run: list[Start] = []
        constant: list[Start] = []
        for start in starts:
            if skip_constant and _take_patch(x, start, size).max() <= -1.0:
                constant.append(start)
            else:
                run.append(start)
        groups.append(TileGroup(size, tuple(run), tuple(constant)))
    return groups


def work_items(members: Sequence[str], groups: Sequence[TileGroup]) -> list[WorkItem]:
    """Every item in the order its output is added (per member: the constant vector first, at the
    shape of the first group with a constant tile, as ``run_tiles`` computes it)."""
    const_size = next((g.size for g in groups if g.constant), None)
    items: list[WorkItem] = []
    for member in members:
        if const_size is not None:
            items.append(WorkItem(member, const_size, (0, 0, 0), constant=True))
        for group in groups:
            items.extend(WorkItem(member, group.size, start) for start in group.run)
    return items


class OrderedSum:
    """The accumulator [5, Z, Y, X]; ``add`` must be called in ``work_items`` order."""

    def __init__(self, shape: Sequence[int], groups: Sequence[TileGroup], sampled: np.ndarray | None = None) -> None:
        self.shape = tuple(shape)
        self.groups = list(groups)
        self.sampled = sampled
        self.acc = np.zeros((N_CLASSES,) + self.shape, dtype=np.float32)

    def add(self, item: WorkItem, output: np.ndarray) -> None:
        """``output``: the softmax over the tile's destination box, or the constant [5] vector."""
        if item.constant:
            # Constant tiles are interleaved with run tiles locally, but tiles never overlap, so
            # adding the member's constant tiles first changes no voxel's sum.
            for group in self.groups:
                for start in group.constant:
                    self.acc[(slice(None),) + destination(start, group.size, self.shape)] += output[:, None, None, None]
            return
        if self.sampled is not None:
            _, grid = tile_voxels(self.sampled, item.start, item.size)
            self.acc[(slice(None),) + grid] += output
            return
        self.acc[(slice(None),) + destination(item.start, item.size, self.shape)] += output

    def labels(self) -> np.ndarray:
        return self.acc.argmax(axis=0).astype(np.uint8)
