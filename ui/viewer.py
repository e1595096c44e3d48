"""The viewer: one series at a time, with window/level, zoom/pan, slice scrolling and the
model's evidence (CheXNet heatmap or BLAST-CT classes) one keystroke away.

Opening reads headers on a background thread, then the overlay file; pixels arrive slice
by slice from ``SeriesPixels``, the wanted slice first, so the first image shows without
waiting for the whole series or for the AI evidence.
"""

from __future__ import annotations

import logging
import time
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
from PySide6.QtCore import Qt, Signal
from PySide6.QtGui import QKeySequence, QShortcut
from PySide6.QtWidgets import (
    QCheckBox,
    QComboBox,
    QHBoxLayout,
    QLabel,
    QPushButton,
    QSlider,
    QSplitter,
    QVBoxLayout,
    QWidget,
)

from app.core.store import AnalysisResult, SeriesRecord, StudyRecord, StudyStore
from ui.canvas import ImageCanvas
from ui.findings_panel import FindingsPanel
from ui.image_loader import SeriesGeometry, SeriesPixels, auto_window, read_series_geometry
from ui.overlays import (
    CLASS_COLOURS,
    CamOverlay,
    LabelOverlay,
    blend_cam,
    blend_labels,
    grey_to_rgb,
    load_cam_overlay,
    load_label_overlay,
    window_to_grey,
)
from ui.tasks import TaskRunner
from ui.worklist_model import NOT_VALIDATED_TEXT, format_patient_name

log = logging.getLogger(__name__)

# (centre, width) in HU; only offered on CT, where the Modality LUT gives HU.
PRESETS: dict[str, tuple[float, float]] = {
    "Lung": (-600.0, 1500.0),
    "Mediastinum": (50.0, 350.0),
    "Bone": (400.0, 1800.0),
    "Brain": (40.0, 80.0),
    "Subdural": (75.0, 215.0),
    "Stroke": (35.0, 40.0),
}


@dataclass
class OpenedSeries:
    """Everything read off the GUI thread when a series is opened."""

    study: StudyRecord | None
    series: SeriesRecord
    all_series: list[SeriesRecord]
    results: dict[str, AnalysisResult]
    geometry: SeriesGeometry
    result: AnalysisResult | None
    cam: CamOverlay | None = None
    labels: LabelOverlay | None = None
    overlay_note: str = ""
    started: float = field(default_factory=time.perf_counter)


def prepare_series(store: StudyStore, study_uid: str, series_uid: str | None) -> OpenedSeries:
    """Blocking, on the viewer's task thread: headers and the result record, no overlay yet
    (a 300-slice label volume takes longer to inflate than the first image takes to show)."""
    started = time.perf_counter()
    all_series = store.list_series(study_uid)
    if not all_series:
        raise ValueError("this study has no stored series")
    results = {r.series_uid: r for r in store.results_for_study(study_uid)}
    series = next((s for s in all_series if s.series_uid == series_uid), None)
    if series is None:  # the analysed series first: that is where the evidence is
        series = next((s for s in all_series if (r := results.get(s.series_uid)) and r.status == "done"),
                      all_series[0])
    geometry = read_series_geometry(store.series_files(series.series_uid))
    return OpenedSeries(study=store.get_study(study_uid), series=series, all_series=all_series, results=results,
                        geometry=geometry, result=results.get(series.series_uid), started=started)


@dataclass
class LoadedOverlays:
    cam: CamOverlay | None = None
    labels: LabelOverlay | None = None
    note: str = ""


def load_overlays(store: StudyStore, result: AnalysisResult, geometry: SeriesGeometry) -> LoadedOverlays:
    """Blocking, on the task thread: the result's overlay file, mapped onto the displayed slices."""
    out = LoadedOverlays()
    if not result.overlay_path:
        return out
    path = store.abs_path(result.overlay_path)
    try:
        if Path(result.overlay_path).name == "labels.npz":
            out.labels = load_label_overlay(path, [s.sop_uid for s in geometry.slices])
        else:
            cam = load_cam_overlay(path)
            if cam.shape != (geometry.rows, geometry.cols):
                out.note = (f"heatmap size {cam.shape} does not match the image "
                            f"{(geometry.rows, geometry.cols)}; not shown")
            else:
                out.cam = cam
    except (OSError, ValueError, KeyError) as exc:
        log.warning("overlay %s unreadable: %s", path, exc)
        out.note = f"overlay could not be read: {exc}"
    return out


