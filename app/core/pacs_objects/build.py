"""``build_result_objects``: the DICOM objects that carry one result back to the PACS.

Dispatches on the result's overlay kind: a label volume gives SEG + SR + key image, a
heatmap (or a classifier without overlay) gives SR + key image. Only "done" results have
objects; not-analysed and failed series send nothing.
"""

from __future__ import annotations

import logging
from pathlib import Path
from typing import Any, Sequence

from app.core.models.collection import ModelSpecs
from app.core.models.overlay import HeatmapOverlay, LabelVolumeOverlay
from app.core.models.overlay_loader import load_overlay
from app.core.pacs_objects.chest import build_chest
from app.core.pacs_objects.common import ObjectContext, read_sources
from app.core.pacs_objects.head_ct import build_head_ct
from app.core.pacs_objects.identity import AlgorithmIdentity
from app.core.pacs_objects.outgoing import OutgoingObject
from app.core.results import AnalysisResult

log = logging.getLogger(__name__)


def build_result_objects(result: AnalysisResult, source_files: Sequence[Path], specs: ModelSpecs,
                         data_dir: Path, uid_root: str | None = None, version: int = 1,
                         supersedes: Sequence[str] = (), pack: Any | None = None,
                         identity: AlgorithmIdentity | None = None) -> list[OutgoingObject]:
    """SR, SEG and SC objects for ``result`` (complete datasets with File Meta), in sending order.

    ``pack`` (an ``inference.packs.ModelPack``) or ``identity`` completes the algorithm's
    identification with the pack hash and precision where the result did not record them. Building is
    deterministic: the same arguments give the same UIDs and content.
    """
    if result.status != "done":
        return []
    if version < 1:
        raise ValueError(f"series version must be >= 1, not {version}")
    ctx = ObjectContext(result=result, identity=identity or AlgorithmIdentity.from_result(result, pack),
                        uid_root=uid_root, version=version, supersedes=tuple(supersedes))
    overlay = load_overlay(specs, result, data_dir)
    sources = read_sources(source_files)
    if isinstance(overlay, LabelVolumeOverlay):
        objects = build_head_ct(ctx, overlay, sources)
    elif isinstance(overlay, HeatmapOverlay) or "probabilities" in (result.findings or {}):
        objects = build_chest(ctx, overlay if isinstance(overlay, HeatmapOverlay) else None, sources)
    else:
        log.warning("series %s: no DICOM objects for results of model %r", result.series_uid, result.model)
        return []
    log.info("series %s: built %s", result.series_uid, ", ".join(o.kind for o in objects))
    return objects
