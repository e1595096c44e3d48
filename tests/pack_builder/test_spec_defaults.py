"""The model specs' default thresholds are what the builders write into the manifests: the
settings dialog shows them when a pack is not built yet, so they must not drift apart."""

from __future__ import annotations

from app.core.models import default_specs
from app.core.models.blast_ct import CLASS_KEYS
from inference.blastct import CLASSES as RUNTIME_CLASSES
from inference.pack_builder import blastct_build, chexnet_build


def test_spec_defaults_match_the_builders() -> None:
    specs = default_specs()
    assert dict(specs[chexnet_build.PACK_NAME].default_thresholds) == {
        label: chexnet_build.DEFAULT_THRESHOLD for label in chexnet_build.LABELS}
    assert list(specs[chexnet_build.PACK_NAME].default_thresholds) == list(chexnet_build.LABELS)
    assert dict(specs[blastct_build.PACK_NAME].default_thresholds) == blastct_build.THRESHOLDS_ML
    assert specs.names == (chexnet_build.PACK_NAME, blastct_build.PACK_NAME)


def test_blast_ct_overlay_classes_are_the_runtime_label_values() -> None:
    assert RUNTIME_CLASSES == CLASS_KEYS  # label value k is CLASSES[k - 1] in both
