"""The third model reaches the screen with no edit to the viewer: a study the test-only "toy-mr"
spec analysed opens in a real ViewerWidget, which reads its overlay through the spec and shows
the toy's own class (name, colour) over the right pixels. No built pack is needed."""

from __future__ import annotations

from pathlib import Path


from app.core.config import Config
from app.core.events import EventHub
from app.core.pipeline import Pipeline
from app.core.store import StudyStore
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

    viewer = ViewerWidget(specs=specs)
    qtbot.addWidget(viewer)
    viewer.resize(900, 700)
    viewer.show()
    viewer.open_study(store, result.study_uid, series)
    qtbot.waitUntil(lambda: viewer.opened is not None and viewer.overlays_ready and viewer.rendered is not None,
                    timeout=10000)
    assert viewer.opened.overlay_note == ""
    assert list(viewer.class_boxes) == [BRIGHT.key]                  # the toy's class, not BLAST-CT's
    box = viewer.class_boxes[BRIGHT.key]
    assert box.isVisible() and box.isChecked() and box.toolTip() == BRIGHT.name
    assert "rgb(%d,%d,%d)" % BRIGHT.colour in box.styleSheet()
    labelled = viewer.opened.labels
    assert labelled is not None and sum(labelled.voxels[BRIGHT.key]) == 32   # 4x4 on two slices
    assert viewer.state.index in (i for i, n in enumerate(labelled.voxels[BRIGHT.key]) if n)  # jumped to it

    frame = viewer.rendered
    assert frame is not None and frame.ndim == 3
    inside, outside = frame[6:10, 6:10].astype(int), frame[0:4, 0:4].astype(int)
    assert (inside[..., 0] > inside[..., 2] + 60).all()              # tinted towards orange (255, 128, 0)
    assert (outside[..., 0] == outside[..., 2]).all()                # untouched grey elsewhere

    box.setChecked(False)                                           # the toy's class toggles like any other
    qtbot.waitUntil(lambda: viewer.rendered is not None and viewer.rendered.ndim == 2
                    or (viewer.rendered[6:10, 6:10, 0] == viewer.rendered[6:10, 6:10, 2]).all(), timeout=5000)
    store.close()
