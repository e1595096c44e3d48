"""Viewer: W/L drag and presets change pixels, overlays land where the model put them,
CT slice order/scrolling, aspect from pixel spacing, banners and reasons."""

from __future__ import annotations

import os

os.environ.setdefault("QT_QPA_PLATFORM", "offscreen")

import threading
from pathlib import Path

import numpy as np
import pytest
from PySide6.QtCore import QPoint, QPointF, Qt
from PySide6.QtGui import QWheelEvent
from PySide6.QtWidgets import QApplication

from app.core.events import EventHub, ResultStored
from app.core.store import StudyStore
from tests.support import ui_data
from ui.viewer import PRESETS, ViewerWidget


@pytest.fixture
def png(cxr_dir: Path) -> Path:
    return sorted((cxr_dir / "images").glob("*.png"))[0]


@pytest.fixture
def viewer(qtbot):
    v = ViewerWidget()
    v.resize(1200, 800)
    qtbot.addWidget(v)
    v.show()
    yield v
    v.shutdown()


def open_and_wait(qtbot, viewer: ViewerWidget, store: StudyStore, stored: ui_data.Stored) -> None:
    viewer.open_study(store, stored.study_uid, stored.series_uid)
    qtbot.waitUntil(lambda: viewer.opened is not None and viewer.opened.series.series_uid == stored.series_uid
                    and viewer.overlays_ready and viewer.rendered is not None, timeout=10000)


def drag(qtbot, widget, start: QPoint, end: QPoint, button=Qt.MouseButton.LeftButton) -> None:
    qtbot.mousePress(widget, button, pos=start)
    steps = 5
    for i in range(1, steps + 1):
        qtbot.mouseMove(widget, start + (end - start) * i / steps)
    qtbot.mouseRelease(widget, button, pos=end)


BOX = (200, 400, 600, 850)  # rows r0:r1, cols c0:c1 of the Pneumothorax hotspot


def cxr_with_cam(store: StudyStore, png: Path, validated: bool = False) -> ui_data.Stored:
    stored = ui_data.add_cxr(store, png, "DOE^JANE")
    cam = ui_data.cam_with_hotspot(1024, 1024, ui_data.CHEXNET_LABELS.index("Pneumothorax"), BOX)
    ui_data.save_chexnet(store, stored, {"Pneumothorax": 0.91, "Effusion": 0.3}, "critical", validated=validated,
                         cam=cam)
    return stored


def test_window_level_drag_changes_rendered_pixels(qtbot, viewer, store, png):
    stored = ui_data.add_cxr(store, png, "WL^TEST")
    open_and_wait(qtbot, viewer, store, stored)
    before = viewer.rendered.copy()
    centre, width = viewer.window
    c = viewer.canvas.rect().center()
    drag(qtbot, viewer.canvas, c, c + QPoint(-150, 0))          # narrower window: more contrast
    assert viewer.window[1] < width
    assert np.std(viewer.rendered.astype(float)) > np.std(before.astype(float)) + 5
    mid = viewer.rendered.copy()
    drag(qtbot, viewer.canvas, c, c + QPoint(0, 120))           # higher level: darker
    assert viewer.window[0] > centre
    assert viewer.rendered.mean() < mid.mean() - 5
    qtbot.keyClick(viewer.canvas, Qt.Key.Key_Backspace)        # reset to the stored window
    assert viewer.window == pytest.approx((centre, width))
    assert np.array_equal(viewer.rendered, before)


def test_monochrome1_is_shown_inverted(qtbot, viewer, store, png):
    m2 = ui_data.add_cxr(store, png, "M^TWO")
    m1 = ui_data.add_cxr(store, png, "M^ONE", photometric="MONOCHROME1")
    open_and_wait(qtbot, viewer, store, m2)
    two = viewer.rendered.astype(int)
    open_and_wait(qtbot, viewer, store, m1)
    one = viewer.rendered.astype(int)
    assert np.abs(one - two).mean() < 2  # same film, same look: inversion handled


