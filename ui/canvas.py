"""The image canvas: draws a composed frame with the right physical aspect, zoom and pan.

Pixels are composed in numpy (``ui.viewing.composition``) and zoom/pan live in a Qt-free
``Camera``; this widget only maps them to the screen and turns mouse gestures into
intentions (window/level drag, pan and zoom into the camera, slice scroll).
"""

from __future__ import annotations

import numpy as np
from PySide6.QtCore import QPointF, QRectF, Qt, Signal
from PySide6.QtGui import QColor, QFont, QImage, QMouseEvent, QPainter, QPaintEvent, QWheelEvent
from PySide6.QtWidgets import QSizePolicy, QWidget

from ui.viewing.camera import Camera


def to_qimage(frame: np.ndarray) -> QImage:
    """Wrap a contiguous uint8 grey (H, W) or RGB (H, W, 3) array; the caller keeps it alive."""
    frame = np.ascontiguousarray(frame)
    h, w = frame.shape[:2]
    if frame.ndim == 2:
        return QImage(frame.data, w, h, frame.strides[0], QImage.Format.Format_Grayscale8)
    return QImage(frame.data, w, h, frame.strides[0], QImage.Format.Format_RGB888)


class ImageCanvas(QWidget):
    window_dragged = Signal(float, float)   # dx, dy in screen pixels (left button)
    scrolled = Signal(int)                  # wheel notches without Ctrl

    def __init__(self, camera: Camera | None = None, parent: QWidget | None = None) -> None:
        super().__init__(parent)
        self.camera = camera or Camera()
        self.camera.changed.connect(lambda _camera: self.update())
        self.setSizePolicy(QSizePolicy.Policy.Expanding, QSizePolicy.Policy.Expanding)
        self.setMinimumSize(320, 320)
        self.setFocusPolicy(Qt.FocusPolicy.StrongFocus)
        self.setAttribute(Qt.WidgetAttribute.WA_OpaquePaintEvent)
        self._frame: np.ndarray | None = None
        self._image: QImage | None = None
        self._aspect = 1.0  # physical pixel height / width
        self._placeholder = ""
        self._banner = ""
        self._corners: dict[str, str] = {}
        self._drag_from: QPointF | None = None
        self._drag_button = Qt.MouseButton.NoButton
        self._wheel_rest = 0

    # -- content ------------------------------------------------------------------------
    def set_frame(self, frame: np.ndarray, aspect: float) -> None:
        self._frame = np.ascontiguousarray(frame)
        self._image = to_qimage(self._frame)
        self._aspect = aspect if aspect > 0 else 1.0
        self._placeholder = ""
        self.update()

    def set_placeholder(self, text: str) -> None:
        self._frame = None
        self._image = None
        self._placeholder = text
        self.update()

    def set_banner(self, text: str) -> None:
        self._banner = text
        self.update()

    @property
    def banner(self) -> str:
        return self._banner

    def set_corners(self, **corners: str) -> None:
        """Keys: top_left, top_right, bottom_left, bottom_right."""
        self._corners = corners
        self.update()

    def has_image(self) -> bool:
        return self._image is not None

    # -- geometry ------------------------------------------------------------------------
    @property
    def zoom(self) -> float:
        return self.camera.zoom

    @property
    def pan(self) -> QPointF:
        return QPointF(*self.camera.pan)

    def fit(self) -> None:
        self.camera.fit()

    def zoom_by(self, factor: float) -> None:
        self.camera.zoom_by(factor)

    def image_rect(self) -> QRectF:
        """Where the frame lands on the widget: fitted, aspect-correct, then zoomed and panned."""
        if self._image is None:
            return QRectF()
        w_phys = float(self._image.width())
        h_phys = float(self._image.height()) * self._aspect
        scale = min(self.width() / w_phys, self.height() / h_phys) * self.zoom
        w, h = w_phys * scale, h_phys * scale
        x = (self.width() - w) / 2 + self.pan.x()
        y = (self.height() - h) / 2 + self.pan.y()
        return QRectF(x, y, w, h)

    # -- painting ------------------------------------------------------------------------
    def paintEvent(self, event: QPaintEvent) -> None:
        p = QPainter(self)
        p.fillRect(self.rect(), QColor("black"))
        if self._image is not None:
            p.setRenderHint(QPainter.RenderHint.SmoothPixmapTransform, self.zoom < 2.0)
            p.drawImage(self.image_rect(), self._image)
        elif self._placeholder:
            p.setPen(QColor("#bbbbbb"))
            p.drawText(self.rect(), Qt.AlignmentFlag.AlignCenter, self._placeholder)
        font = QFont(self.font())
        font.setPointSizeF(max(9.0, font.pointSizeF()))
        p.setFont(font)
        margin = 8
        top = margin
        if self._banner:
            band = QRectF(0, 0, self.width(), 30)
            p.fillRect(band, QColor(176, 0, 32, 235))
            bold = QFont(font)
            bold.setBold(True)
            p.setFont(bold)
            p.setPen(QColor("white"))
            p.drawText(band, Qt.AlignmentFlag.AlignCenter, self._banner)
            p.setFont(font)
            top = 30 + margin
        area = QRectF(margin, top, self.width() - 2 * margin, self.height() - top - margin)
        flags = {
            "top_left": Qt.AlignmentFlag.AlignLeft | Qt.AlignmentFlag.AlignTop,
            "top_right": Qt.AlignmentFlag.AlignRight | Qt.AlignmentFlag.AlignTop,
            "bottom_left": Qt.AlignmentFlag.AlignLeft | Qt.AlignmentFlag.AlignBottom,
            "bottom_right": Qt.AlignmentFlag.AlignRight | Qt.AlignmentFlag.AlignBottom,
        }
        for key, text in self._corners.items():
            if not text:
                continue
            p.setPen(QColor(0, 0, 0))
            p.drawText(area.translated(1, 1), flags[key], text)
            p.setPen(QColor(235, 235, 160))
            p.drawText(area, flags[key], text)
        p.end()

    # -- gestures ------------------------------------------------------------------------
    def mousePressEvent(self, event: QMouseEvent) -> None:
        self.setFocus()
        self._drag_from = event.position()
        button = event.button()
        if button == Qt.MouseButton.LeftButton and event.modifiers() & Qt.KeyboardModifier.ShiftModifier:
            button = Qt.MouseButton.MiddleButton  # Shift+drag pans on a one-button mouse
        self._drag_button = button

    def mouseMoveEvent(self, event: QMouseEvent) -> None:
        if self._drag_from is None:
            return
        delta = event.position() - self._drag_from
        self._drag_from = event.position()
        if self._drag_button == Qt.MouseButton.LeftButton:
            self.window_dragged.emit(delta.x(), delta.y())
        elif self._drag_button in (Qt.MouseButton.MiddleButton, Qt.MouseButton.RightButton):
            self.camera.pan_by(delta.x(), delta.y())

    def mouseReleaseEvent(self, event: QMouseEvent) -> None:
        self._drag_from = None
        self._drag_button = Qt.MouseButton.NoButton

    def mouseDoubleClickEvent(self, event: QMouseEvent) -> None:
        self.fit()

    def wheelEvent(self, event: QWheelEvent) -> None:
        delta = event.angleDelta().y()
        if event.modifiers() & Qt.KeyboardModifier.ControlModifier:
            self.zoom_by(1.15 if delta > 0 else 1 / 1.15)
            return
        self._wheel_rest += delta
        steps = int(self._wheel_rest / 120)
        if steps:
            self._wheel_rest -= steps * 120
            self.scrolled.emit(-steps)  # wheel towards the user = next slice
        event.accept()
