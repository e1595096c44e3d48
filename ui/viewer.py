"""The viewer: one series at a time, with window/level, zoom/pan, slice scrolling and the
model's evidence (CheXNet heatmap or BLAST-CT classes) one keystroke away.

The state (series, slice, window, what evidence is shown and how, zoom/pan) lives in a
Qt-free ``ViewState``; this widget writes key presses, drags and controls into it and
re-draws when it changes, so the rules are tested headless and the widgets only render.

Opening reads headers on a background thread, then the overlay file; pixels arrive slice
by slice from ``SeriesPixels``, the wanted slice first, so the first image shows without
waiting for the whole series or for the AI evidence.
"""

from __future__ import annotations

import logging
import time
from typing import Any

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

from app.core.models import ModelSpecs, default_specs
from app.core.service_api import StudyReader
from ui.canvas import ImageCanvas
from ui.findings_panel import FindingsPanel, preliminary_notice
from ui.tasks import TaskRunner
from ui.viewing.composition import LABEL_STYLES, compose_frame
from ui.viewing.image_loader import SeriesPixels
from ui.viewing.opened_series import OpenedSeries, prepare_series
from ui.viewing.overlay_loading import LoadedOverlay, load_overlay
from ui.viewing.overlays import LabelOverlay
from ui.viewing.presets import AS_STORED, PRESETS, presets_for
from ui.viewing.view_state import ViewState
from ui.worklist_model import NOT_VALIDATED_TEXT, format_patient_name

log = logging.getLogger(__name__)


def _set_quietly(widget: QWidget, setter: str, value: Any) -> None:
    """Mirror state into a control without the control writing it back."""
    widget.blockSignals(True)
    getattr(widget, setter)(value)
    widget.blockSignals(False)