def test_heatmap_toggle_and_opacity_change_pixels_in_the_box(qtbot, viewer, store, png):
    stored = cxr_with_cam(store, png)
    open_and_wait(qtbot, viewer, store, stored)
    assert viewer.finding_combo.currentData() == "Pneumothorax"   # highest probability first
    frame = viewer.rendered
    assert frame.ndim == 3
    r0, r1, c0, c1 = BOX
    inside = frame[r0 + 10:r1 - 10, c0 + 10:c1 - 10].astype(int)
    outside = np.concatenate([frame[:r0 - 5].reshape(-1, 3), frame[r1 + 5:].reshape(-1, 3)]).astype(int)
    assert (outside[:, 0] == outside[:, 1]).all() and (outside[:, 1] == outside[:, 2]).all()  # untouched grey
    assert np.abs(inside[..., 0] - inside[..., 2]).mean() > 20                              # coloured
    # On screen too: the box's centre, mapped through zoom/aspect, is tinted.
    rect = viewer.canvas.image_rect()
    y = rect.top() + (r0 + r1) / 2 / 1024 * rect.height()
    x = rect.left() + (c0 + c1) / 2 / 1024 * rect.width()
    shown = viewer.canvas.grab().toImage().pixelColor(int(x), int(y))
    assert abs(shown.red() - shown.blue()) > 20
    y_out = rect.top() + (r1 + 80) / 1024 * rect.height()
    grey = viewer.canvas.grab().toImage().pixelColor(int(x), int(y_out))
    assert abs(grey.red() - grey.blue()) <= 2

    low = frame.copy()
    viewer.opacity.setValue(90)
    high = viewer.rendered
    tint_low = np.abs(low[r0 + 10:r1 - 10, c0 + 10:c1 - 10, 0].astype(int) - low[r0 + 10:r1 - 10, c0 + 10:c1 - 10, 2])
    tint_high = np.abs(high[r0 + 10:r1 - 10, c0 + 10:c1 - 10, 0].astype(int) - high[r0 + 10:r1 - 10, c0 + 10:c1 - 10, 2])
    assert tint_high.mean() > tint_low.mean() + 20
    assert np.array_equal(high[:r0 - 5], low[:r0 - 5])                     # nothing moves outside

    qtbot.keyClick(viewer.canvas, Qt.Key.Key_H)                            # toggle off
    off = viewer.rendered
    assert off.ndim == 2 or (off[..., 0] == off[..., 2]).all()
    qtbot.keyClick(viewer.canvas, Qt.Key.Key_H)                            # and on again
    assert np.array_equal(viewer.rendered, high)
    # Another finding has an empty map: the image is clean.
    viewer.finding_combo.setCurrentIndex(viewer.finding_combo.findData("Effusion"))
    assert (viewer.rendered[..., 0] == viewer.rendered[..., 2]).all()


def ct_with_labels(store: StudyStore, n: int = 12, size: int = 96) -> tuple[ui_data.Stored, np.ndarray]:
    stored = ui_data.add_ct(store, n=n, size=size, bleed_slices=range(4, 8))
    labels = np.zeros((n, size, size), np.uint8)
    labels[4:8, 30:50, 55:75] = 1          # IPH, most on slices 4..7
    labels[6, 30:50, 10:25] = 1            # slice 6 has the most IPH
    labels[5:7, 70:80, 40:60] = 4          # IVH
    # The label volume is saved in a different slice order (reversed), as its sop_uids say.
    ui_data.save_blastct(store, stored, labels[::-1].copy(), "urgent", label_order=stored.sop_uids[::-1])
    return stored, labels


