"""The models' evidence as the viewer holds it: per-finding heatmaps and label volumes
re-indexed to the displayed slices, made from the model specs' overlay records (the specs read
the files; the viewer knows only the two kinds of record, not the models).

How they are drawn over the image is ``ui.viewing.composition``.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass, field

import numpy as np

from app.core.models import HeatmapOverlay, LabelVolumeOverlay
from inference.cam import cam_to_image

log = logging.getLogger(__name__)

UNKNOWN_CLASS_COLOUR = (255, 0, 255)  # a class its spec gave no colour: magenta, never missed


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

    @classmethod
    def from_heatmap(cls, heatmap: HeatmapOverlay) -> "CamOverlay":
        return cls(labels=list(heatmap.labels), shape=heatmap.shape, cam=heatmap.cam, cam_raw=heatmap.cam_raw)

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
    """Labels re-indexed to the viewer's slice order (None where no label slice), with each
    class's name and colour as its model's spec gives them."""

    by_slice: list[np.ndarray | None]
    classes: tuple[str, ...]
    voxels: dict[str, list[int]] = field(default_factory=dict)  # per class, voxel count per display slice
    names: dict[str, str] = field(default_factory=dict)
    colours: dict[str, tuple[int, int, int]] = field(default_factory=dict)

    @classmethod
    def from_volume(cls, volume: LabelVolumeOverlay, sop_order: list[str]) -> "LabelOverlay":
        sliced = volume.on_slices(sop_order)
        return cls(by_slice=sliced.by_slice, classes=volume.class_keys, voxels=sliced.voxels,
                   names={c.key: c.name for c in volume.classes}, colours={c.key: c.colour for c in volume.classes})

    def colour(self, key: str) -> tuple[int, int, int]:
        return self.colours.get(key, UNKNOWN_CLASS_COLOUR)

    def max_slice(self, classes: set[str] | None = None) -> int | None:
        """Display index with the most labelled voxels of the given classes (all by default)."""
        wanted = [c for c in self.classes if classes is None or c in classes]
        totals = [sum(self.voxels[c][i] for c in wanted) for i in range(len(self.by_slice))]
        if not totals or max(totals) == 0:
            return None
        return int(np.argmax(totals))
