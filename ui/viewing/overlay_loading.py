"""Reading a result's overlay file for the viewer: the one place that knows which file is
which model's evidence (the per-model specs will take this over).

Blocking: run it on a task thread, never on the GUI thread.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass
from pathlib import Path

from app.core.results import AnalysisResult
from ui.viewing.image_loader import SeriesGeometry
from ui.viewing.overlays import CamOverlay, LabelOverlay, load_cam_overlay, load_label_overlay

log = logging.getLogger(__name__)


@dataclass
class LoadedOverlay:
    """The evidence, or why there is none to show (``note``: shown to the radiologist)."""

    cam: CamOverlay | None = None
    labels: LabelOverlay | None = None
    note: str = ""


def load_overlay(result: AnalysisResult, data_dir: Path, geometry: SeriesGeometry) -> LoadedOverlay:
    """The result's overlay file, mapped onto the displayed slices; never raises for a bad file."""
    out = LoadedOverlay()
    if not result.overlay_path:
        return out
    path = Path(data_dir) / result.overlay_path
    try:
        if Path(result.overlay_path).name == "labels.npz":
            out.labels = load_label_overlay(path, [s.sop_uid for s in geometry.slices])
        else:
            cam = load_cam_overlay(path)
            if cam.shape != (geometry.rows, geometry.cols):
                out.note = (f"heatmap size {cam.shape} does not match the image "
                            f"{(geometry.rows, geometry.cols)}; not shown")
            else:
                out.cam = cam
    except (OSError, ValueError, KeyError) as exc:
        log.warning("overlay %s unreadable: %s", path, exc)
        out.note = f"overlay could not be read: {exc}"
    return out