def test_ct_slices_ordered_along_normal_and_scrolling(qtbot, viewer, store):
    stored = ui_data.add_ct(store, n=15, size=64)   # stored shuffled, instance numbers reversed
    open_and_wait(qtbot, viewer, store, stored)
    geometry = viewer.opened.geometry
    assert [s.sop_uid for s in geometry.slices] == stored.sop_uids
    assert [s.location_mm for s in geometry.slices] == sorted(s.location_mm for s in geometry.slices)
    assert viewer.index == 0 and "Image 1 / 15" in viewer.slice_label.text()
    first = viewer.rendered.copy()

    pos = QPointF(viewer.canvas.rect().center())
    for _ in range(3):
        ev = QWheelEvent(pos, viewer.canvas.mapToGlobal(pos), QPoint(0, 0), QPoint(0, -120), Qt.MouseButton.NoButton,
                         Qt.KeyboardModifier.NoModifier, Qt.ScrollPhase.NoScrollPhase, False)
        QApplication.sendEvent(viewer.canvas, ev)
    assert viewer.index == 3
    qtbot.waitUntil(lambda: viewer.rendered is not None, timeout=5000)
    assert not np.array_equal(viewer.rendered, first)   # a different slice (brain HU differ by slice)
    qtbot.keyClick(viewer.canvas, Qt.Key.Key_Down)
    assert viewer.index == 4
    qtbot.keyClick(viewer.canvas, Qt.Key.Key_End)
    assert viewer.index == 14 and "Image 15 / 15" in viewer.slice_label.text()
    assert f"{geometry.slices[14].location_mm:.1f} mm" in viewer.slice_label.text()
    qtbot.keyClick(viewer.canvas, Qt.Key.Key_Home)
    assert viewer.index == 0
    viewer.slice_slider.setValue(7)
    assert viewer.index == 7
    qtbot.waitUntil(lambda: viewer.rendered is not None, timeout=5000)


def test_ct_presets_change_pixels(qtbot, viewer, store):
    stored = ui_data.add_ct(store, n=4, size=64)
    open_and_wait(qtbot, viewer, store, stored)
    qtbot.waitUntil(lambda: viewer.rendered is not None, timeout=5000)
    qtbot.keyClick(viewer.canvas, Qt.Key.Key_4)   # brain
    assert viewer.window == PRESETS["Brain"]
    brain = viewer.rendered.copy()
    qtbot.keyClick(viewer.canvas, Qt.Key.Key_3)   # bone
    assert viewer.window == PRESETS["Bone"]
    bone = viewer.rendered
    centre, skull = (32, 32), (32, 6)               # brain tissue ~35 HU, skull 900 HU
    assert int(brain[centre]) > 100 and int(bone[centre]) < int(brain[centre]) - 25
    assert int(brain[skull]) == 255 and int(bone[skull]) < 230  # bone window shows skull detail
    viewer.preset_combo.setCurrentIndex(viewer.preset_combo.findText("Lung"))
    viewer.preset_combo.activated.emit(viewer.preset_combo.currentIndex())
    assert viewer.window == PRESETS["Lung"]


def test_blast_ct_overlay_classes_outline_and_jump(qtbot, viewer, store):
    stored, labels = ct_with_labels(store)
    open_and_wait(qtbot, viewer, store, stored)
    assert viewer.index == 6                       # opens on the slice with the most haemorrhage
    frame = viewer.rendered
    iph = frame[35:45, 60:70].reshape(-1, 3).astype(int)
    ivh = frame[72:78, 45:55].reshape(-1, 3).astype(int)
    brain = frame[20:25, 40:45].reshape(-1, 3).astype(int)
    assert (iph[:, 0] > iph[:, 2] + 40).all()      # red where IPH is
    assert (ivh[:, 2] > ivh[:, 0] + 40).all()      # cyan where IVH is
    assert (brain[:, 0] == brain[:, 2]).all()      # untouched elsewhere

    viewer.class_boxes["IPH"].setChecked(False)    # per-class toggle
    frame = viewer.rendered
    assert (frame[35:45, 60:70, 0] == frame[35:45, 60:70, 2]).all()
    assert (frame[72:78, 45:55, 2] > frame[72:78, 45:55, 0] + 40).all()
    viewer.class_boxes["IPH"].setChecked(True)

    qtbot.keyClick(viewer.canvas, Qt.Key.Key_O)    # outline: interior clear, border coloured
    assert viewer.mode_combo.currentText() == "outline"
    frame = viewer.rendered
    assert frame[40, 65, 0] == frame[40, 65, 2]
    assert frame[30, 65, 0] > frame[30, 65, 2] + 40

    qtbot.keyClick(viewer.canvas, Qt.Key.Key_Home)
    qtbot.waitUntil(lambda: viewer.index == 0 and viewer.rendered is not None, timeout=5000)
    assert (viewer.rendered[..., 0] == viewer.rendered[..., 2]).all()   # no label on slice 0
    qtbot.keyClick(viewer.canvas, Qt.Key.Key_M)
    assert viewer.index == 6
    viewer.class_boxes["IPH"].setChecked(False)
    viewer.jump_to_max()
    assert viewer.index == 5                        # IVH only: slices 5 and 6 tie, first wins
    assert "IVH" in viewer.slice_label.text()


