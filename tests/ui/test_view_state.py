"""The viewer's rules without Qt: slice scrolling, window presets and drags, what evidence is
shown and how, and the composed frame pixel by pixel. Real stored DICOM and real overlay files
(no model pack, no display): the state is opened exactly as the viewer opens it."""

from __future__ import annotations

import subprocess
import sys
from collections.abc import Callable
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from app.core.models import default_specs
from app.core.store import StudyStore
from tests.support import REPO, ui_data
from tests.support.dicom_factory import make_cxr_dataset
from ui.viewing.camera import MAX_ZOOM, MIN_ZOOM, Camera
from ui.viewing.composition import FrameRecipe, LabelLayer, compose_frame
from ui.viewing.events import Emitter
from ui.viewing.image_loader import load_slice
from ui.viewing.opened_series import prepare_series
from ui.viewing.overlay_loading import load_overlay
from ui.viewing.presets import AS_STORED, PRESETS
from ui.viewing.view_state import ViewState

SPECS = default_specs()
BLAST_CT_CLASSES = SPECS["blast-ct"].label_classes
ALL_CLASSES = frozenset(c.key for c in BLAST_CT_CLASSES)
COLOURS = {c.key: c.colour for c in BLAST_CT_CLASSES}

IPH_BOX = (slice(30, 50), slice(55, 75))   # rows, cols of the IPH blob on slices 4..7


class Recorder:
    """Every event the state emits, in order, as (event name, value)."""

    def __init__(self, state: ViewState) -> None:
        self.seen: list[tuple[str, object]] = []
        for name, emitter in vars(state.events).items():
            emitter.connect(self._recorder(name))
        state.camera.changed.connect(self._recorder("camera"))

    def _recorder(self, name: str) -> Callable[[object], None]:
        return lambda value: self.seen.append((name, value))

    def names(self) -> list[str]:
        return [name for name, _ in self.seen]

    def clear(self) -> None:
        self.seen.clear()


def ct_with_labels(store: StudyStore, n: int = 12, size: int = 96) -> ui_data.Stored:
    stored = ui_data.add_ct(store, n=n, size=size, bleed_slices=range(4, 8))
    labels = np.zeros((n, size, size), np.uint8)
    labels[4:8, IPH_BOX[0], IPH_BOX[1]] = 1     # IPH on slices 4..7
    labels[6, 30:50, 10:25] = 1                # slice 6 has the most IPH
    labels[5:7, 70:80, 40:60] = 4              # IVH on slices 5 and 6
    ui_data.save_blastct(store, stored, labels, "urgent")
    return stored


def open_state(store: StudyStore, stored: ui_data.Stored, with_overlay: bool = True) -> ViewState:
    """What the viewer does on its task thread and then on the GUI thread, minus the threads."""
    state = ViewState()
    opened = prepare_series(store, stored.study_uid, stored.series_uid)
    state.open(opened)
    if with_overlay and opened.result is not None:
        state.set_overlays(load_overlay(SPECS, opened.result, store.data_dir, opened.geometry))
    return state


def frame(state: ViewState) -> np.ndarray:
    assert state.opened is not None
    pixels = load_slice(state.opened.geometry.slices[state.index].path)
    return compose_frame(pixels, state.frame_recipe())


def grey_everywhere(img: np.ndarray) -> bool:
    return img.ndim == 2 or bool((img[..., 0] == img[..., 1]).all() and (img[..., 1] == img[..., 2]).all())


# -- composition ---------------------------------------------------------------------------------
def test_frame_at_a_known_window_has_known_pixel_values():
    hu = np.array([[-1000, 0, 20, 40], [60, 79, 80, 1000]], dtype=np.int16)
    grey = compose_frame(hu, FrameRecipe(window=(40.0, 80.0)))
    # lower edge 0 HU -> 0, upper edge 80 HU -> 255, linear (truncated) in between
    assert grey.dtype == np.uint8 and grey.ndim == 2
    assert grey.tolist() == [[0, 0, 63, 127], [191, 251, 255, 255]]
    inverted = compose_frame(hu, FrameRecipe(window=(40.0, 80.0), invert=True))
    assert (inverted == 255 - grey).all()
    # a width below 1 is taken as 1: a hard threshold at the centre
    assert compose_frame(hu, FrameRecipe(window=(40.0, 0.0))).tolist() == [[0, 0, 0, 127], [255, 255, 255, 255]]


