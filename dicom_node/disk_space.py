"""The node's low-disk-space state: refusing new instances (0xA700) until space is freed.

A full disk is a state the user must see (status bar, log), not one 0xA700 per instance, so
only a change of state is logged and published as ``DiskSpaceChanged``.
"""

from __future__ import annotations

import logging
import threading

from app.core.events import DiskSpaceChanged, EventHub
from app.core.store import LowDiskSpace

log = logging.getLogger(__name__)


class DiskSpaceState:
    """Fed by the C-STORE path (a refusal, then a success) and by the service's periodic check."""

    def __init__(self, hub: EventHub) -> None:
        self.hub = hub
        self._refusing = False
        self._lock = threading.Lock()

    @property
    def refusing(self) -> bool:
        return self._refusing

    def note(self, problem: LowDiskSpace | None) -> None:
        """Enter (``problem``) or leave (None) the refusing state; publishes on the caller's
        thread, once per change."""
        with self._lock:
            changed = (problem is not None) != self._refusing
            self._refusing = problem is not None
        if not changed:
            return
        if problem is not None:
            log.error("REFUSING NEW INSTANCES (0xA700) until disk space is freed: %s", problem)
        else:
            log.warning("disk space is above the watermark again; accepting instances")
        self.hub.publish(DiskSpaceChanged(refusing=problem is not None,
                                          message="" if problem is None else str(problem)))