def test_aspect_follows_pixel_spacing(qtbot, viewer, store):
    stored = ui_data.add_ct(store, n=2, size=64, spacing=(1.0, 0.5))   # rows 1 mm apart, columns 0.5 mm
    open_and_wait(qtbot, viewer, store, stored)
    rect = viewer.canvas.image_rect()
    assert rect.height() / rect.width() == pytest.approx(2.0, rel=0.02)
    qtbot.keyClick(viewer.canvas, Qt.Key.Key_Plus)
    assert viewer.canvas.image_rect().width() == pytest.approx(rect.width() * 1.25, rel=0.01)
    qtbot.keyClick(viewer.canvas, Qt.Key.Key_F)
    assert viewer.canvas.image_rect() == rect
    drag(qtbot, viewer.canvas, QPoint(300, 300), QPoint(350, 320), Qt.MouseButton.RightButton)   # pan
    assert viewer.canvas.image_rect().left() == pytest.approx(rect.left() + 50, abs=1)


def test_not_validated_banner_on_every_view_of_the_result(qtbot, viewer, store, png):
    unvalidated = cxr_with_cam(store, png, validated=False)
    open_and_wait(qtbot, viewer, store, unvalidated)
    assert viewer.banner.isVisible() and "NOT VALIDATED" in viewer.banner.text()
    assert "NOT VALIDATED" in viewer.canvas.banner                  # painted on the image itself
    assert "NOT VALIDATED" in viewer.findings.toPlainText()
    band = viewer.canvas.grab().toImage().pixelColor(4, 12)          # the red band across the top
    assert band.red() > 150 and band.green() < 40

    validated = cxr_with_cam(store, png, validated=True)
    open_and_wait(qtbot, viewer, store, validated)
    assert not viewer.banner.isVisible()
    assert viewer.canvas.banner == ""
    assert "NOT VALIDATED" not in viewer.findings.toPlainText()

    ct, _ = ct_with_labels(store)
    open_and_wait(qtbot, viewer, store, ct)
    assert viewer.banner.isVisible() and "NOT VALIDATED" in viewer.canvas.banner


def test_failed_and_not_analysed_series_are_viewable_with_reason(qtbot, viewer, store, png):
    failed = ui_data.add_cxr(store, png, "FAILED^CASE")
    ui_data.save_status(store, failed, "failed", "InferenceError: out of memory")
    open_and_wait(qtbot, viewer, store, failed)
    assert viewer.rendered is not None
    assert viewer.reason.isVisible() and "out of memory" in viewer.reason.text()
    assert not viewer.banner.isVisible()
    lateral = ui_data.add_cxr(store, png, "LATERAL^CASE")
    ui_data.save_status(store, lateral, "not_analysed", "lateral view is not analysed")
    open_and_wait(qtbot, viewer, store, lateral)
    assert "lateral view is not analysed" in viewer.reason.text()
    assert "Not analysed" in viewer.findings.toPlainText()


