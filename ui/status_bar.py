"""Status bar: DICOM node state, each model with its device (and loading progress), queue.

Model state and queue length are polled on a background thread (the pipeline's status
call takes a lock and the queue is a SQLite count), then handed over by queued signal.
"""

from __future__ import annotations

import logging
import threading
from dataclasses import dataclass
from collections.abc import Iterable
from typing import Callable

from PySide6.QtCore import QObject, Signal
from PySide6.QtWidgets import QLabel, QProgressBar, QStatusBar, QWidget

from app.core.service_api import ModelStatusView

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class ModelState:
    name: str
    device: str
    state: str      # waiting, loading, ready, unavailable (or whatever the pipeline reports)
    message: str = ""
    validated: bool | None = None

    @property
    def ready(self) -> bool:
        return self.state.lower() in ("ready", "loaded")

    @property
    def settled(self) -> bool:
        """Finished loading, one way or the other."""
        return self.ready or self.state.lower() in ("unavailable", "failed", "error", "disabled")


def to_model_states(items: Iterable[ModelStatusView] | None) -> list[ModelState]:
    """Copied on the poller thread, so the GUI never reads objects the pipeline may change."""
    return [ModelState(item.name, item.device or "", item.state or "", item.message or "", item.validated)
            for item in items or []]


class StatusPoller(QObject):
    """Calls the status sources every ``interval_s`` on its own thread."""

    polled = Signal(object, object)   # list[ModelState] | None, queue length | None

    def __init__(self, models: Callable[[], Iterable[ModelStatusView]] | None, queue: Callable[[], int] | None,
                 interval_s: float = 1.0, parent: QObject | None = None) -> None:
        super().__init__(parent)
        self._models = models
        self._queue = queue
        self.interval_s = interval_s
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, name="status-poller", daemon=True)

    def start(self) -> None:
        self._thread.start()

    def stop(self, timeout: float = 3.0) -> None:
        self._stop.set()
        if self._thread.is_alive():
            self._thread.join(timeout)

    def _run(self) -> None:
        while not self._stop.is_set():
            models: list[ModelState] | None = None
            queue: int | None = None
            try:
                if self._models is not None:
                    models = to_model_states(self._models())
                if self._queue is not None:
                    queue = int(self._queue())
            except Exception as exc:  # a status hiccup must not kill the poller
                log.debug("status poll failed: %s", exc)
            self.polled.emit(models, queue)
            self._stop.wait(self.interval_s)


class FirstLookStatusBar(QStatusBar):
    def __init__(self, parent: QWidget | None = None) -> None:
        super().__init__(parent)
        self.node_label = QLabel("● DICOM node: starting…")
        self.models_label = QLabel("Models: loading…")
        self.progress = QProgressBar()
        self.progress.setFixedWidth(140)
        self.progress.setRange(0, 0)  # busy until the first report
        self.progress.setFormat("loading models %v/%m")
        self.queue_label = QLabel("Queue: –")
        self.server_label = QLabel()          # attached desktops only: the link to the service
        self.server_label.setVisible(False)
        self.addWidget(self.server_label)
        self.addWidget(self.node_label)
        self.addWidget(self.models_label, 1)
        self.addPermanentWidget(self.progress)
        self.addPermanentWidget(self.queue_label)

    def set_node(self, listening: bool, message: str) -> None:
        colour = "#2e7d32" if listening else "#c62828"
        if listening and "refusing" in message.lower():  # listening, but answering 0xA700 (low disk space)
            colour = "#ef6c00"
        self.node_label.setText(f"<span style='color:{colour}'>●</span> DICOM node: {message}")
        self.node_label.setToolTip(message)

    def set_models(self, models: list[ModelState]) -> None:
        if not models:
            return
        parts = []
        for m in models:
            text = f"{m.name}: {m.state}"
            if m.device:
                text += f" on {m.device}"
            if m.validated is False and m.ready:
                text += " (NOT VALIDATED)"
            parts.append(text)
        self.models_label.setText("Models: " + " · ".join(parts))
        self.models_label.setToolTip("\n".join(f"{m.name}: {m.state} {m.device} {m.message}".strip() for m in models))
        settled = sum(1 for m in models if m.settled)
        self.progress.setRange(0, len(models))
        self.progress.setValue(settled)
        self.progress.setVisible(settled < len(models))

    def set_connection(self, connected: bool, message: str) -> None:
        """An attached desktop's link to its service; what is open stays open while it retries."""
        colour = "#2e7d32" if connected else "#c62828"
        self.server_label.setText(f"<span style='color:{colour}'>●</span> Server: {message}")
        self.server_label.setToolTip(message)
        self.server_label.setVisible(True)

    def set_models_unknown(self) -> None:
        self.models_label.setText("Models: no analysis service attached")
        self.progress.setVisible(False)

    def set_queue(self, n: int) -> None:
        self.queue_label.setText(f"Queue: {n}")

    def set_service_message(self, text: str) -> None:
        self.showMessage(text, 8000)
