"""The third model reaches the screen with no edit to the viewer: a study the test-only "toy-mr"
spec analysed opens in a real ViewerWidget, which reads its overlay through the spec and shows
the toy's own class (name, colour) over the right pixels. No built pack is needed."""

from __future__ import annotations

from pathlib import Path

import numpy as np

from app.core.config import Config
from app.core.events import EventHub
from app.core.pipeline import Pipeline
from app.core.store import StudyStore
from tests.support import ui_data
from tests.support.toy_model import BRIGHT, build_toy_pack, mr_series, specs_with_toy, store_series
from ui.viewer import ViewerWidget


def test_the_viewer_shows_a_third_models_overlay_through_its_spec(qtbot, tmp_path: Path) -> None:
    specs = specs_with_toy()
    build_toy_pack(tmp_path / "packs")
    config = Config(data_dir=tmp_path / "data", cache_dir=tmp_path / "cache", packs_dir=tmp_path / "packs",
                    min_free_mb=0).validate(specs.names)
    store = StudyStore(config.data_dir)
    paths, series = mr_series(tmp_path / "in", "MR", bright=True)
    store_series(store, paths)
    pipeline = Pipeline(config, store, EventHub(), specs=specs)
    pipeline.models.load()
    pipeline.run_until_idle()
    result = store.get_result(series)
    assert result is not None and result.status == "done" and result.overlay_path

    head = ui_data.add_ct(store, n=4, size=32)            # a BLAST-CT study in the same store
    labels = np.zeros((4, 32, 32), np.uint8)
    labels[1, 10:20, 10:20] = 1
    ui_data.save_blastct(store, head, labels, "urgent")
    blast_ct = [c.key for c in specs["blast-ct"].label_classes]

    viewer = ViewerWidget(specs=specs)
    qtbot.addWidget(viewer)
    viewer.resize(900, 700)
    viewer.show()

    def open_and_wait(study_uid: str, series_uid: str) -> None:
        viewer.open_study(store, study_uid, series_uid)
        qtbot.waitUntil(lambda: viewer.opened is not None and viewer.opened.series.series_uid == series_uid
                        and viewer.overlays_ready and viewer.rendered is not None, timeout=10000)

    open_and_wait(head.study_uid, head.series_uid)
    assert list(viewer.class_boxes) == blast_ct                       # BLAST-CT's classes first...
    open_and_wait(result.study_uid, series)                           # ...then the toy's replace them
    assert viewer.opened.overlay_note == ""
    assert list(viewer.class_boxes) == [BRIGHT.key]                  # the toy's class, not BLAST-CT's
    box = viewer.class_boxes[BRIGHT.key]
    assert box.isVisible() and box.isChecked() and box.toolTip() == BRIGHT.name
    assert "rgb(%d,%d,%d)" % BRIGHT.colour in box.styleSheet()
    labelled = viewer.opened.labels
    assert labelled is not None and labelled.voxels[BRIGHT.key] == [0, 16, 16, 0]   # 4x4 on slices 2, 3
    assert viewer.state.index in (i for i, n in enumerate(labelled.voxels[BRIGHT.key]) if n)  # jumped to it

    frame = viewer.rendered
    assert frame is not None and frame.ndim == 3
    inside, outside = frame[6:10, 6:10].astype(int), frame[0:4, 0:4].astype(int)
    assert (inside[..., 0] > inside[..., 2] + 60).all()              # tinted towards orange (255, 128, 0)
    assert (outside[..., 0] == outside[..., 2]).all()                # untouched grey elsewhere

    box.setChecked(False)                                           # the toy's class toggles like any other
    hidden = viewer.rendered
    assert hidden is not None and (hidden.ndim == 2 or (hidden[6:10, 6:10, 0] == hidden[6:10, 6:10, 2]).all())

    open_and_wait(head.study_uid, head.series_uid)                    # and back: BLAST-CT's own again
    assert list(viewer.class_boxes) == blast_ct and viewer.index == 1
    iph = viewer.rendered[12:18, 12:18].reshape(-1, 3).astype(int)
    assert (iph[:, 0] > iph[:, 2] + 40).all()                         # IPH red, as before the toy
    viewer.shutdown()
    store.close()
