"""``firstlook`` with no sub-command: the desktop app.

Order matters: the window is shown first, then the service (node + model loading) starts
on a worker thread, so the radiologist sees progress instead of a frozen splash.
"""

from __future__ import annotations

import logging
import signal
import sys
from pathlib import Path

from PySide6.QtCore import Qt, QTimer
from PySide6.QtWidgets import QApplication

from app.core.config import Config
from app.core.models import ModelSpecs
from ui.main_window import MainWindow
from app.core.service_api import DesktopService
from ui.service_controller import ServiceController, ServiceFactory

log = logging.getLogger(__name__)


def wire(window: MainWindow, controller: ServiceController) -> None:
    """Connect the window and the service controller (also used by the screenshot script)."""

    def created(service: DesktopService) -> None:
        window.attach_backend(service.store, service.hub, service.models_status, service.queue_length,
                              service.send_study, worklist=service.worklist,
                              server=service.attached_to)

    def failed(message: str) -> None:
        window.status.set_node(False, f"service stopped: {message}")

    def saved(config: Config, restart_node: bool, reload_models: bool) -> None:
        if restart_node or reload_models:
            window.detach_backend()
            controller.restart(config)

    # Direct (same thread): the window must subscribe before start() publishes NodeStatus.
    controller.created.connect(created, Qt.ConnectionType.DirectConnection)
    controller.failed.connect(failed, Qt.ConnectionType.QueuedConnection)
    window.settings_saved.connect(saved)


def run_desktop(config: Config, service_factory: ServiceFactory, config_path: Path | None = None,
                specs: ModelSpecs | None = None) -> int:
    """``service_factory`` and ``specs`` come from the wiring (``app.cli``): the UI never builds
    the service itself, and reads results with the same model specs as the service."""
    app = QApplication.instance() or QApplication(sys.argv[:1])
    assert isinstance(app, QApplication)
    app.setApplicationName("FirstLook")
    window = MainWindow(config, config_path, specs=specs)
    controller = ServiceController(service_factory, config)
    wire(window, controller)
    window.show()           # first: the window appears before any model loads
    controller.start()      # then: node + models on the controller's thread
    # SIGINT/SIGTERM close the window like the user would, so the node stops cleanly. Python
    # runs signal handlers only between bytecodes, hence the idle timer while Qt's loop runs.
    wake = QTimer()
    wake.start(250)
    wake.timeout.connect(lambda: None)
    previous = {sig: signal.signal(sig, lambda _s, _f: QTimer.singleShot(0, window.close))
                for sig in (signal.SIGINT, signal.SIGTERM)}
    try:
        code = app.exec()
    finally:
        wake.stop()
        for sig, handler in previous.items():
            signal.signal(sig, handler)
        window.shutdown()
        controller.stop_and_wait()
    log.info("desktop closed")
    return int(code)
