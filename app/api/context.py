"""What the HTTP layer reads of the running service, handed over by the wiring (no globals)."""

from __future__ import annotations

import threading
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Any

from app.api.recent_errors import RecentErrors
from app.core.audit import AuditLog
from app.core.config import Config
from app.core.events import Event, EventHub, NodeStatus
from app.core.service_api import ModelStatusView
from app.core.store import StudyStore
from app.core.users import UserDirectory


@dataclass
class NodeState:
    """The DICOM node's last ``NodeStatus``, kept from the hub (the status page and /api/v1/status)."""

    listening: bool = False
    message: str = "not started"
    _lock: threading.Lock = field(default_factory=threading.Lock, repr=False)

    def on_event(self, event: Event) -> None:
        if isinstance(event, NodeStatus):
            with self._lock:
                self.listening, self.message = event.listening, event.message

    def snapshot(self) -> tuple[bool, str]:
        with self._lock:
            return self.listening, self.message


@dataclass
class ApiContext:
    config: Config
    store: StudyStore
    hub: EventHub
    users: UserDirectory
    audit: AuditLog
    node: NodeState
    models_status: Callable[[], Sequence[ModelStatusView]]
    queue_length: Callable[[], int]
    errors: RecentErrors
    outbox_status: Callable[[], Any] | None = None  # the outbox's counts per state, for /status
    send_study: Callable[[str], int] | None = None  # "Send to PACS" (the service's outbox)
    version: str = ""