class ViewerWidget(QWidget):
    back_requested = Signal()
    mark_reviewed = Signal(str)           # study_uid
    image_shown = Signal(float)           # seconds from open request to the first real image
    _slice_loaded = Signal(int, int)      # generation, index (from the pixel loader thread)

    def __init__(self, parent: QWidget | None = None) -> None:
        super().__init__(parent)
        self._tasks = TaskRunner("viewer-open", self)
        self._store: StudyStore | None = None
        self._opened: OpenedSeries | None = None
        self._pixels: SeriesPixels | None = None
        self._generation = 0
        self._open_clock = 0.0
        self._first_shown = False
        self.index = 0
        self.window: tuple[float, float] = (40.0, 80.0)
        self._invert = False
        self._auto_window_pending = False
        self._start_index = 0
        self.overlays_ready = False
        self.rendered: np.ndarray | None = None  # the last composed frame, before screen scaling
        self._slice_loaded.connect(self._on_slice_loaded, Qt.ConnectionType.QueuedConnection)
        self._build()

    # -- layout ----------------------------------------------------------------------------
    def _build(self) -> None:
        self.banner = QLabel(f"⚠  {NOT_VALIDATED_TEXT.upper()}  ⚠")
        self.banner.setAlignment(Qt.AlignmentFlag.AlignCenter)
        self.banner.setStyleSheet("background:#b00020; color:white; font-weight:bold; font-size:16px; padding:6px;")
        self.banner.setVisible(False)
        self.reason = QLabel()
        self.reason.setWordWrap(True)
        self.reason.setStyleSheet("background:#fff3cd; color:#5c4400; padding:4px;")
        self.reason.setVisible(False)

        self.back_button = QPushButton("◀ Worklist")
        self.back_button.setToolTip("Back to the worklist (Esc)")
        self.back_button.clicked.connect(self.back_requested)
        self.series_combo = QComboBox()
        self.series_combo.setToolTip("Series of this study")
        self.series_combo.activated.connect(self._series_chosen)
        self.preset_combo = QComboBox()
        self.preset_combo.setToolTip("Window presets (keys 1–6; 0 = as stored)")
        self.preset_combo.activated.connect(lambda _i: self.apply_preset(self.preset_combo.currentText()))
        fit = QPushButton("Fit")
        fit.setToolTip("Fit the image to the window (F)")
        fit.clicked.connect(self.fit)
        reset = QPushButton("Reset")
        reset.setToolTip("Fit and restore the stored window (Backspace)")
        reset.clicked.connect(self.reset)
        self.reviewed_button = QPushButton("Mark reviewed")
        self.reviewed_button.setToolTip("Mark this study reviewed (Ctrl+R)")
        self.reviewed_button.clicked.connect(self._mark_reviewed)

        top = QHBoxLayout()
        for w in (self.back_button, QLabel("Series"), self.series_combo, QLabel("Window"), self.preset_combo,
                  fit, reset):
            top.addWidget(w)
        top.addStretch(1)
        top.addWidget(self.reviewed_button)

        # CheXNet heatmap controls
        self.heatmap_box = QCheckBox("Heatmap (H)")
        self.heatmap_box.setChecked(True)
        self.heatmap_box.toggled.connect(self._render)
        self.finding_combo = QComboBox()
        self.finding_combo.setToolTip("Finding whose class-activation map is shown")
        self.finding_combo.currentIndexChanged.connect(self._render)
        # BLAST-CT controls
        self.class_boxes: dict[str, QCheckBox] = {}
        for name, colour in CLASS_COLOURS.items():
            box = QCheckBox(name)
            box.setChecked(True)
            box.setStyleSheet("QCheckBox { color: rgb(%d,%d,%d); font-weight: bold; }" % colour)
            box.toggled.connect(self._render)
            self.class_boxes[name] = box
        self.mode_combo = QComboBox()
        self.mode_combo.addItems(["fill", "outline"])
        self.mode_combo.setToolTip("Fill or outline the segmentation (O)")
        self.mode_combo.currentIndexChanged.connect(self._render)
        self.jump_button = QPushButton("Max slice (M)")
        self.jump_button.setToolTip("Jump to the slice with the most haemorrhage")
        self.jump_button.clicked.connect(self.jump_to_max)
        self.opacity = QSlider(Qt.Orientation.Horizontal)
        self.opacity.setRange(0, 100)
        self.opacity.setValue(45)
        self.opacity.setFixedWidth(120)
        self.opacity.setToolTip("Overlay opacity")
        self.opacity.valueChanged.connect(self._render)

        overlay_row = QHBoxLayout()
        self.overlay_label = QLabel("AI overlay:")
        overlay_row.addWidget(self.overlay_label)
        overlay_row.addWidget(self.heatmap_box)
        overlay_row.addWidget(self.finding_combo)
        for box in self.class_boxes.values():
            overlay_row.addWidget(box)
        overlay_row.addWidget(self.mode_combo)
        overlay_row.addWidget(self.jump_button)
        overlay_row.addWidget(QLabel("Opacity"))
        overlay_row.addWidget(self.opacity)
        overlay_row.addStretch(1)

        self.canvas = ImageCanvas()
        self.canvas.window_dragged.connect(self._drag_window)
        self.canvas.scrolled.connect(lambda steps: self.set_slice(self.index + steps))
        self.slice_slider = QSlider(Qt.Orientation.Horizontal)
        self.slice_slider.setRange(0, 0)
        self.slice_slider.valueChanged.connect(self.set_slice)
        self.slice_label = QLabel()
        slice_row = QHBoxLayout()
        slice_row.addWidget(self.slice_slider, 1)
        slice_row.addWidget(self.slice_label)
        left = QWidget()
        left_layout = QVBoxLayout(left)
        left_layout.setContentsMargins(0, 0, 0, 0)
        left_layout.addWidget(self.canvas, 1)
        left_layout.addLayout(slice_row)
        self.findings = FindingsPanel()
        split = QSplitter(Qt.Orientation.Horizontal)
        split.addWidget(left)
        split.addWidget(self.findings)
        split.setStretchFactor(0, 3)
        split.setStretchFactor(1, 1)

        layout = QVBoxLayout(self)
        layout.addWidget(self.banner)
        layout.addWidget(self.reason)
        layout.addLayout(top)
        layout.addLayout(overlay_row)
        layout.addWidget(split, 1)
        self._shortcuts()
        self._update_controls()

    def _shortcuts(self) -> None:
        def key(seq: QKeySequence | str, slot: object) -> None:
            sc = QShortcut(QKeySequence(seq), self)
            sc.setContext(Qt.ShortcutContext.WidgetWithChildrenShortcut)
            sc.activated.connect(slot)

        key(QKeySequence(Qt.Key.Key_Down), lambda: self.set_slice(self.index + 1))
        key(QKeySequence(Qt.Key.Key_Up), lambda: self.set_slice(self.index - 1))
        key(QKeySequence(Qt.Key.Key_PageDown), lambda: self.set_slice(self.index + 10))
        key(QKeySequence(Qt.Key.Key_PageUp), lambda: self.set_slice(self.index - 10))
        key(QKeySequence(Qt.Key.Key_Home), lambda: self.set_slice(0))
        key(QKeySequence(Qt.Key.Key_End), lambda: self.set_slice(self.n_slices - 1))
        key("H", self.toggle_overlay)
        key("O", lambda: self.mode_combo.setCurrentIndex(1 - self.mode_combo.currentIndex()))
        key("M", self.jump_to_max)
        key("F", self.fit)
        key(QKeySequence(Qt.Key.Key_Backspace), self.reset)
        key("+", lambda: self.canvas.zoom_by(1.25))
        key("-", lambda: self.canvas.zoom_by(0.8))
        key(QKeySequence(Qt.Key.Key_Escape), self.back_requested.emit)
        key("0", lambda: self.apply_preset("As stored"))
        for i, name in enumerate(PRESETS, start=1):
            key(str(i), lambda name=name: self.apply_preset(name))

    # -- opening -----------------------------------------------------------------------------
    @property
    def n_slices(self) -> int:
        return self._opened.geometry.n_slices if self._opened else 0

    @property
    def opened(self) -> OpenedSeries | None:
        return self._opened

    @property
    def study_uid(self) -> str | None:
        return self._opened.series.study_uid if self._opened else None

    def open_study(self, store: StudyStore, study_uid: str, series_uid: str | None = None) -> None:
        """Non-blocking: the series is read on the task thread and shown when ready."""
        self._store = store
        self._open_clock = time.perf_counter()
        self._first_shown = False
        self._generation += 1
        generation = self._generation
        self._stop_pixels()
        self.canvas.set_placeholder("Opening…")
        self._tasks.submit(lambda: prepare_series(store, study_uid, series_uid),
                           lambda opened: self._show_opened(generation, opened),
                           lambda exc: self._open_failed(generation, exc))

    def reload_result(self) -> None:
        """A new result landed for the open study: re-read it, keep slice and window."""
        if self._opened is None or self._store is None:
            return
        keep_index, keep_window = self.index, self.window
        study_uid, series_uid = self._opened.series.study_uid, self._opened.series.series_uid
        self._generation += 1
        generation = self._generation
        store = self._store

        def done(opened: OpenedSeries) -> None:
            self._show_opened(generation, opened, keep=(keep_index, keep_window))

        self._tasks.submit(lambda: prepare_series(store, study_uid, series_uid), done,
                           lambda exc: self._open_failed(generation, exc))

    def _open_failed(self, generation: int, exc: BaseException) -> None:
        if generation != self._generation:
            return
        log.warning("cannot open series: %s", exc)
        self._opened = None
        self.canvas.set_placeholder(f"Cannot display this study: {exc}")
        self._update_controls()

    def _show_opened(self, generation: int, opened: OpenedSeries,
                     keep: tuple[int, tuple[float, float]] | None = None) -> None:
        if generation != self._generation:
            return
        self._stop_pixels()
        self._opened = opened
        geometry = opened.geometry
        self._invert = geometry.monochrome1
        self._auto_window_pending = geometry.default_window is None
        self.window = geometry.default_window or (0.0, 1.0)
        start = 0
        if keep is not None:
            start = min(keep[0], geometry.n_slices - 1)
            self.window = keep[1]
            self._auto_window_pending = False
        self.index = self._start_index = start
        pixels = SeriesPixels(geometry, lambda i, g=generation: self._slice_loaded.emit(g, i))
        self._pixels = pixels
        pixels.start(start)
        self._fill_series_combo()
        self._fill_presets()
        self._fill_findings_combo()
        result = opened.result
        validated_result = result is not None and result.status == "done"
        not_validated = validated_result and result is not None and not result.validated
        self.banner.setVisible(not_validated)
        self.canvas.set_banner(f"⚠ {NOT_VALIDATED_TEXT.upper()} ⚠" if not_validated else "")
        self._show_reason()
        self.findings.show_findings(result, opened.series, geometry, opened.overlay_note)
        self.slice_slider.blockSignals(True)
        self.slice_slider.setRange(0, max(0, geometry.n_slices - 1))
        self.slice_slider.setValue(self.index)
        self.slice_slider.blockSignals(False)
        self.slice_slider.setVisible(geometry.n_slices > 1)
        if keep is None:
            self.canvas.fit()
        self._update_controls()
        self._render()
        self.overlays_ready = result is None or not result.overlay_path
        if result is not None and result.overlay_path and self._store is not None:
            store = self._store
            self._tasks.submit(lambda: load_overlays(store, result, geometry),
                               lambda loaded: self._overlays_loaded(generation, loaded, jump=keep is None),
                               lambda exc: self._open_failed(generation, exc))

    def _overlays_loaded(self, generation: int, loaded: LoadedOverlays, jump: bool) -> None:
        opened = self._opened
        if generation != self._generation or opened is None:
            return
        opened.cam, opened.labels, opened.overlay_note = loaded.cam, loaded.labels, loaded.note
        self.overlays_ready = True
        self._fill_findings_combo()
        self._update_controls()
        self._show_reason()
        if loaded.note:
            self.findings.show_findings(opened.result, opened.series, opened.geometry, loaded.note)
        target = loaded.labels.max_slice() if loaded.labels is not None else None
        if jump and target is not None and self.index == self._start_index:
            self.set_slice(target)  # straight to the evidence, unless the reader has moved on
        self._render()

    def _show_reason(self) -> None:
        opened = self._opened
        result = opened.result if opened else None
        reason = ""
        if result is not None and result.status == "failed":
            reason = f"Analysis failed: {result.reason or 'no reason given'}. The images are shown without AI findings."
        elif result is not None and result.status == "not_analysed":
            reason = f"Not analysed: {result.reason or 'no reason given'}. The images are shown without AI findings."
        if opened is not None and opened.overlay_note:
            reason = (reason + " " if reason else "") + opened.overlay_note
        self.reason.setText(reason)
        self.reason.setVisible(bool(reason))

    def _stop_pixels(self) -> None:
        if self._pixels is not None:
            self._pixels.stop()
            self._pixels = None

    def close_series(self) -> None:
        self._generation += 1
        self._stop_pixels()
        self._opened = None
        self.rendered = None
        self.canvas.set_placeholder("")
        self._update_controls()

    def shutdown(self) -> None:
        self.close_series()
        self._tasks.shutdown()

    def _fill_series_combo(self) -> None:
        assert self._opened is not None
        self.series_combo.blockSignals(True)
        self.series_combo.clear()
        for s in self._opened.all_series:
            r = self._opened.results.get(s.series_uid)
            tag = f" – {r.priority.replace('_', ' ')}" if r else ""
            self.series_combo.addItem(f"{s.series_number or '?'}: {s.modality} {s.description} "
                                      f"({s.n_instances} img){tag}", s.series_uid)
            if s.series_uid == self._opened.series.series_uid:
                self.series_combo.setCurrentIndex(self.series_combo.count() - 1)
        self.series_combo.blockSignals(False)

    def _series_chosen(self, i: int) -> None:
        uid = self.series_combo.itemData(i)
        if self._opened is not None and self._store is not None and uid != self._opened.series.series_uid:
            self.open_study(self._store, self._opened.series.study_uid, uid)

    def _fill_presets(self) -> None:
        self.preset_combo.blockSignals(True)
        self.preset_combo.clear()
        self.preset_combo.addItem("As stored")
        if self._opened is not None and self._opened.geometry.modality == "CT":
            self.preset_combo.addItems(list(PRESETS))
        self.preset_combo.blockSignals(False)

    def _fill_findings_combo(self) -> None:
        self.finding_combo.blockSignals(True)
        self.finding_combo.clear()
        opened = self._opened
        if opened is not None and opened.cam is not None:
            probs = (opened.result.findings.get("probabilities") or {}) if opened.result else {}
            labels = sorted(opened.cam.labels, key=lambda lab: -float(probs.get(lab, 0.0)))
            for label in labels:
                p = probs.get(label)
                self.finding_combo.addItem(f"{label} {p:.2f}" if p is not None else label, label)
        self.finding_combo.blockSignals(False)

    def _update_controls(self) -> None:
        opened = self._opened
        has_cam = opened is not None and opened.cam is not None
        has_labels = opened is not None and opened.labels is not None
        for w in (self.heatmap_box, self.finding_combo):
            w.setVisible(has_cam)
        for w in (*self.class_boxes.values(), self.mode_combo, self.jump_button):
            w.setVisible(has_labels)
        if has_labels and opened is not None and opened.labels is not None:
            for name, box in self.class_boxes.items():
                box.setEnabled(name in opened.labels.classes)
        self.opacity.setVisible(has_cam or has_labels)
        self.overlay_label.setText("AI overlay:" if (has_cam or has_labels) else "No AI overlay")
        self.reviewed_button.setEnabled(opened is not None)

    # -- interaction -------------------------------------------------------------------------
    def set_slice(self, index: int) -> None:
        if self._opened is None:
            return
        index = int(min(max(index, 0), self.n_slices - 1))
        if index == self.index and self.rendered is not None:
            return
        self.index = index
        if self.slice_slider.value() != index:
            self.slice_slider.blockSignals(True)
            self.slice_slider.setValue(index)
            self.slice_slider.blockSignals(False)
        self._render()

    def set_window(self, centre: float, width: float) -> None:
        self.window = (float(centre), max(1.0, float(width)))
        self._render()

    def apply_preset(self, name: str) -> None:
        if self._opened is None:
            return
        if name in PRESETS:
            self.set_window(*PRESETS[name])
        else:
            default = self._opened.geometry.default_window
            pixels = self._pixels.get(self.index) if self._pixels else None
            if default is None and pixels is not None:
                default = auto_window(pixels)
            if default is not None:
                self.set_window(*default)
        i = self.preset_combo.findText(name)
        if i >= 0:
            self.preset_combo.setCurrentIndex(i)

    def _drag_window(self, dx: float, dy: float) -> None:
        """Right widens, left narrows; down raises the level (image darker)."""
        centre, width = self.window
        step = max(width, 2.0) / 256.0
        self.set_window(centre + dy * step, width + dx * step * 2)

    def toggle_overlay(self) -> None:
        opened = self._opened
        if opened is None:
            return
        if opened.cam is not None:
            self.heatmap_box.setChecked(not self.heatmap_box.isChecked())
        elif opened.labels is not None:
            state = not any(b.isChecked() for b in self.class_boxes.values())
            for box in self.class_boxes.values():
                box.blockSignals(True)
                box.setChecked(state)
                box.blockSignals(False)
            self._render()

    def jump_to_max(self) -> None:
        if self._opened is None or self._opened.labels is None:
            return
        enabled = {n for n, b in self.class_boxes.items() if b.isChecked()} or None
        target = self._opened.labels.max_slice(enabled)
        if target is not None:
            self.set_slice(target)

    def fit(self) -> None:
        self.canvas.fit()

    def reset(self) -> None:
        self.canvas.fit()
        self.apply_preset("As stored")

    def _mark_reviewed(self) -> None:
        if self.study_uid:
            self.mark_reviewed.emit(self.study_uid)

    # -- rendering ---------------------------------------------------------------------------
    def _on_slice_loaded(self, generation: int, index: int) -> None:
        if generation == self._generation and index == self.index:
            self._render()

    def overlay_opacity(self) -> float:
        return self.opacity.value() / 100.0

    def _render(self) -> None:
        opened = self._opened
        if opened is None or self._pixels is None:
            return
        pixels = self._pixels.get(self.index)
        self._update_slice_label()
        if pixels is None:
            error = self._pixels.error(self.index)
            self.rendered = None
            self.canvas.set_placeholder(f"Slice {self.index + 1} cannot be displayed: {error}" if error
                                        else f"Loading slice {self.index + 1}…")
            return
        if self._auto_window_pending:
            self.window = auto_window(pixels)
            self._auto_window_pending = False
        grey = window_to_grey(pixels, self.window[0], self.window[1], self._invert)
        frame: np.ndarray = grey
        sop = opened.geometry.slices[self.index].sop_uid
        if opened.cam is not None and self.heatmap_box.isChecked():
            result_sop = opened.result.findings.get("sop_uid") if opened.result else None
            label = self.finding_combo.currentData()
            cam = opened.cam.for_label(label) if label else None
            if cam is not None and (result_sop in (None, sop) or opened.geometry.n_slices == 1):
                frame = blend_cam(grey_to_rgb(grey), cam, self.overlay_opacity())
        if opened.labels is not None:
            plane = opened.labels.by_slice[self.index]
            enabled = {n for n, b in self.class_boxes.items() if b.isChecked()}
            if plane is not None and enabled:
                frame = blend_labels(frame if frame.ndim == 3 else grey_to_rgb(grey), plane, opened.labels.classes,
                                     enabled, self.overlay_opacity(), self.mode_combo.currentText())
        self.rendered = frame
        self.canvas.set_frame(frame, opened.geometry.aspect)
        self._update_corners()
        if not self._first_shown:
            self._first_shown = True
            self.image_shown.emit(time.perf_counter() - self._open_clock)

    def _update_slice_label(self) -> None:
        opened = self._opened
        if opened is None:
            self.slice_label.setText("")
            return
        info = opened.geometry.slices[self.index]
        text = f"Image {self.index + 1} / {opened.geometry.n_slices}"
        if info.location_mm is not None:
            text += f" · {info.location_mm:.1f} mm"
        if info.instance_number is not None:
            text += f" · #{info.instance_number}"
        if opened.labels is not None:
            counts = [n for n in opened.labels.classes if opened.labels.voxels[n][self.index]]
            if counts:
                text += " · " + ", ".join(counts)
        self.slice_label.setText(text)

    def _update_corners(self) -> None:
        opened = self._opened
        if opened is None:
            return
        study = opened.study
        attrs = opened.geometry.attributes
        top_left = "\n".join(x for x in (
            format_patient_name(study.patient_name) if study else "", study.patient_id if study else "",
            f"{attrs.get('Modality', '')} {attrs.get('SeriesDescription', '')}".strip()) if x)
        top_right = ""
        if opened.result is not None:
            # The banner already says "not validated"; the corner keeps to the findings.
            text = opened.result.summary.split("not for diagnosis: ", 1)[-1] or opened.result.status
            top_right = "AI: " + (text if len(text) <= 60 else text[:59] + "…")
        c, w = self.window
        self.canvas.set_corners(top_left=top_left, top_right=top_right, bottom_left=self.slice_label.text(),
                                bottom_right=f"W {w:.0f}  L {c:.0f}  ×{self.canvas.zoom:.2f}")
