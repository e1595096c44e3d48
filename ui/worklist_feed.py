"""Fetches worklist rows off the GUI thread and coalesces bursts of events.

A 300-slice CT arrives as 300 InstanceStored events; the feed turns them into one row
query per study per batch, so the GUI thread only ever merges rows. The rows come from the
service's ``WorklistSource``: the local store (embedded) or the API (attached desktop).
"""

from __future__ import annotations

import logging
import threading
import time
from typing import Callable

from PySide6.QtCore import QObject, Signal

from app.core.events import Event, EventHub, ServiceConnection
from app.core.service_api import WorklistSource

log = logging.getLogger(__name__)


class WorklistFeed(QObject):
    rows_loaded = Signal(object)    # list[WorklistRow], the whole worklist
    rows_updated = Signal(object)   # list[WorklistRow] that are new or changed
    failed = Signal(str)

    def __init__(self, source: WorklistSource, batch_delay_s: float = 0.05, parent: QObject | None = None) -> None:
        super().__init__(parent)
        self.source = source
        self.batch_delay_s = batch_delay_s
        self._pending: set[str] = set()
        self._actions: list[Callable[[], None]] = []
        self._reload = False
        self._stop = False
        self._cond = threading.Condition()
        self._hub: EventHub | None = None
        self._thread = threading.Thread(target=self._run, name="worklist-feed", daemon=True)

    # -- wiring --------------------------------------------------------------------------
    def attach(self, hub: EventHub) -> None:
        """Subscribe directly: the hub thread only drops a UID in a set, it never waits."""
        self._hub = hub
        hub.subscribe(self._on_event)

    def _on_event(self, event: Event) -> None:
        if isinstance(event, ServiceConnection):
            if event.connected:  # (re)attached: events may have been missed meanwhile
                self.reload()
            return
        study_uid = getattr(event, "study_uid", None)
        if study_uid:
            self.refresh(study_uid)

    def start(self) -> None:
        self.reload()
        self._thread.start()

    def stop(self, timeout: float = 5.0) -> None:
        if self._hub is not None:
            self._hub.unsubscribe(self._on_event)
            self._hub = None
        with self._cond:
            self._stop = True
            self._cond.notify_all()
        if self._thread.is_alive():
            self._thread.join(timeout)

    # -- requests (any thread) ----------------------------------------------------------
    def reload(self) -> None:
        with self._cond:
            self._reload = True
            self._cond.notify_all()

    def refresh(self, study_uid: str) -> None:
        with self._cond:
            self._pending.add(study_uid)
            self._cond.notify_all()

    def set_reviewed(self, study_uid: str, reviewed: bool = True) -> None:
        """Persist, then refresh the row, in order on the feed thread."""
        def action() -> None:
            self.source.set_reviewed(study_uid, reviewed)
        with self._cond:
            self._actions.append(action)
            self._pending.add(study_uid)
            self._cond.notify_all()

    # -- feed thread ----------------------------------------------------------------------
    def _run(self) -> None:
        while True:
            with self._cond:
                while not (self._stop or self._reload or self._pending or self._actions):
                    self._cond.wait()
                if self._stop:
                    return
                reload_now = self._reload
            if not reload_now:
                time.sleep(self.batch_delay_s)  # let a burst of events collect into one batch
            with self._cond:
                reload, self._reload = self._reload, False
                pending, self._pending = self._pending, set()
                actions, self._actions = self._actions, []
            try:
                for action in actions:
                    action()
                if reload:
                    self.rows_loaded.emit(self.source.rows())
                elif pending:
                    rows = [row for uid in sorted(pending) if (row := self.source.row(uid)) is not None]
                    if rows:
                        self.rows_updated.emit(rows)
            except Exception as exc:  # the worklist must survive a transient SQLite or network error
                log.exception("worklist refresh failed")
                self.failed.emit(f"worklist refresh failed: {exc}")
