"""Events that flow one way (node -> store -> pipeline -> worklist/UI), delivered to subscribers.

Subscribers are called on the publishing thread; the UI bridges them to queued Qt signals.

The DICOM node's catalogue (``dicom_node`` reports only through these, never callbacks):

``InstanceStored``    after ``StudyStore.store_instance`` returned and before the C-STORE
                      response is sent, on the association's thread. ``association`` is the
                      node's key of that association (None when not received over DICOM).
``AssociationEnded``  when an accepted association is released or aborted, after its audit
                      line: on that association's thread, or on the stopping thread when the
                      node aborts it (only once its C-STORE writes finished). Either way a
                      subscriber sees every ``InstanceStored`` of an association before its
                      ``AssociationEnded``.
``DiskSpaceChanged``  once per change of the refusing-for-lack-of-space state, on the thread
                      that noticed it: an association thread (a refusal, or the first success
                      after one) or whoever calls ``StorageSCP.note_space`` (the service's
                      periodic check, its start).

``ReviewedChanged``   after the reviewed flag of a study was written to the store, on the writer's
                      thread (the API's request thread for a desktop attached over HTTP).
                      ``user`` is who changed it (the API user, or the OS user of a desktop).

Node events hold up a sender while subscribers run: subscribers record, signal or publish
further events, they never block on I/O or call back into the node.
"""

from __future__ import annotations

import logging
import threading
from dataclasses import dataclass
from typing import Callable, Hashable

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class InstanceStored:
    study_uid: str
    series_uid: str
    sop_uid: str
    outcome: str  # stored, duplicate, replaced
    association: Hashable | None = None  # the node's key of the association that carried it
    priority: str | None = None  # "high"/"low" when the C-STORE request asked for it (job_priority)


@dataclass(frozen=True)
class SeriesReady:
    study_uid: str
    series_uid: str
    why: str  # "quiet period" or "association released"


@dataclass(frozen=True)
class AnalysisStarted:
    study_uid: str
    series_uid: str


@dataclass(frozen=True)
class ResultStored:
    study_uid: str
    series_uid: str
    priority: str
    preliminary: bool = False  # a partial ensemble's result; the final one follows (and is the one to send)


@dataclass(frozen=True)
class ReviewedChanged:
    study_uid: str
    reviewed: bool
    reviewed_at: float | None  # the store's reviewed_at after the change (None: not reviewed)
    user: str = ""


@dataclass(frozen=True)
class SendStateChanged:
    """The outbox sent (or failed to send) objects of a study, or queued them (outbox worker thread)."""

    study_uid: str


@dataclass(frozen=True)
class NodeStatus:
    listening: bool
    message: str  # "FIRSTLOOK on 127.0.0.1:11112" or the error that stopped it


@dataclass(frozen=True)
class AssociationEnded:
    association: Hashable  # the key its InstanceStored events carried
    released: bool  # False: aborted (by the peer, the network, or the node stopping)


@dataclass(frozen=True)
class DiskSpaceChanged:
    refusing: bool  # True: every C-STORE is answered 0xA700 until space is freed
    message: str  # why it refuses (the store's words); empty once it accepts again


@dataclass(frozen=True)
class ServiceConnection:
    """A desktop attached over the API (``app.client``) lost its service (``connected`` False:
    it keeps retrying) or reached it (again); the embedded service never publishes it."""

    connected: bool
    message: str  # "connected to http://127.0.0.1:11113" or "disconnected, retrying (<why>)"


Event = (InstanceStored | SeriesReady | AnalysisStarted | ResultStored | ReviewedChanged | NodeStatus | AssociationEnded
         | DiskSpaceChanged | ServiceConnection | SendStateChanged)
Subscriber = Callable[[Event], None]


class EventHub:
    def __init__(self) -> None:
        self._subscribers: list[Subscriber] = []
        self._lock = threading.Lock()

    def subscribe(self, subscriber: Subscriber) -> None:
        with self._lock:
            self._subscribers.append(subscriber)

    def unsubscribe(self, subscriber: Subscriber) -> None:
        with self._lock:
            if subscriber in self._subscribers:
                self._subscribers.remove(subscriber)

    def publish(self, event: Event) -> None:
        with self._lock:
            subscribers = list(self._subscribers)
        for subscriber in subscribers:
            try:
                subscriber(event)
            except Exception:  # one faulty subscriber must not stop the node or the pipeline
                log.exception("event subscriber failed on %s", type(event).__name__)
