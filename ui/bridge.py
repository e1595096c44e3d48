"""EventHub -> Qt: events published on node/pipeline threads become queued Qt signals.

The hub calls subscribers on the publishing thread; emitting a signal there is cheap and
never blocks the SCP or the pipeline, and Qt queues delivery to the GUI thread.
"""

from __future__ import annotations

import logging

from PySide6.QtCore import QObject, Signal

from app.core.events import (
    AnalysisStarted,
    Event,
    EventHub,
    InstanceStored,
    NodeStatus,
    ResultStored,
    ReviewedChanged,
    SeriesReady,
    ServiceConnection,
)

log = logging.getLogger(__name__)


class EventBridge(QObject):
    instance_stored = Signal(str, str)        # study_uid, series_uid
    series_ready = Signal(str, str)           # study_uid, series_uid
    analysis_started = Signal(str, str)       # study_uid, series_uid
    result_stored = Signal(str, str, str)     # study_uid, series_uid, priority
    node_status = Signal(bool, str)           # listening, message
    connection = Signal(bool, str)            # attached desktop: connected, message
    study_touched = Signal(str)               # any event about this study

    def __init__(self, hub: EventHub, parent: QObject | None = None) -> None:
        super().__init__(parent)
        self._hub: EventHub | None = hub
        hub.subscribe(self._on_event)

    def detach(self) -> None:
        if self._hub is not None:
            self._hub.unsubscribe(self._on_event)
            self._hub = None

    def _on_event(self, event: Event) -> None:
        """Runs on the publisher's thread: only emit, never touch widgets here."""
        if isinstance(event, NodeStatus):
            self.node_status.emit(event.listening, event.message)
            return
        if isinstance(event, ServiceConnection):
            self.connection.emit(event.connected, event.message)
            return
        if isinstance(event, InstanceStored):
            self.instance_stored.emit(event.study_uid, event.series_uid)
        elif isinstance(event, SeriesReady):
            self.series_ready.emit(event.study_uid, event.series_uid)
        elif isinstance(event, AnalysisStarted):
            self.analysis_started.emit(event.study_uid, event.series_uid)
        elif isinstance(event, ResultStored):
            self.result_stored.emit(event.study_uid, event.series_uid, event.priority)
        elif not isinstance(event, ReviewedChanged):
            return
        self.study_touched.emit(event.study_uid)
