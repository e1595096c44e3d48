"""When is a series complete enough to analyse?

DICOM has no "end of series" message. A series is taken as ready when no instance of it
arrived for a quiet period (modalities that keep an association open) or as soon as the
last association that carried it is released (most senders: one association per push).
One timer thread serves every series, so a busy night with many series costs no threads;
every ``on_ready`` call is made from that thread, in deadline order.
"""

from __future__ import annotations

import logging
import threading
import time
from dataclasses import dataclass, field
from typing import Callable, Hashable

from app.core.events import SeriesReady

log = logging.getLogger(__name__)

QUIET = "quiet period"
RELEASED = "association released"


@dataclass
class _Pending:
    study_uid: str
    last_arrival: float
    associations: set[Hashable] = field(default_factory=set)
    released_early: bool = False  # every association that carried it has been released


class SeriesReadinessTracker:
    """Turns a stream of stored instances into one ``SeriesReady`` per burst of a series."""

    def __init__(self, quiet_period_s: float, on_ready: Callable[[SeriesReady], None],
                 clock: Callable[[], float] = time.monotonic) -> None:
        if quiet_period_s <= 0:
            raise ValueError("quiet_period_s must be > 0")
        self.quiet_period_s = float(quiet_period_s)
        self._on_ready = on_ready
        self._clock = clock
        self._pending: dict[str, _Pending] = {}
        self._cond = threading.Condition()
        self._thread: threading.Thread | None = None
        self._stopping = False

    # -- inputs (called from association threads) ------------------------------------
    def instance_arrived(self, study_uid: str, series_uid: str, association: Hashable | None = None) -> None:
        with self._cond:
            entry = self._pending.get(series_uid)
            if entry is None:
                entry = self._pending[series_uid] = _Pending(study_uid, self._clock())
            entry.last_arrival = self._clock()
            entry.released_early = False
            if association is not None:
                entry.associations.add(association)
            self._cond.notify()

    def association_ended(self, association: Hashable, released: bool = True) -> None:
        """A release makes its series ready now (unless another open association still
        carries them); an abort only forgets the association and leaves the quiet period
        to decide, since an aborted sender usually retries."""
        with self._cond:
            for entry in self._pending.values():
                if association in entry.associations:
                    entry.associations.discard(association)
                    if released and not entry.associations:
                        entry.released_early = True
            self._cond.notify()

    def pending(self) -> list[str]:
        with self._cond:
            return list(self._pending)

    # -- timer thread -------------------------------------------------------------------
    def start(self) -> None:
        with self._cond:
            if self._thread is not None:
                return
            self._stopping = False
            self._thread = threading.Thread(target=self._run, name="series-readiness", daemon=True)
            self._thread.start()

    def stop(self, flush: bool = False, timeout: float = 5.0) -> None:
        """Stop the timer thread; with ``flush`` every pending series is emitted first
        (a clean shutdown must not leave a received series waiting for a next start)."""
        with self._cond:
            thread, self._thread = self._thread, None
            if flush:
                for entry in self._pending.values():
                    entry.released_early = True
            self._stopping = True
            self._cond.notify()
        if thread is not None:
            thread.join(timeout)

    def _due(self, now: float) -> tuple[list[SeriesReady], float | None]:
        ready: list[SeriesReady] = []
        next_deadline: float | None = None
        for series_uid, entry in list(self._pending.items()):
            deadline = entry.last_arrival + self.quiet_period_s
            if entry.released_early or deadline <= now:
                why = RELEASED if entry.released_early else QUIET
                ready.append(SeriesReady(entry.study_uid, series_uid, why))
                del self._pending[series_uid]
            elif next_deadline is None or deadline < next_deadline:
                next_deadline = deadline
        return ready, next_deadline

    def _run(self) -> None:
        while True:
            with self._cond:
                ready, next_deadline = self._due(self._clock())
                if not ready:
                    if self._stopping:
                        return
                    timeout = None if next_deadline is None else max(0.0, next_deadline - self._clock())
                    self._cond.wait(timeout)
                    continue
            for event in ready:  # outside the lock: on_ready may take its time
                try:
                    self._on_ready(event)
                except Exception:  # one failing consumer must not stop readiness for the rest
                    log.exception("series-ready handler failed for %s", event.series_uid)