def test_fill_and_outline_differ_only_where_the_labels_are():
    pixels = np.full((20, 20), 40, np.int16)          # mid grey at (40, 80)
    plane = np.zeros((20, 20), np.uint8)
    plane[5:15, 5:15] = 1
    classes = ("IPH", "EAH", "oedema", "IVH")
    fill = compose_frame(pixels, FrameRecipe((40.0, 80.0), labels=LabelLayer(plane, classes, ALL_CLASSES, "fill", COLOURS),
                                             opacity=0.5))
    line = compose_frame(pixels, FrameRecipe((40.0, 80.0), labels=LabelLayer(plane, classes, ALL_CLASSES, "outline", COLOURS),
                                             opacity=0.5))
    mask = plane > 0
    assert (fill[~mask] == line[~mask]).all() and (fill[~mask] == 127).all()    # outside: untouched grey
    assert (fill[10, 10] == [178, 76, 86]).all()        # interior filled: halfway from 127 to red (230, 25, 45)
    assert (line[10, 10] == 127).all()                  # outline leaves the interior clear
    assert (line[5, 10] == [230, 25, 45]).all()         # ... and draws the border in full colour
    hidden = compose_frame(pixels, FrameRecipe((40.0, 80.0), labels=LabelLayer(plane, classes, frozenset(), "fill")))
    assert hidden.ndim == 2                             # no class shown: the plain grey frame


def test_heatmap_alpha_follows_activation_and_opacity():
    pixels = np.full((10, 10), 40, np.int16)
    cam = np.zeros((10, 10), np.uint8)
    cam[:, 5:] = 255
    low = compose_frame(pixels, FrameRecipe((40.0, 80.0), cam=cam, opacity=0.2))
    high = compose_frame(pixels, FrameRecipe((40.0, 80.0), cam=cam, opacity=0.9))
    assert (low[:, :5] == 127).all() and (high[:, :5] == 127).all()        # cold: clear at any opacity
    tint = lambda img: np.abs(img[:, 5:, 0].astype(int) - img[:, 5:, 2]).mean()  # noqa: E731
    assert tint(high) > tint(low) + 50


# -- the state of an open study ------------------------------------------------------------------
def test_slice_scrolling_clamps_and_notifies_once_per_change(store):
    stored = ui_data.add_ct(store, n=15, size=32)
    state = open_state(store, stored)
    events = Recorder(state)
    assert state.index == 0 and state.n_slices == 15
    state.set_slice(-3)                       # already at the first slice: nothing happens
    state.step_slice(-1)
    assert events.seen == []
    state.set_slice(100)
    assert state.index == 14 and events.seen == [("slice", 14)]
    state.set_slice(14)
    state.step_slice(10)
    assert events.seen == [("slice", 14)]
    state.step_slice(-10)
    assert state.index == 4 and events.seen[-1] == ("slice", 4) and len(events.seen) == 2
    assert state.slice_caption().startswith("Image 5 / 15 · 20.0 mm")
    assert [s.sop_uid for s in state.opened.geometry.slices] == stored.sop_uids   # ordered along the normal


def test_presets_and_drags_set_the_window(store):
    stored = ui_data.add_ct(store, n=3, size=32)
    state = open_state(store, stored)
    events = Recorder(state)
    assert state.window == (40.0, 80.0) and state.preset == AS_STORED   # the file's window
    state.apply_preset("Bone")
    assert state.window == PRESETS["Bone"] and state.preset == "Bone"
    assert events.seen == [("window", PRESETS["Bone"]), ("preset", "Bone")]
    events.clear()
    state.apply_preset("Bone")                     # the same again: no news
    assert events.seen == []
    centre, width = state.window
    state.drag_window(64, 0)                       # right widens
    assert state.window[1] > width and state.window[0] == centre
    state.drag_window(0, 64)                       # down raises the level
    assert state.window[0] > centre
    assert events.names() == ["window", "window"]
    state.apply_preset(AS_STORED)
    assert state.window == (40.0, 80.0)


def test_a_file_without_a_window_gets_one_from_its_pixels(store, tmp_path):
    png = tmp_path / "ramp.png"
    Image.fromarray(np.tile(np.arange(256, dtype=np.uint8), (64, 1))).save(png)
    ds = make_cxr_dataset(png, window=False, patient_name="NO^WINDOW")
    store.store_instance(ui_data.encode(ds), calling_ae="CR01")
    state = open_state(store, ui_data.Stored(str(ds.StudyInstanceUID), str(ds.SeriesInstanceUID), []))
    assert state.needs_auto_window
    pixels = load_slice(state.opened.geometry.slices[0].path)
    assert state.settle_auto_window(pixels) and not state.needs_auto_window
    assert state.window[0] == pytest.approx(4095 / 2, rel=0.05) and state.window[1] > 3000
    assert not state.settle_auto_window(pixels)     # once only: the reader's window is kept
    state.apply_preset("Brain")
    state.apply_preset(AS_STORED, pixels)           # "as stored" on such a file: from the pixels again
    assert state.window[0] == pytest.approx(4095 / 2, rel=0.05)


