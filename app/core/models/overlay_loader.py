"""Read a result's overlay file through the spec of the model that wrote it (Qt-free)."""

from __future__ import annotations

import logging
from pathlib import Path
from typing import Protocol

from app.core.models.collection import ModelSpecs
from app.core.models.overlay import Overlay

log = logging.getLogger(__name__)


class HasOverlay(Protocol):
    """The two fields of an ``AnalysisResult`` the loader reads."""

    model: str | None
    overlay_path: str | None


def load_overlay(specs: ModelSpecs, result: HasOverlay, data_dir: Path) -> Overlay | None:
    """The result's overlay, or None when it has none or no spec knows its model.

    Raises ``OSError`` or ``ValueError`` for a missing or unreadable file, so the viewer can
    say "overlay could not be read" next to the image.
    """
    if not result.overlay_path:
        return None
    spec = specs.get(result.model)
    if spec is None:
        log.warning("no model spec for %r; overlay %s not shown", result.model, result.overlay_path)
        return None
    return spec.read_overlay(Path(data_dir) / result.overlay_path)