class ViewerWidget(QWidget):
    back_requested = Signal()
    mark_reviewed = Signal(str)           # study_uid
    image_shown = Signal(float)           # seconds from open request to the first real image
    _slice_loaded = Signal(int, int)      # generation, index (from the pixel loader thread)

    def __init__(self, parent: QWidget | None = None, state: ViewState | None = None,
                 specs: ModelSpecs | None = None) -> None:
        super().__init__(parent)
        self.state = state or ViewState()
        self.specs = specs if specs is not None else default_specs()  # whose overlays this viewer reads
        self._tasks = TaskRunner("viewer-open", self)
        self._store: StudyReader | None = None
        self._pixels: SeriesPixels | None = None
        self._generation = 0
        self._open_clock = 0.0
        self._first_shown = False
        self.rendered: np.ndarray | None = None  # the last composed frame, before screen scaling
        self._slice_loaded.connect(self._on_slice_loaded, Qt.ConnectionType.QueuedConnection)
        self._build()
        self._follow_state()

    # -- the state, as the rest of the desktop and the tests read it --------------------------
    @property
    def index(self) -> int:
        return self.state.index

    @property
    def window(self) -> tuple[float, float]:  # type: ignore[override]  # (QWidget.window() is not used here)
        return self.state.window

    @property
    def opened(self) -> OpenedSeries | None:
        return self.state.opened

    @property
    def overlays_ready(self) -> bool:
        return self.state.overlays_ready

    @property
    def n_slices(self) -> int:
        return self.state.n_slices

    @property
    def study_uid(self) -> str | None:
        return self.state.opened.series.study_uid if self.state.opened else None

    @property
    def pixels(self) -> SeriesPixels | None:
        """The open series' slice cache (the benchmark waits for it to fill)."""
        return self._pixels

    # -- layout ----------------------------------------------------------------------------
    def _build(self) -> None:
        state = self.state
        self.banner = QLabel(f"⚠  {NOT_VALIDATED_TEXT.upper()}  ⚠")
        self.banner.setAlignment(Qt.AlignmentFlag.AlignCenter)
        self.banner.setStyleSheet("background:#b00020; color:white; font-weight:bold; font-size:16px; padding:6px;")
        self.banner.setVisible(False)
        # A partial ensemble's result: said above the image and on it, until the final one replaces it.
        self.preliminary_banner = QLabel("")
        self.preliminary_banner.setAlignment(Qt.AlignmentFlag.AlignCenter)
        self.preliminary_banner.setStyleSheet("background:#ef6c00; color:white; font-weight:bold; padding:4px;")
        self.preliminary_banner.setVisible(False)
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
        self.heatmap_box.setChecked(state.heatmap_shown)
        self.heatmap_box.toggled.connect(state.set_heatmap_shown)
        self.finding_combo = QComboBox()
        self.finding_combo.setToolTip("Finding whose class-activation map is shown")
        self.finding_combo.currentIndexChanged.connect(
            lambda _i: state.select_finding(self.finding_combo.currentData()))
        # Segmentation controls: one checkbox per class of the open series' model, made when its
        # labels arrive (names and colours from the model's spec, whatever the model)
        self.class_boxes: dict[str, QCheckBox] = {}
        self.mode_combo = QComboBox()
        self.mode_combo.addItems(list(LABEL_STYLES))
        self.mode_combo.setCurrentText(state.label_style)
        self.mode_combo.setToolTip("Fill or outline the segmentation (O)")
        self.mode_combo.currentTextChanged.connect(state.set_label_style)
        self.jump_button = QPushButton("Max slice (M)")
        self.jump_button.setToolTip("Jump to the slice with the most haemorrhage")
        self.jump_button.clicked.connect(self.jump_to_max)
        self.opacity = QSlider(Qt.Orientation.Horizontal)
        self.opacity.setRange(0, 100)
        self.opacity.setValue(round(state.opacity * 100))
        self.opacity.setFixedWidth(120)
        self.opacity.setToolTip("Overlay opacity")
        self.opacity.valueChanged.connect(lambda value: state.set_opacity(value / 100.0))

        overlay_row = QHBoxLayout()
        self.overlay_label = QLabel("AI overlay:")
        overlay_row.addWidget(self.overlay_label)
        overlay_row.addWidget(self.heatmap_box)
        overlay_row.addWidget(self.finding_combo)
        self.class_row = QHBoxLayout()
        overlay_row.addLayout(self.class_row)
        overlay_row.addWidget(self.mode_combo)
        overlay_row.addWidget(self.jump_button)
        overlay_row.addWidget(QLabel("Opacity"))
        overlay_row.addWidget(self.opacity)
        overlay_row.addStretch(1)

        self.canvas = ImageCanvas(state.camera)
        self.canvas.window_dragged.connect(state.drag_window)
        self.canvas.scrolled.connect(state.step_slice)
        self.slice_slider = QSlider(Qt.Orientation.Horizontal)
        self.slice_slider.setRange(0, 0)
        self.slice_slider.valueChanged.connect(state.set_slice)
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
        layout.addWidget(self.preliminary_banner)
        layout.addWidget(self.reason)
        layout.addLayout(top)
        layout.addLayout(overlay_row)
        layout.addWidget(split, 1)
        self._shortcuts()
        self._update_controls()

    def _shortcuts(self) -> None:
        state = self.state

        def key(seq: QKeySequence | str, slot: object) -> None:
            sc = QShortcut(QKeySequence(seq), self)
            sc.setContext(Qt.ShortcutContext.WidgetWithChildrenShortcut)
            sc.activated.connect(slot)

        key(QKeySequence(Qt.Key.Key_Down), lambda: state.step_slice(1))
        key(QKeySequence(Qt.Key.Key_Up), lambda: state.step_slice(-1))
        key(QKeySequence(Qt.Key.Key_PageDown), lambda: state.step_slice(10))
        key(QKeySequence(Qt.Key.Key_PageUp), lambda: state.step_slice(-10))
        key(QKeySequence(Qt.Key.Key_Home), lambda: state.set_slice(0))
        key(QKeySequence(Qt.Key.Key_End), lambda: state.set_slice(state.n_slices - 1))
        key("H", state.toggle_overlay)
        key("O", state.toggle_label_style)
        key("M", state.jump_to_max)
        key("F", self.fit)
        key(QKeySequence(Qt.Key.Key_Backspace), self.reset)
        key("+", lambda: state.camera.zoom_by(1.25))
        key("-", lambda: state.camera.zoom_by(0.8))
        key(QKeySequence(Qt.Key.Key_Escape), self.back_requested.emit)
        key("0", lambda: self.apply_preset(AS_STORED))
        for i, name in enumerate(PRESETS, start=1):
            key(str(i), lambda name=name: self.apply_preset(name))

    def _follow_state(self) -> None:
        """State changes -> controls and the frame (the only way the picture changes)."""
        events = self.state.events
        events.series.connect(self._on_series)
        events.overlays.connect(self._on_overlays)
        events.slice.connect(self._on_slice)
        events.window.connect(lambda _w: self._render())
        events.preset.connect(self._show_preset)
        events.heatmap_shown.connect(self._on_heatmap_shown)
        events.finding.connect(self._on_finding)
        events.classes_shown.connect(self._on_classes_shown)
        events.label_style.connect(self._on_label_style)
        events.opacity.connect(self._on_opacity)
        self.state.camera.changed.connect(lambda _c: self._update_corners())

    # -- opening -----------------------------------------------------------------------------
    def open_study(self, store: StudyReader, study_uid: str, series_uid: str | None = None) -> None:
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
        opened = self.state.opened
        if opened is None or self._store is None:
            return
        keep = (self.state.index, self.state.window)
        study_uid, series_uid = opened.series.study_uid, opened.series.series_uid
        self._generation += 1
        generation = self._generation
        store = self._store
        self._tasks.submit(lambda: prepare_series(store, study_uid, series_uid),
                           lambda reread: self._show_opened(generation, reread, keep=keep),
                           lambda exc: self._open_failed(generation, exc))

    def _open_failed(self, generation: int, exc: BaseException) -> None:
        if generation != self._generation:
            return
        log.warning("cannot open series: %s", exc)
        self._stop_pixels()
        self.state.close()
        self.canvas.set_placeholder(f"Cannot display this study: {exc}")

    def _show_opened(self, generation: int, opened: OpenedSeries,
                     keep: tuple[int, tuple[float, float]] | None = None) -> None:
        if generation != self._generation:
            return
        self._stop_pixels()
        self._pixels = SeriesPixels(opened.geometry, lambda i, g=generation: self._slice_loaded.emit(g, i))
        self.state.open(opened, keep)        # -> _on_series: controls, findings, first render
        self._pixels.start(self.state.index)
        result = opened.result
        if result is not None and result.overlay_path and self._store is not None:
            data_dir, geometry = self._store.data_dir, opened.geometry
            specs = self.specs
            self._tasks.submit(lambda: load_overlay(specs, result, data_dir, geometry),
                               lambda loaded: self._overlays_loaded(generation, loaded, jump=keep is None),
                               lambda exc: self._open_failed(generation, exc))

    def _overlays_loaded(self, generation: int, loaded: LoadedOverlay, jump: bool) -> None:
        if generation == self._generation:
            self.state.set_overlays(loaded, jump=jump)   # -> _on_overlays

    def _stop_pixels(self) -> None:
        if self._pixels is not None:
            self._pixels.stop()
            self._pixels = None

    def close_series(self) -> None:
        self._generation += 1
        self._stop_pixels()
        self.state.close()

    def shutdown(self) -> None:
        """Waits for a read in flight: the store may be closed right after (its SQLite
        connections closed under a running query crashed the process)."""
        self.close_series()
        self._tasks.shutdown(wait=True)

    def _series_chosen(self, i: int) -> None:
        uid = self.series_combo.itemData(i)
        opened = self.state.opened
        if opened is not None and self._store is not None and uid != opened.series.series_uid:
            self.open_study(self._store, opened.series.study_uid, uid)

    # -- user input that needs more than the state ------------------------------------------
    def set_slice(self, index: int) -> None:
        self.state.set_slice(index)

    def set_window(self, centre: float, width: float) -> None:
        self.state.set_window(centre, width)

    def apply_preset(self, name: str) -> None:
        """"As stored" on a file without a window needs the displayed pixels."""
        pixels = self._pixels.get(self.state.index) if self._pixels else None
        self.state.apply_preset(name, pixels)

    def toggle_overlay(self) -> None:
        self.state.toggle_overlay()

    def jump_to_max(self) -> None:
        self.state.jump_to_max()

    def overlay_opacity(self) -> float:
        return self.state.opacity

    def fit(self) -> None:
        self.state.camera.fit()

    def reset(self) -> None:
        self.state.camera.fit()
        self.apply_preset(AS_STORED)

    def _mark_reviewed(self) -> None:
        if self.study_uid:
            self.mark_reviewed.emit(self.study_uid)

    # -- state -> widgets --------------------------------------------------------------------
    def _on_series(self, opened: OpenedSeries | None) -> None:
        if opened is None:
            self.rendered = None
            self.canvas.set_placeholder("")
            self.banner.setVisible(False)
            self.preliminary_banner.setVisible(False)
            self.canvas.set_banner("")
            self._show_reason()
            self.findings.show_opened(None)
            self.slice_label.setText("")
            self._update_controls()
            return
        self._fill_series_combo(opened)
        self._fill_presets(opened)
        self._fill_findings_combo()
        result = opened.result
        not_validated = result is not None and result.status == "done" and not result.validated
        self.banner.setVisible(not_validated)
        preliminary = result is not None and result.preliminary
        self.preliminary_banner.setText(preliminary_notice(result) if result is not None and preliminary else "")
        self.preliminary_banner.setVisible(preliminary)
        marks = ([f"⚠ {NOT_VALIDATED_TEXT.upper()} ⚠"] if not_validated else []) + (
            [result.progress_text.upper()] if result is not None and preliminary else [])
        self.canvas.set_banner(" · ".join(marks))
        self._show_reason()
        self.findings.show_opened(opened, self.specs)
        self.slice_slider.blockSignals(True)
        self.slice_slider.setRange(0, max(0, opened.geometry.n_slices - 1))
        self.slice_slider.setValue(self.state.index)
        self.slice_slider.blockSignals(False)
        self.slice_slider.setVisible(opened.geometry.n_slices > 1)
        self._update_controls()
        self._render()

    def _on_overlays(self, opened: OpenedSeries) -> None:
        self._fill_findings_combo()
        self._update_controls()
        self._show_reason()
        self.findings.show_opened(opened, self.specs)
        _set_quietly(self.slice_slider, "setValue", self.state.index)
        self._render()

    def _on_slice(self, index: int) -> None:
        if self.slice_slider.value() != index:
            _set_quietly(self.slice_slider, "setValue", index)
        self._render()

    def _show_preset(self, name: str) -> None:
        i = self.preset_combo.findText(name)
        if i >= 0:
            _set_quietly(self.preset_combo, "setCurrentIndex", i)

    def _on_heatmap_shown(self, shown: bool) -> None:
        _set_quietly(self.heatmap_box, "setChecked", shown)
        self._render()

    def _on_finding(self, label: str | None) -> None:
        i = self.finding_combo.findData(label) if label is not None else -1
        if i >= 0:
            _set_quietly(self.finding_combo, "setCurrentIndex", i)
        self._render()

    def _on_classes_shown(self, shown: frozenset[str]) -> None:
        for name, box in self.class_boxes.items():
            _set_quietly(box, "setChecked", name in shown)
        self._render()

    def _on_label_style(self, style: str) -> None:
        _set_quietly(self.mode_combo, "setCurrentText", style)
        self._render()

    def _on_opacity(self, opacity: float) -> None:
        if self.opacity.value() != round(opacity * 100):
            _set_quietly(self.opacity, "setValue", round(opacity * 100))
        self._render()

    def _show_reason(self) -> None:
        opened = self.state.opened
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

    def _fill_series_combo(self, opened: OpenedSeries) -> None:
        self.series_combo.blockSignals(True)
        self.series_combo.clear()
        for s in opened.all_series:
            r = opened.results.get(s.series_uid)
            tag = f" – {r.priority.replace('_', ' ')}" if r else ""
            self.series_combo.addItem(f"{s.series_number or '?'}: {s.modality} {s.description} "
                                      f"({s.n_instances} img){tag}", s.series_uid)
            if s.series_uid == opened.series.series_uid:
                self.series_combo.setCurrentIndex(self.series_combo.count() - 1)
        self.series_combo.blockSignals(False)

    def _fill_presets(self, opened: OpenedSeries) -> None:
        self.preset_combo.blockSignals(True)
        self.preset_combo.clear()
        self.preset_combo.addItems(presets_for(opened.geometry.modality))
        self.preset_combo.setCurrentIndex(max(0, self.preset_combo.findText(self.state.preset)))
        self.preset_combo.blockSignals(False)

    def _fill_findings_combo(self) -> None:
        self.finding_combo.blockSignals(True)
        self.finding_combo.clear()
        for label, p in self.state.findings():
            self.finding_combo.addItem(f"{label} {p:.2f}" if p is not None else label, label)
        if self.state.finding is not None:
            self.finding_combo.setCurrentIndex(max(0, self.finding_combo.findData(self.state.finding)))
        self.finding_combo.blockSignals(False)

    def _fill_class_boxes(self, labels: LabelOverlay) -> None:
        """One checkbox per class, in the model's order and colours; rebuilt only when another
        model's classes arrive."""
        if tuple(self.class_boxes) == labels.classes:
            return
        for box in self.class_boxes.values():
            self.class_row.removeWidget(box)
            box.deleteLater()
        self.class_boxes = {}
        for name in labels.classes:
            box = QCheckBox(name)
            box.setToolTip(labels.names.get(name, name))
            box.setChecked(name in self.state.classes_shown)
            box.setStyleSheet("QCheckBox { color: rgb(%d,%d,%d); font-weight: bold; }" % labels.colour(name))
            box.toggled.connect(lambda checked, name=name: self.state.set_class_shown(name, checked))
            self.class_row.addWidget(box)
            self.class_boxes[name] = box

    def _update_controls(self) -> None:
        opened = self.state.opened
        has_cam = opened is not None and opened.cam is not None
        has_labels = opened is not None and opened.labels is not None
        for w in (self.heatmap_box, self.finding_combo):
            w.setVisible(has_cam)
        for w in (*self.class_boxes.values(), self.mode_combo, self.jump_button):
            w.setVisible(has_labels)
        if opened is not None and opened.labels is not None:
            self._fill_class_boxes(opened.labels)
        self.opacity.setVisible(has_cam or has_labels)
        self.overlay_label.setText("AI overlay:" if (has_cam or has_labels) else "No AI overlay")
        self.reviewed_button.setEnabled(opened is not None)

    # -- rendering ---------------------------------------------------------------------------
    def _on_slice_loaded(self, generation: int, index: int) -> None:
        if generation == self._generation and index == self.state.index:
            self._render()

    def _render(self) -> None:
        state = self.state
        opened = state.opened
        if opened is None or self._pixels is None:
            return
        pixels = self._pixels.get(state.index)
        self.slice_label.setText(state.slice_caption())
        if pixels is None:
            error = self._pixels.error(state.index)
            self.rendered = None
            self.canvas.set_placeholder(f"Slice {state.index + 1} cannot be displayed: {error}" if error
                                        else f"Loading slice {state.index + 1}…")
            return
        if state.settle_auto_window(pixels):
            return  # the window event has drawn the frame
        frame = compose_frame(pixels, state.frame_recipe())
        self.rendered = frame
        self.canvas.set_frame(frame, opened.geometry.aspect)
        self._update_corners()
        if not self._first_shown:
            self._first_shown = True
            self.image_shown.emit(time.perf_counter() - self._open_clock)

    def _update_corners(self) -> None:
        opened = self.state.opened
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
        c, w = self.state.window
        self.canvas.set_corners(top_left=top_left, top_right=top_right, bottom_left=self.slice_label.text(),
                                bottom_right=f"W {w:.0f}  L {c:.0f}  ×{self.state.camera.zoom:.2f}")
