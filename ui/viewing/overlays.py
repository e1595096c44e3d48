"""The models' evidence as the viewer holds it: CheXNet class-activation maps and BLAST-CT
label volumes re-indexed to the displayed slices, with the readers of their files.

How they are drawn over the image is ``ui.viewing.composition``.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from inference.cam import cam_to_image

log = logging.getLogger(__name__)

BLAST_CT_CLASSES: tuple[str, ...] = ("IPH", "EAH", "oedema", "IVH")
CLASS_NAMES: dict[str, str] = {
    "IPH": "intraparenchymal haemorrhage",
    "EAH": "extra-axial haemorrhage",
    "oedema": "perilesional oedema",
    "IVH": "intraventricular haemorrhage",
}
# Distinct under common colour-vision deficiencies and against grey: red, yellow, green, cyan.
CLASS_COLOURS: dict[str, tuple[int, int, int]] = {
    "IPH": (230, 25, 45),
    "EAH": (255, 215, 0),
    "oedema": (60, 200, 75),
    "IVH": (0, 190, 255),
}


@dataclass
class CamOverlay:
    """CheXNet class-activation maps, one per finding, shown at the radiograph's size.

    Results store the model-resolution map (``cam_raw``, 7x7); the heatmap of the finding
    on screen is upsampled on first use and cached. Image-size ``cam`` arrays still load.
    """

    labels: list[str]
    shape: tuple[int, int]                 # (rows, cols) of the radiograph
    cam: np.ndarray | None = None          # uint8 [n_labels, rows, cols]
    cam_raw: np.ndarray | None = None      # float [n_labels, h, w]
    _cache: dict[int, np.ndarray] = field(default_factory=dict, repr=False)

    def for_label(self, label: str) -> np.ndarray | None:
        if label not in self.labels:
            return None
        index = self.labels.index(label)
        if self.cam is not None:
            return self.cam[index]
        if index not in self._cache:
            assert self.cam_raw is not None
            self._cache[index] = cam_to_image(self.cam_raw[index:index + 1], *self.shape)[0]
        return self._cache[index]


@dataclass
class LabelOverlay:
    """BLAST-CT labels re-indexed to the viewer's slice order (None where no label slice)."""

    by_slice: list[np.ndarray | None]
    classes: tuple[str, ...]
    voxels: dict[str, list[int]] = field(default_factory=dict)  # per class, voxel count per display slice

    def max_slice(self, classes: set[str] | None = None) -> int | None:
        """Display index with the most labelled voxels of the given classes (all by default)."""
        wanted = [c for c in self.classes if classes is None or c in classes]
        totals = [sum(self.voxels[c][i] for c in wanted) for i in range(len(self.by_slice))]
        if not totals or max(totals) == 0:
            return None
        return int(np.argmax(totals))


def load_cam_overlay(path: Path) -> CamOverlay:
    with np.load(path, allow_pickle=False) as data:
        labels = [str(x) for x in data["labels"]]
        if "cam_raw" in data.files:
            raw = np.asarray(data["cam_raw"], dtype=np.float32)
            rows, cols = (int(v) for v in data["shape"])
            if raw.ndim != 3 or raw.shape[0] != len(labels) or rows < 1 or cols < 1:
                raise ValueError(f"{path.name}: cam_raw {raw.shape} / shape {(rows, cols)} do not match {len(labels)} labels")
            return CamOverlay(labels=labels, shape=(rows, cols), cam_raw=raw)
        cam = np.asarray(data["cam"], dtype=np.uint8)
    if cam.ndim != 3 or cam.shape[0] != len(labels):
        raise ValueError(f"{path.name}: cam {cam.shape} does not match {len(labels)} labels")
    return CamOverlay(labels=labels, shape=(int(cam.shape[1]), int(cam.shape[2])), cam=cam)


def load_label_overlay(path: Path, sop_order: list[str]) -> LabelOverlay:
    """Map the label volume (ordered by its own ``sop_uids``) onto the displayed slices."""
    with np.load(path, allow_pickle=False) as data:
        labels = np.asarray(data["labels"], dtype=np.uint8)
        sops = [str(x) for x in data["sop_uids"]]
        classes = tuple(str(x) for x in data["classes"]) if "classes" in data.files else BLAST_CT_CLASSES
    if labels.ndim != 3 or labels.shape[0] != len(sops):
        raise ValueError(f"{path.name}: labels {labels.shape} do not match {len(sops)} slice UIDs")
    where = {sop: i for i, sop in enumerate(sops)}
    by_slice: list[np.ndarray | None] = []
    voxels: dict[str, list[int]] = {c: [] for c in classes}
    for sop in sop_order:
        i = where.get(sop)
        plane = labels[i] if i is not None else None
        by_slice.append(plane)
        for k, c in enumerate(classes, start=1):
            voxels[c].append(int(np.count_nonzero(plane == k)) if plane is not None else 0)
    missing = sum(1 for p in by_slice if p is None)
    if missing:
        log.info("%s: %d displayed slice(s) have no label slice", path.name, missing)
    return LabelOverlay(by_slice=by_slice, classes=classes, voxels=voxels)