def test_labels_open_on_the_worst_slice_and_toggle_by_class(store):
    stored = ct_with_labels(store)
    state = ViewState()
    opened = prepare_series(store, stored.study_uid, stored.series_uid)
    state.open(opened)
    assert not state.overlays_ready and state.index == 0
    events = Recorder(state)
    state.set_overlays(load_overlay(SPECS, opened.result, store.data_dir, opened.geometry))
    assert state.overlays_ready and state.index == 6                 # straight to the evidence
    assert events.names() == ["overlays"]
    assert "IPH, IVH" in state.slice_caption()

    img = frame(state)
    assert (img[35:45, 60:70, 0] > img[35:45, 60:70, 2] + 40).all()  # IPH red
    assert (img[72:78, 45:55, 2] > img[72:78, 45:55, 0] + 40).all()  # IVH cyan
    assert grey_everywhere(img[0:20])                                 # nothing elsewhere

    events.clear()
    state.set_class_shown("IPH", False)
    state.set_class_shown("IPH", False)
    assert events.seen == [("classes_shown", ALL_CLASSES - {"IPH"})]
    img = frame(state)
    assert grey_everywhere(img[35:45, 60:70])
    state.jump_to_max()
    assert state.index == 5                        # IVH only: slices 5 and 6 tie, the first wins

    state.toggle_overlay()                         # H: some shown -> none
    assert state.classes_shown == frozenset() and grey_everywhere(frame(state))
    state.toggle_overlay()                         # none -> all
    assert state.classes_shown == ALL_CLASSES


def test_reader_who_moved_on_is_not_jumped(store):
    stored = ct_with_labels(store)
    state = ViewState()
    opened = prepare_series(store, stored.study_uid, stored.series_uid)
    state.open(opened)
    state.set_slice(2)
    state.set_overlays(load_overlay(SPECS, opened.result, store.data_dir, opened.geometry))
    assert state.index == 2


def test_fill_outline_and_opacity_change_the_frame_only_where_the_labels_are(store):
    stored = ct_with_labels(store)
    state = open_state(store, stored)
    labels = state.opened.labels.by_slice[state.index]
    inside = labels > 0
    fill = frame(state)
    events = Recorder(state)
    state.toggle_label_style()
    assert state.label_style == "outline" and events.seen == [("label_style", "outline")]
    line = frame(state)
    changed = (fill != line).any(axis=2)
    assert changed.any() and not (changed & ~inside).any()          # only label pixels change
    assert line[40, 65, 0] == line[40, 65, 2]                       # interior clear
    assert line[30, 65, 0] > line[30, 65, 2] + 40                   # border coloured
    state.set_label_style("fill")

    state.set_opacity(0.9)
    state.set_opacity(0.9)
    state.set_opacity(7)                                            # clamped to 1.0
    assert state.opacity == 1.0
    assert [v for n, v in events.seen if n == "opacity"] == [0.9, 1.0]
    strong = frame(state)
    changed = (strong != fill).any(axis=2)
    assert changed.any() and not (changed & ~inside).any()
    with pytest.raises(ValueError):
        state.set_label_style("hatched")  # type: ignore[arg-type]


def test_heatmap_of_the_selected_finding_on_a_radiograph(store, tmp_path):
    png = tmp_path / "film.png"
    Image.fromarray(np.full((128, 128), 100, np.uint8)).save(png)
    stored = ui_data.add_cxr(store, png, "HEAT^MAP")
    box = (32, 64, 40, 96)
    cam = ui_data.cam_with_hotspot(128, 128, ui_data.CHEXNET_LABELS.index("Pneumothorax"), box)
    ui_data.save_chexnet(store, stored, {"Pneumothorax": 0.91, "Effusion": 0.3}, "critical", cam=cam)
    state = open_state(store, stored)
    assert state.findings()[0] == ("Pneumothorax", pytest.approx(0.91)) and state.finding == "Pneumothorax"
    r0, r1, c0, c1 = box
    img = frame(state)
    assert np.abs(img[r0 + 4:r1 - 4, c0 + 4:c1 - 4, 0].astype(int) - img[r0 + 4:r1 - 4, c0 + 4:c1 - 4, 2]).min() > 20
    assert grey_everywhere(img[r1 + 4:])
    events = Recorder(state)
    state.toggle_overlay()                           # H on a radiograph: the heatmap
    assert events.seen == [("heatmap_shown", False)] and state.frame_recipe().cam is None
    assert grey_everywhere(frame(state))
    state.toggle_overlay()
    state.select_finding("Effusion")                 # its map is empty: a clean image
    assert grey_everywhere(frame(state))
    assert events.names() == ["heatmap_shown", "heatmap_shown", "finding"]


