"""Reading a result's overlay for the viewer through its model's spec (``app.core.models``):
the viewer turns the spec's record into what it draws, whatever the model.

Blocking: run it on a task thread, never on the GUI thread.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass
from pathlib import Path

from app.core.results import AnalysisResult
from ui.viewing.image_loader import SeriesGeometry
from app.core.models import HeatmapOverlay, LabelVolumeOverlay, ModelSpecs
from app.core.models import load_overlay as read_overlay_record
from ui.viewing.overlays import CamOverlay, LabelOverlay

log = logging.getLogger(__name__)


@dataclass
class LoadedOverlay:
    """The evidence, or why there is none to show (``note``: shown to the radiologist)."""

    cam: CamOverlay | None = None
    labels: LabelOverlay | None = None
    note: str = ""


def load_overlay(specs: ModelSpecs, result: AnalysisResult, data_dir: Path, geometry: SeriesGeometry) -> LoadedOverlay:
    """The result's overlay, mapped onto the displayed slices; never raises for a bad file."""
    out = LoadedOverlay()
    if not result.overlay_path:
        return out
    try:
        record = read_overlay_record(specs, result, data_dir)
    except (OSError, ValueError, KeyError) as exc:
        log.warning("overlay %s unreadable: %s", result.overlay_path, exc)
        out.note = f"overlay could not be read: {exc}"
        return out
    if isinstance(record, LabelVolumeOverlay):
        out.labels = LabelOverlay.from_volume(record, [s.sop_uid for s in geometry.slices])
    elif isinstance(record, HeatmapOverlay):
        if record.shape != (geometry.rows, geometry.cols):
            out.note = (f"heatmap size {record.shape} does not match the image "
                        f"{(geometry.rows, geometry.cols)}; not shown")
        else:
            out.cam = CamOverlay.from_heatmap(record)
    elif record is None and result.model not in specs.names:
        out.note = f"no model {result.model!r} here to read its overlay"
    return out