def test_result_arriving_for_the_open_study_shows_its_overlay(qtbot, store):
    from app.core.config import Config
    from ui.main_window import MainWindow

    stored = ui_data.add_ct(store, n=12, size=96, bleed_slices=range(4, 8))
    window = MainWindow(Config(data_dir=store.data_dir), None, device_choices=None)
    qtbot.addWidget(window)
    hub = EventHub()
    window.attach_backend(store, hub)
    window.show()
    qtbot.waitUntil(lambda: window.model.rowCount() == 1, timeout=5000)
    window.open_study(stored.study_uid)
    viewer = window.viewer
    qtbot.waitUntil(lambda: viewer.rendered is not None, timeout=5000)
    assert viewer.opened.labels is None and not viewer.banner.isVisible()
    qtbot.keyClick(viewer.canvas, Qt.Key.Key_6)        # stroke window, slice 6: kept across the reload
    viewer.set_slice(6)
    labels = np.zeros((12, 96, 96), np.uint8)
    labels[6, 30:50, 55:75] = 1
    ui_data.save_blastct(store, stored, labels, "urgent")
    t = threading.Thread(target=hub.publish, args=(ResultStored(stored.study_uid, stored.series_uid, "urgent"),))
    t.start()
    t.join()
    qtbot.waitUntil(lambda: viewer.opened is not None and viewer.opened.labels is not None
                    and viewer.rendered is not None, timeout=5000)
    assert viewer.index == 6 and viewer.window == PRESETS["Stroke"]
    assert viewer.rendered[40, 65, 0] > viewer.rendered[40, 65, 2] + 40
    assert viewer.banner.isVisible()
    window.shutdown()


def test_real_gantry_tilted_head_ct_is_shown_as_acquired(qtbot, viewer, store, headct_dir):
    """The shared GE HiSpeed series (18.5° tilt, sent out of order): native 512x512 slices,
    ordered along the tilted normal, HU through the Modality LUT, square 0.488 mm pixels."""
    import pydicom

    files = sorted(headct_dir.glob("*.dcm"))
    for path in reversed(files):                       # arrival order reversed on purpose
        store.store_instance(path.read_bytes(), calling_ae="CT01")
    study = store.list_studies()[0]
    series = store.list_series(study.study_uid)[0]
    viewer.open_study(store, study.study_uid)
    qtbot.waitUntil(lambda: viewer.opened is not None and viewer.rendered is not None, timeout=10000)
    geometry = viewer.opened.geometry
    assert geometry.n_slices == len(files) == series.n_instances
    assert (geometry.rows, geometry.cols) == (512, 512) and viewer.rendered.shape == (512, 512)
    assert geometry.pixel_spacing == pytest.approx((0.4882812, 0.4882812))
    locations = [s.location_mm for s in geometry.slices]
    assert locations == sorted(locations) and len(set(locations)) == len(locations)
    numbers = [s.instance_number for s in geometry.slices]
    assert numbers == sorted(numbers)                  # this scanner numbers inferior -> superior
    assert "GantryDetectorTilt" in geometry.attributes
    # HU: the Modality LUT is applied, so the brain window shows tissue mid-grey.
    first = pydicom.dcmread(geometry.slices[viewer.index].path)
    hu = first.pixel_array.astype(float) * float(first.RescaleSlope) + float(first.RescaleIntercept)
    qtbot.keyClick(viewer.canvas, Qt.Key.Key_4)
    brain = (hu > 20) & (hu < 60)
    assert brain.sum() > 1000
    assert 60 < viewer.rendered[brain].mean() < 200
    rect = viewer.canvas.image_rect()
    assert rect.width() == pytest.approx(rect.height(), rel=0.01)
    qtbot.keyClick(viewer.canvas, Qt.Key.Key_End)
    qtbot.waitUntil(lambda: viewer.rendered is not None and viewer.index == len(files) - 1, timeout=5000)
    assert f"Image {len(files)} / {len(files)}" in viewer.slice_label.text()
