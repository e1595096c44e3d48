"""Whether the node takes new work, and the C-STORE writes it must let finish before stopping.

A stop that cut a write short would leave a sender believing nothing was stored while half
a file sits in the store; a stop that waited for senders would never end. So stopping
refuses new connections and C-STOREs at once, then waits (bounded) for writes in flight.
"""

from __future__ import annotations

import logging
import threading
import time

log = logging.getLogger(__name__)


class Intake:
    """Open while the node runs; closed from the moment ``close`` is called until ``open``."""

    def __init__(self) -> None:
        self._closed = False
        self._inflight = 0
        self._cond = threading.Condition()

    @property
    def closed(self) -> bool:
        return self._closed

    def open(self) -> None:
        with self._cond:
            self._closed = False

    def admit(self, host: str) -> bool:
        """The accept thread's check for a new connection, before any byte is read."""
        if self._closed:
            log.info("connection from %s refused: node is stopping", host)
            return False
        return True

    def enter_store(self) -> bool:
        """Start one C-STORE write; False (answer Out of Resources) once stopping began."""
        with self._cond:
            if self._closed:
                return False
            self._inflight += 1
            return True

    def leave_store(self) -> None:
        with self._cond:
            self._inflight -= 1
            self._cond.notify_all()

    def close(self, timeout: float) -> None:
        """Refuse new work and wait up to ``timeout`` for the writes in flight."""
        deadline = time.monotonic() + timeout
        with self._cond:
            self._closed = True
            while self._inflight and time.monotonic() < deadline:
                self._cond.wait(max(0.0, deadline - time.monotonic()))
            if self._inflight:
                log.error("%d C-STORE write(s) still running after %.0f s; stopping anyway", self._inflight, timeout)
