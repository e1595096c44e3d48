"""The state of the open study, outside Qt: which series, which slice, which window, which
evidence is shown and how. Qt widgets render it and write user input into it (napari's
model/view split), so every viewer rule is testable headless.

Each setter emits its event only when the value really changes, once. ``series`` and
``overlays`` are coarse: after them, re-read everything.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np

from ui.viewing.camera import Camera
from ui.viewing.composition import LABEL_STYLES, FrameRecipe, LabelLayer, LabelStyle
from ui.viewing.events import Emitter
from ui.viewing.image_loader import auto_window
from ui.viewing.opened_series import OpenedSeries
from ui.viewing.overlay_loading import LoadedOverlay
from ui.viewing.presets import AS_STORED, PRESETS

DEFAULT_OPACITY = 0.45


@dataclass(frozen=True)
class ViewEvents:
    series: Emitter[OpenedSeries | None] = field(default_factory=lambda: Emitter("series"))
    overlays: Emitter[OpenedSeries] = field(default_factory=lambda: Emitter("overlays"))
    slice: Emitter[int] = field(default_factory=lambda: Emitter("slice"))
    window: Emitter[tuple[float, float]] = field(default_factory=lambda: Emitter("window"))
    preset: Emitter[str] = field(default_factory=lambda: Emitter("preset"))
    heatmap_shown: Emitter[bool] = field(default_factory=lambda: Emitter("heatmap_shown"))
    finding: Emitter[str | None] = field(default_factory=lambda: Emitter("finding"))
    classes_shown: Emitter[frozenset[str]] = field(default_factory=lambda: Emitter("classes_shown"))
    label_style: Emitter[LabelStyle] = field(default_factory=lambda: Emitter("label_style"))
    opacity: Emitter[float] = field(default_factory=lambda: Emitter("opacity"))


class ViewState:
    """One viewer's state. How the evidence is shown (heatmap on, classes, style, opacity)
    survives opening another series, as the radiologist set it; the rest is per series."""

    def __init__(self) -> None:
        self.events = ViewEvents()
        self.camera = Camera()
        self.opened: OpenedSeries | None = None
        self.overlays_ready = False
        self.index = 0
        self.window: tuple[float, float] = (40.0, 80.0)
        self.preset = AS_STORED
        self.needs_auto_window = False   # the file has no window: take one from the first pixels
        self.heatmap_shown = True
        self.finding: str | None = None
        self.classes_shown: frozenset[str] = frozenset()
        self.classes_seen: frozenset[str] = frozenset()  # a class seen for the first time is shown
        self.label_style: LabelStyle = "fill"
        self.opacity = DEFAULT_OPACITY
        self._start_index = 0

    # -- the series ---------------------------------------------------------------------------
    @property
    def n_slices(self) -> int:
        return self.opened.geometry.n_slices if self.opened else 0

    @property
    def invert(self) -> bool:
        return self.opened is not None and self.opened.geometry.monochrome1

    def open(self, opened: OpenedSeries, keep: tuple[int, tuple[float, float]] | None = None) -> None:
        """Show ``opened`` from its first slice and stored window, or, when its result was re-read,
        at the kept (slice, window)."""
        geometry = opened.geometry
        self.opened = opened
        self.overlays_ready = opened.result is None or not opened.result.overlay_path
        self.finding = None
        if keep is None:
            self.index = 0
            self.window = geometry.default_window or (0.0, 1.0)
            self.needs_auto_window = geometry.default_window is None
            self.preset = AS_STORED
            self.camera.fit()
        else:
            self.index = min(keep[0], geometry.n_slices - 1)
            self.window = keep[1]
            self.needs_auto_window = False
        self._start_index = self.index
        self.events.series.emit(opened)

    def set_overlays(self, loaded: LoadedOverlay, jump: bool = True) -> None:
        """The evidence was read: the strongest finding is selected and, unless the reader has
        moved on meanwhile, the slice with the most haemorrhage is shown."""
        opened = self.opened
        if opened is None:
            return
        opened.cam, opened.labels, opened.overlay_note = loaded.cam, loaded.labels, loaded.note
        self.overlays_ready = True
        if loaded.labels is not None:
            new = frozenset(loaded.labels.classes) - self.classes_seen
            self.classes_seen |= new
            self.classes_shown |= new  # announced by the coarse ``overlays`` event below
        findings = self.findings()
        self.finding = findings[0][0] if findings else None
        target = loaded.labels.max_slice() if loaded.labels is not None else None
        if jump and target is not None and self.index == self._start_index:
            self.index = target
        self.events.overlays.emit(opened)

    def close(self) -> None:
        self.opened = None
        self.overlays_ready = False
        self.events.series.emit(None)

    # -- slice and window -----------------------------------------------------------------------
    def set_slice(self, index: int) -> None:
        if self.opened is None:
            return
        index = int(min(max(index, 0), self.n_slices - 1))
        if index != self.index:
            self.index = index
            self.events.slice.emit(index)

    def step_slice(self, steps: int) -> None:
        self.set_slice(self.index + steps)

    def set_window(self, centre: float, width: float) -> None:
        self.needs_auto_window = False
        window = (float(centre), max(1.0, float(width)))
        if window != self.window:
            self.window = window
            self.events.window.emit(window)

    def drag_window(self, dx: float, dy: float) -> None:
        """Right widens, left narrows; down raises the level (image darker)."""
        centre, width = self.window
        step = max(width, 2.0) / 256.0
        self.set_window(centre + dy * step, width + dx * step * 2)

    def apply_preset(self, name: str, pixels: np.ndarray | None = None) -> None:
        """A named preset, or "As stored": the file's window, else one from ``pixels`` (the
        displayed slice)."""
        if self.opened is None:
            return
        if name in PRESETS:
            self.set_window(*PRESETS[name])
        else:
            default = self.opened.geometry.default_window
            if default is None and pixels is not None:
                default = auto_window(pixels)
            if default is not None:
                self.set_window(*default)
        if name != self.preset:
            self.preset = name
            self.events.preset.emit(name)

    def settle_auto_window(self, pixels: np.ndarray) -> bool:
        """Called with the first pixels shown; True when that set the window."""
        if not self.needs_auto_window:
            return False
        self.set_window(*auto_window(pixels))
        return True

    # -- evidence ---------------------------------------------------------------------------
    def set_heatmap_shown(self, shown: bool) -> None:
        if shown != self.heatmap_shown:
            self.heatmap_shown = shown
            self.events.heatmap_shown.emit(shown)

    def select_finding(self, label: str | None) -> None:
        if label != self.finding:
            self.finding = label
            self.events.finding.emit(label)

    def set_classes_shown(self, classes: frozenset[str]) -> None:
        if classes != self.classes_shown:
            self.classes_shown = classes
            self.events.classes_shown.emit(classes)

    def set_class_shown(self, name: str, shown: bool) -> None:
        self.set_classes_shown(self.classes_shown | {name} if shown else self.classes_shown - {name})

    def toggle_overlay(self) -> None:
        """H: the heatmap on a radiograph; every class at once on a CT (any shown -> none)."""
        opened = self.opened
        if opened is None:
            return
        if opened.cam is not None:
            self.set_heatmap_shown(not self.heatmap_shown)
        elif opened.labels is not None:
            self.set_classes_shown(frozenset() if self.classes_shown else self.classes_seen)

    def set_label_style(self, style: LabelStyle) -> None:
        if style not in LABEL_STYLES:
            raise ValueError(f"unknown label style {style!r}")
        if style != self.label_style:
            self.label_style = style
            self.events.label_style.emit(style)

    def toggle_label_style(self) -> None:
        self.set_label_style("outline" if self.label_style == "fill" else "fill")

    def set_opacity(self, opacity: float) -> None:
        opacity = float(min(max(opacity, 0.0), 1.0))
        if opacity != self.opacity:
            self.opacity = opacity
            self.events.opacity.emit(opacity)

    def findings(self) -> list[tuple[str, float | None]]:
        """The heatmap's findings with their probabilities, most probable first."""
        opened = self.opened
        if opened is None or opened.cam is None:
            return []
        probs = (opened.result.findings.get("probabilities") or {}) if opened.result else {}
        labels = sorted(opened.cam.labels, key=lambda lab: -float(probs.get(lab, 0.0)))
        return [(label, float(probs[label]) if label in probs else None) for label in labels]

    def max_slice(self) -> int | None:
        """The slice with the most voxels of the shown classes (of all classes when none is shown)."""
        if self.opened is None or self.opened.labels is None:
            return None
        return self.opened.labels.max_slice(set(self.classes_shown) or None)

    def jump_to_max(self) -> None:
        target = self.max_slice()
        if target is not None:
            self.set_slice(target)

    # -- what to draw ---------------------------------------------------------------------------
    def frame_recipe(self) -> FrameRecipe:
        """How the displayed slice is composed now (``compose_frame`` adds the pixels)."""
        opened = self.opened
        cam = labels = None
        if opened is not None and opened.cam is not None and self.heatmap_shown and self.finding:
            result_sop = opened.result.findings.get("sop_uid") if opened.result else None
            sop = opened.geometry.slices[self.index].sop_uid
            if result_sop in (None, sop) or opened.geometry.n_slices == 1:
                cam = opened.cam.for_label(self.finding)
        if opened is not None and opened.labels is not None:
            plane = opened.labels.by_slice[self.index]
            if plane is not None:
                labels = LabelLayer(plane, opened.labels.classes, self.classes_shown, self.label_style,
                                    opened.labels.colours)
        return FrameRecipe(window=self.window, invert=self.invert, cam=cam, labels=labels, opacity=self.opacity)

    def slice_caption(self) -> str:
        """'Image 3 / 15 · 10.0 mm · #13 · IPH': where the reader is and what is on the slice."""
        opened = self.opened
        if opened is None:
            return ""
        info = opened.geometry.slices[self.index]
        text = f"Image {self.index + 1} / {opened.geometry.n_slices}"
        if info.location_mm is not None:
            text += f" · {info.location_mm:.1f} mm"
        if info.instance_number is not None:
            text += f" · #{info.instance_number}"
        if opened.labels is not None:
            present = [n for n in opened.labels.classes if opened.labels.voxels[n][self.index]]
            if present:
                text += " · " + ", ".join(present)
        return text
