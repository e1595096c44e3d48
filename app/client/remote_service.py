"""``RemoteService``: a FirstLook service in another process (or on a server), offered to the
desktop through the same interface as the embedded one (``app.core.service_api.DesktopService``).

Server events become the very hub events the embedded service publishes, so the desktop's
feed, bridge and viewer work unchanged; the link's state is published as ``ServiceConnection``
(the status bar says "disconnected, retrying" while it is down) and the node's as ``NodeStatus``.
"""

from __future__ import annotations

import logging
import threading
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from app.client.api_client import ApiClient, ServiceUnavailable
from app.client.event_stream import EventStream, ServerEvent
from app.client.remote_store import RemoteStore
from app.client.remote_worklist import RemoteWorklist
from app.core.events import (
    AnalysisStarted,
    Event,
    EventHub,
    InstanceStored,
    NodeStatus,
    ResultStored,
    ReviewedChanged,
    SendStateChanged,
    SeriesReady,
    ServiceConnection,
)
from app.core.worklist_json import row_from_json

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class RemoteModelStatus:
    """One model as the service reports it (``app.core.service_api.ModelStatusView``)."""

    name: str
    state: str
    device: str
    message: str
    validated: bool | None


def to_hub_event(event: ServerEvent) -> Event | None:
    """The embedded service's event for a server event (None: nothing the desktop follows)."""
    d = event.data
    if event.name == "study_arrived":
        return InstanceStored(d["study_uid"], d["series_uid"], d.get("sop_uid", ""), d.get("outcome", "stored"))
    if event.name == "series_ready":
        return SeriesReady(d["study_uid"], d["series_uid"], d.get("why", ""))
    if event.name == "analysis_started":
        return AnalysisStarted(d["study_uid"], d["series_uid"])
    if event.name == "result_stored":
        return ResultStored(d["study_uid"], d["series_uid"], d.get("priority", ""), bool(d.get("preliminary", False)))
    if event.name == "reviewed_changed":
        return ReviewedChanged(d["study_uid"], bool(d["reviewed"]), d.get("reviewed_at"), d.get("user", ""))
    if event.name == "send_state_changed":
        return SendStateChanged(d["study_uid"])
    if event.name == "node_status":
        return NodeStatus(bool(d["listening"]), str(d.get("message", "")))
    return None


class RemoteService:
    """``start`` never fails for an absent server: the desktop opens, says it is disconnected
    and attaches as soon as the service answers. A refused token fails ``start`` (one sentence)."""

    status_max_age_s = 0.5  # the status bar polls models and queue each second: one request for both

    def __init__(self, base_url: str, token: str, cache_dir: Path, verify: bool | str = True,
                 hub: EventHub | None = None, token_file: Path | None = None,
                 cache_max_bytes: int | None = None) -> None:
        self.base_url = base_url.rstrip("/")
        self.api = ApiClient(self.base_url, token, verify=verify, token_file=token_file)
        self.hub = hub or EventHub()
        self.worklist = RemoteWorklist(self.api)
        self.store = RemoteStore(self.api, Path(cache_dir), self.queue_length, cache_max_bytes)
        self.events = EventStream(self.api, self._on_event, self._on_link)
        self._status: dict[str, Any] | None = None
        self._status_at = 0.0
        self._status_lock = threading.Lock()
        self._started = False

    @property
    def attached_to(self) -> str:
        return self.base_url

    # -- lifecycle -------------------------------------------------------------------------
    def start(self) -> bool:
        try:
            self._refresh_status()   # TokenRefused propagates: the desktop shows the sentence
        except ServiceUnavailable as exc:
            log.warning("%s; the desktop keeps retrying", exc)
        self.events.start()
        self._started = True
        return True

    def stop(self) -> None:
        if not self._started:
            return
        self._started = False
        self.events.stop()
        self.api.close()

    # -- status ----------------------------------------------------------------------------
    def _refresh_status(self) -> dict[str, Any]:
        status = self.api.get_json("/api/v1/status")
        with self._status_lock:
            self._status, self._status_at = status, time.monotonic()
        return status

    def status(self) -> dict[str, Any]:
        with self._status_lock:
            if self._status is not None and time.monotonic() - self._status_at < self.status_max_age_s:
                return self._status
        return self._refresh_status()

    def models_status(self) -> list[RemoteModelStatus]:
        return [RemoteModelStatus(str(m.get("name", "")), str(m.get("state", "")), str(m.get("device") or ""),
                                  str(m.get("message") or ""), m.get("validated"))
                for m in self.status().get("models") or []]

    def queue_length(self) -> int:
        return int(self.status().get("queue_length") or 0)

    def send_study(self, study_uid: str) -> int:
        """"Send to PACS" on the server (its outbox; audited there with this reader's name)."""
        return int(self.api.post_json(f"/api/v1/studies/{study_uid}/send", {}).get("queued") or 0)

    # -- live events (event-stream thread) -------------------------------------------------
    def _on_link(self, connected: bool, reason: str, retrying: bool) -> None:
        if connected:
            self.store.forget()  # events may have been missed while the link was down
            self.hub.publish(ServiceConnection(True, f"connected to {self.base_url}"))
            try:
                node = self._refresh_status().get("node") or {}
                self.hub.publish(NodeStatus(bool(node.get("listening")), str(node.get("message", ""))))
            except Exception as exc:  # the link is up; the node label waits for the next event
                log.warning("cannot read the service's status: %s", exc)
        else:
            message = f"disconnected, retrying ({reason})" if retrying else f"disconnected: {reason}"
            self.hub.publish(ServiceConnection(False, message))
            self.hub.publish(NodeStatus(False, "unknown while the service is not reachable"))

    def _on_event(self, event: ServerEvent) -> None:
        study_uid = event.data.get("study_uid")
        if isinstance(study_uid, str):
            self.store.forget(study_uid)  # before the hub hears it: a viewer re-reading gets the news
        row = event.data.get("row")
        if row:
            try:
                self.worklist.offer(row_from_json(row))
            except (ValueError, TypeError) as exc:
                log.warning("event %s carried an unreadable row: %s", event.name, exc)
        try:
            hub_event = to_hub_event(event)
        except (KeyError, TypeError) as exc:
            log.warning("event %s unreadable: %s", event.name, exc)
            return
        if hub_event is not None:
            self.hub.publish(hub_event)
