"""Overlay records a viewer can draw, read from a result's overlay file without Qt.

Each model's spec reads its own file into one of these; the viewer only knows the record
kinds (a heatmap per finding, a label volume with named, coloured classes), not the models.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass
from pathlib import Path

import numpy as np

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class HeatmapOverlay:
    """One heatmap per finding over a 2-D image (CheXNet's class-activation maps).

    ``cam_raw`` is the model-resolution map the viewer upsamples for the finding it shows
    (``inference.cam.cam_to_image``); results written before that stored ``cam`` at image size.
    """

    labels: tuple[str, ...]
    shape: tuple[int, int]               # (rows, cols) of the image
    cam_raw: np.ndarray | None = None    # float32 [n_labels, h, w]
    cam: np.ndarray | None = None        # uint8 [n_labels, rows, cols]


@dataclass(frozen=True)
class LabelClass:
    key: str                          # the label as in findings and thresholds
    name: str                         # what a radiologist reads
    colour: tuple[int, int, int]      # RGB


@dataclass(frozen=True)
class SlicedLabels:
    """A label volume in the viewer's slice order (None where a displayed slice has no labels)."""

    by_slice: list[np.ndarray | None]
    voxels: dict[str, list[int]]      # per class key, labelled voxels per displayed slice


@dataclass(frozen=True)
class LabelVolumeOverlay:
    """A segmentation of a volume; voxel value k (1-based) is ``classes[k - 1]``, 0 is background."""

    labels: np.ndarray                # uint8 [slices, rows, cols], in the order of ``sop_uids``
    sop_uids: tuple[str, ...]
    classes: tuple[LabelClass, ...]

    @property
    def class_keys(self) -> tuple[str, ...]:
        return tuple(c.key for c in self.classes)

    def on_slices(self, sop_order: list[str]) -> SlicedLabels:
        """Map the volume (ordered by its own SOP UIDs) onto the displayed slices."""
        where = {sop: i for i, sop in enumerate(self.sop_uids)}
        by_slice: list[np.ndarray | None] = []
        voxels: dict[str, list[int]] = {c.key: [] for c in self.classes}
        for sop in sop_order:
            i = where.get(sop)
            plane = self.labels[i] if i is not None else None
            by_slice.append(plane)
            for k, c in enumerate(self.classes, start=1):
                voxels[c.key].append(int(np.count_nonzero(plane == k)) if plane is not None else 0)
        missing = sum(1 for p in by_slice if p is None)
        if missing:
            log.info("%d displayed slice(s) have no label slice", missing)
        return SlicedLabels(by_slice=by_slice, voxels=voxels)


Overlay = HeatmapOverlay | LabelVolumeOverlay


def read_label_volume(path: Path, known: dict[str, LabelClass], default_keys: tuple[str, ...]) -> LabelVolumeOverlay:
    """Read ``labels``/``sop_uids``/``classes`` arrays; names and colours come from the spec."""
    with np.load(path, allow_pickle=False) as data:
        labels = np.asarray(data["labels"], dtype=np.uint8)
        sops = tuple(str(x) for x in data["sop_uids"])
        keys = tuple(str(x) for x in data["classes"]) if "classes" in data.files else default_keys
    if labels.ndim != 3 or labels.shape[0] != len(sops):
        raise ValueError(f"{path.name}: labels {labels.shape} do not match {len(sops)} slice UIDs")
    classes = tuple(known.get(key, LabelClass(key, key, (255, 0, 255))) for key in keys)
    return LabelVolumeOverlay(labels=labels, sop_uids=sops, classes=classes)

