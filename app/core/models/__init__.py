"""One spec per model (``spec.ModelSpec``): everything FirstLook knows about a model.

The composition root calls ``default_specs()`` once and passes the collection down; a test
adds a model with ``default_specs().with_spec(its_spec)``. There is no global registry.
"""

from __future__ import annotations

from app.core.models.blast_ct import BlastCtSpec
from app.core.models.chexnet import ChexnetSpec
from app.core.models.collection import ModelSpecs
from app.core.models.overlay import HeatmapOverlay, LabelClass, LabelVolumeOverlay, Overlay, SlicedLabels
from app.core.models.overlay_loader import load_overlay
from app.core.models.spec import ModelSpec, OverlaySink, ProbeKnobs, ProbeOutcome, Reading, SelfTestProbe

__all__ = [
    "HeatmapOverlay", "LabelClass", "LabelVolumeOverlay", "ModelSpec", "ModelSpecs", "Overlay", "OverlaySink",
    "ProbeKnobs", "ProbeOutcome", "Reading", "SelfTestProbe", "SlicedLabels", "default_specs", "load_overlay",
]


def default_specs() -> ModelSpecs:
    """The models FirstLook ships; chest radiographs first, then head CT."""
    return ModelSpecs((ChexnetSpec(), BlastCtSpec()))
