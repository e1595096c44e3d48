"""A chest radiograph through the real pipeline and the real CheXNet pack."""

from __future__ import annotations

from dataclasses import replace
from pathlib import Path

import numpy as np

from app.core.config import Config
from app.core.events import EventHub
from app.core.pipeline import Pipeline
from app.core.store import StudyStore
from inference.cam import cam_to_image
from inference.chexnet import Chexnet
from inference.cxr_input import load_cxr
from inference.packs import load_pack
from tests.support.dicom_factory import make_cxr_dataset, write


def test_radiograph_result_overlay_and_unvalidated_marking(data_dir: Path, cxr_dir: Path, packs_dir: Path,
                                                           tmp_path: Path) -> None:
    store = StudyStore(data_dir)
    ds = make_cxr_dataset(cxr_dir / "images/00000211_000.png", modality="CR", photometric="MONOCHROME1")
    path = write(ds, tmp_path)
    series_uid = store.store_instance(path.read_bytes(), "CR01").header.series_uid
    store.enqueue_job(series_uid)
    config = replace(Config(), data_dir=data_dir, packs_dir=packs_dir, cache_dir=tmp_path / "cache")
    pipeline = Pipeline(config, store, EventHub())
    pipeline.models.load()
    pipeline.run_until_idle()

    result = store.get_result(series_uid)
    assert result.status == "done" and result.model == "chexnet"
    pack = load_pack(packs_dir / "chexnet")
    assert result.validated is pack.validated
    if not pack.validated:  # a random-init pack never drives triage and says so in its summary
        assert result.priority == "routine"
        assert result.summary.startswith("UNVALIDATED")
    probs = result.findings["probabilities"]
    assert list(probs) == pack.labels and all(0.0 <= p <= 1.0 for p in probs.values())
    assert {"decode", "preprocess", "infer", "total", "arrival_to_result"} <= set(result.timings)

    # The stored 7x7 CAM turns into exactly the heatmap the runtime draws at image size.
    with np.load(store.abs_path(result.overlay_path)) as overlay:
        raw, shape = overlay["cam_raw"], tuple(int(v) for v in overlay["shape"])
        assert raw.shape == (14, 7, 7) and shape == (1024, 1024)
    model = Chexnet(pack, device="CPU")
    full = model.analyse(load_cxr(path)).cam
    hottest = int(np.argmax([probs[label] for label in pack.labels]))
    np.testing.assert_array_equal(cam_to_image(raw[hottest:hottest + 1], *shape)[0], full[hottest])
