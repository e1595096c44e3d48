"""Zoom and pan of the displayed image, as state the canvas draws and gestures write.

Zoom is relative to "fitted" (1.0 = the whole image fits the canvas, aspect kept); pan is the
image centre's offset from the canvas centre in screen pixels, so a drag moves the image by
exactly the distance the mouse moved, as before.
"""

from __future__ import annotations

from ui.viewing.events import Emitter

MIN_ZOOM = 0.1
MAX_ZOOM = 20.0


class Camera:
    def __init__(self) -> None:
        self.zoom = 1.0
        self.pan: tuple[float, float] = (0.0, 0.0)
        self.changed: Emitter[Camera] = Emitter("camera")

    def fit(self) -> None:
        self._set(1.0, (0.0, 0.0))

    def zoom_by(self, factor: float) -> None:
        self._set(float(min(max(self.zoom * factor, MIN_ZOOM), MAX_ZOOM)), self.pan)

    def pan_by(self, dx: float, dy: float) -> None:
        self._set(self.zoom, (self.pan[0] + dx, self.pan[1] + dy))

    def _set(self, zoom: float, pan: tuple[float, float]) -> None:
        if (zoom, pan) == (self.zoom, self.pan):
            return
        self.zoom, self.pan = zoom, pan
        self.changed.emit(self)
