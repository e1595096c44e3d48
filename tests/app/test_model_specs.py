"""The spec collection, and the shipped specs' overlay files: same names and arrays as results
written before the specs existed, so existing data dirs keep their overlays."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from app.core.models import HeatmapOverlay, LabelVolumeOverlay, ModelSpecs, default_specs, load_overlay
from app.core.models.blast_ct import BLAST_CT, BlastCtSpec
from app.core.models.chexnet import CHEXNET, ChexnetSpec
from app.core.series_analysis import StoreOverlaySink
from app.core.results import AnalysisResult
from app.core.store import StudyStore
from app.core.synthetic_dicom import synthetic_cxr, synthetic_head_ct


def test_the_collection_is_ordered_immutable_and_rejects_a_second_spec_of_a_name() -> None:
    specs = default_specs()
    assert specs.names == (CHEXNET, BLAST_CT) and CHEXNET in specs and "toy" not in specs
    assert specs.get("toy") is None and specs[BLAST_CT].units == "mL" and specs[CHEXNET].threshold_max == 1.0
    with pytest.raises(ValueError, match="two model specs are named chexnet"):
        specs.with_spec(ChexnetSpec())
    assert default_specs() is not specs and default_specs() == specs  # built fresh, never shared
    with pytest.raises(KeyError):
        ModelSpecs(())["chexnet"]


def test_chexnet_overlay_file_is_unchanged_and_reads_as_a_heatmap(data_dir: Path, tmp_path: Path) -> None:
    from inference.chexnet import ChexnetOutput

    spec = ChexnetSpec()
    film = spec.load_input([synthetic_cxr(tmp_path)])
    labels = list(spec.default_thresholds)
    raw = np.random.default_rng(0).normal(size=(len(labels), 7, 7)).astype(np.float64)
    output = ChexnetOutput(labels=labels, probabilities={k: 0.1 for k in labels}, thresholds={}, flagged=[],
                           cam=None, cam_raw=raw, timings={}, device="CPU", fallback_note=None, validated=True,
                           model_version="1")
    store = StudyStore(data_dir)
    path = spec.write_overlay(film, output, StoreOverlaySink(store, "1.2.3"))
    assert path == data_dir / "results" / "1.2.3" / "cam.npz"
    with np.load(path) as data:
        assert sorted(data.files) == ["cam_raw", "labels", "shape"]
        assert data["cam_raw"].dtype == np.float32 and data["shape"].tolist() == [640, 640]
        assert data["labels"].tolist() == labels
    result = AnalysisResult("1.2.3", "1.2", "done", "routine", model=CHEXNET, overlay_path="results/1.2.3/cam.npz")
    overlay = load_overlay(default_specs(), result, data_dir)
    assert isinstance(overlay, HeatmapOverlay) and overlay.shape == (640, 640) and overlay.labels == tuple(labels)
    assert overlay.cam_raw is not None and np.allclose(overlay.cam_raw, raw)
    assert list(store.tmp_dir.iterdir()) == []
    store.close()


def test_blast_ct_overlay_file_is_unchanged_and_reads_as_named_coloured_labels(data_dir: Path, tmp_path: Path) -> None:
    from inference.blastct import BlastCtOutput

    spec = BlastCtSpec()
    volume = spec.load_input(synthetic_head_ct(tmp_path))
    n = len(volume.sop_uids)
    labels = np.zeros((n, 64, 64), np.uint8)
    labels[3, 10:14, 10:12] = 1
    labels[4, 20:22, 20:22] = 4
    output = BlastCtOutput(labels=labels, sop_uids=volume.sop_uids, volumes_ml={}, slices_involved={}, max_slice={},
                           timings={}, device="CPU", fallback_note=None, precision="int8", members=1, tile=90,
                           tiles_run=1, tiles_constant=0)
    store = StudyStore(data_dir)
    path = spec.write_overlay(volume, output, StoreOverlaySink(store, "1.2.4"))
    assert path.name == "labels.npz"
    with np.load(path) as data:
        assert sorted(data.files) == ["classes", "labels", "sop_uids"]
        assert data["classes"].tolist() == ["IPH", "EAH", "oedema", "IVH"]
        assert data["sop_uids"].tolist() == list(volume.sop_uids)
    result = AnalysisResult("1.2.4", "1.2", "done", "urgent", model=BLAST_CT, overlay_path="results/1.2.4/labels.npz")
    overlay = load_overlay(default_specs(), result, data_dir)
    assert isinstance(overlay, LabelVolumeOverlay)
    assert [(c.key, c.name) for c in overlay.classes][0] == ("IPH", "intraparenchymal haemorrhage")
    sliced = overlay.on_slices(list(volume.sop_uids) + ["1.9.9"])  # a displayed slice without labels
    assert sliced.voxels["IPH"][3] == 8 and sliced.voxels["IVH"][4] == 4 and sliced.by_slice[-1] is None
    unknown = AnalysisResult("1.2.4", "1.2", "done", "urgent", model="retired-model", overlay_path=result.overlay_path)
    assert load_overlay(default_specs(), unknown, data_dir) is None
    store.close()
