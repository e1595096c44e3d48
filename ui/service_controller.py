"""Owns the node + pipeline service for the desktop, always off the GUI thread.

``Service(config)`` may load models and bind a port; doing that on the GUI thread would
freeze the window, so construction, start, restart and stop run on one ordered worker
thread and report back with queued signals.
"""

from __future__ import annotations

import logging
from typing import Callable

from PySide6.QtCore import QObject, Signal

from app.core.config import Config
from app.core.service_api import DesktopService
from ui.tasks import TaskRunner

log = logging.getLogger(__name__)

ServiceFactory = Callable[[Config], DesktopService]   # handed in by the wiring (app.cli)


class ServiceController(QObject):
    created = Signal(object)     # the service exists: its store and hub can be used
    started = Signal(object)     # start() returned
    failed = Signal(str)
    stopped = Signal()

    def __init__(self, factory: ServiceFactory, config: Config, parent: QObject | None = None) -> None:
        super().__init__(parent)
        self.factory = factory
        self.config = config
        self.service: DesktopService | None = None
        self._live: DesktopService | None = None  # set on the worker thread, so exit can stop it
        self._tasks = TaskRunner("service-control", self)

    def start(self) -> None:
        config = self.config
        self._tasks.submit(lambda: self._create(config), self._on_created, self._on_failed)

    def _create(self, config: Config) -> DesktopService:
        service = self.factory(config)
        if not isinstance(service, DesktopService):  # else the status poller would fail silently, every second
            raise TypeError(f"the service factory built a {type(service).__name__}, which lacks the desktop's "
                            "interface (app.core.service_api.DesktopService)")
        self._live = service
        return service

    def _on_created(self, service: DesktopService) -> None:
        self.service = service
        self.created.emit(service)
        self._tasks.submit(service.start, lambda _r: self.started.emit(service), self._on_failed)

    def _on_failed(self, exc: BaseException) -> None:
        log.error("service failed: %s", exc, exc_info=exc)
        self.failed.emit(f"{exc.__class__.__name__}: {exc}")

    def restart(self, config: Config) -> None:
        """Apply new settings: stop the running service, then build and start a new one."""
        old = self.service
        self.config = config
        self.service = None

        def stop_old() -> None:
            if old is not None:
                old.stop()
            self._live = None

        self._tasks.submit(stop_old, lambda _r: self.start(), self._on_failed)

    def stop_and_wait(self) -> None:
        """At exit, after the event loop ended: blocking is fine there and nothing else runs."""
        self._tasks.shutdown(wait=True)
        service = self._live or self.service
        if service is not None:
            try:
                service.stop()
            except Exception:
                log.exception("service did not stop cleanly")
        self.service = self._live = None
        self.stopped.emit()