def test_reopening_a_reread_result_keeps_slice_window_and_how_evidence_is_shown(store):
    stored = ct_with_labels(store)
    state = open_state(store, stored)
    state.set_slice(3)
    state.apply_preset("Stroke")
    state.set_opacity(0.8)
    state.camera.zoom_by(2.0)
    events = Recorder(state)
    reread = prepare_series(store, stored.study_uid, stored.series_uid)
    state.open(reread, keep=(state.index, state.window))
    assert events.names() == ["series"]               # one coarse event: re-read everything
    assert (state.index, state.window, state.preset) == (3, PRESETS["Stroke"], "Stroke")
    assert state.opacity == 0.8 and state.camera.zoom == 2.0
    state.set_overlays(load_overlay(SPECS, reread.result, store.data_dir, reread.geometry), jump=False)
    assert state.index == 3
    state.open(prepare_series(store, stored.study_uid, stored.series_uid))   # opened afresh
    assert (state.index, state.window, state.preset, state.camera.zoom) == (0, (40.0, 80.0), AS_STORED, 1.0)
    assert state.opacity == 0.8                       # the reader's overlay settings stay
    state.close()
    assert state.opened is None and events.seen[-1] == ("series", None)
    state.set_slice(5)                                # nothing open: ignored
    assert state.index == 0


def test_unreadable_or_mismatched_overlays_become_a_note(store, tmp_path):
    stored = ct_with_labels(store, n=8)
    opened = prepare_series(store, stored.study_uid, stored.series_uid)
    Path(store.abs_path(opened.result.overlay_path)).write_bytes(b"not an npz")
    loaded = load_overlay(SPECS, opened.result, store.data_dir, opened.geometry)
    assert loaded.labels is None and "could not be read" in loaded.note

    png = tmp_path / "film.png"
    Image.fromarray(np.full((64, 64), 100, np.uint8)).save(png)
    cxr = ui_data.add_cxr(store, png, "SMALL^FILM")
    ui_data.save_chexnet(store, cxr, {"Pneumothorax": 0.9}, "critical", cam=np.zeros((14, 32, 32), np.uint8))
    opened = prepare_series(store, cxr.study_uid, cxr.series_uid)
    loaded = load_overlay(SPECS, opened.result, store.data_dir, opened.geometry)
    assert loaded.cam is None and "does not match" in loaded.note


def test_camera_zoom_clamps_pan_accumulates_fit_resets():
    camera = Camera()
    seen: list[tuple[float, tuple[float, float]]] = []
    camera.changed.connect(lambda c: seen.append((c.zoom, c.pan)))
    camera.fit()                                       # already fitted
    assert seen == []
    for _ in range(40):
        camera.zoom_by(1.25)
    assert camera.zoom == MAX_ZOOM
    for _ in range(80):
        camera.zoom_by(0.8)
    assert camera.zoom == MIN_ZOOM
    camera.pan_by(10, -5)
    camera.pan_by(2, 1)
    assert camera.pan == (12, -4)
    camera.fit()
    assert (camera.zoom, camera.pan) == (1.0, (0.0, 0.0)) and seen[-1] == (1.0, (0.0, 0.0))


def test_emitter_calls_each_callback_once_in_order_and_can_disconnect():
    emitter: Emitter[int] = Emitter("n")
    calls: list[str] = []
    first = lambda v: calls.append(f"a{v}")  # noqa: E731
    emitter.connect(first)
    emitter.connect(first)                   # connecting twice does not double the calls
    emitter.connect(lambda v: calls.append(f"b{v}"))
    emitter.emit(1)
    emitter.disconnect(first)
    emitter.emit(2)
    assert calls == ["a1", "b1", "b2"]


def test_the_viewing_package_loads_no_qt_widgets_or_gui():
    """ui.viewing is importable and usable where no display exists (import-linter checks the
    static imports; this checks what actually loads)."""
    code = ("import sys; import ui.viewing.view_state, ui.viewing.composition, ui.viewing.overlay_loading; "
            "print(sorted(m for m in sys.modules if m.startswith(('PySide6.QtGui', 'PySide6.QtWidgets'))))")
    out = subprocess.run([sys.executable, "-c", code], cwd=REPO, capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "[]"
