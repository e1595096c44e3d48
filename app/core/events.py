"""Events that flow one way (node -> store -> pipeline -> worklist/UI), delivered to subscribers.

Subscribers are called on the publishing thread; the UI bridges them to queued Qt signals.
"""

from __future__ import annotations

import logging
import threading
from dataclasses import dataclass
from typing import Callable

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class InstanceStored:
    study_uid: str
    series_uid: str
    sop_uid: str
    outcome: str  # stored, duplicate, replaced


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


@dataclass(frozen=True)
class NodeStatus:
    listening: bool
    message: str  # "FIRSTLOOK on 127.0.0.1:11112" or the error that stopped it


Event = InstanceStored | SeriesReady | AnalysisStarted | ResultStored | NodeStatus
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
