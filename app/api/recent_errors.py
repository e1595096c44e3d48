"""The last warnings and errors of the service, kept in memory for IT's status page."""

from __future__ import annotations

import collections
import logging
import threading
import time
from typing import Any


class RecentErrors(logging.Handler):
    """A logging handler (WARNING and up) that keeps the last ``size`` records; never raises."""

    def __init__(self, size: int = 20) -> None:
        super().__init__(logging.WARNING)
        self._records: collections.deque[dict[str, Any]] = collections.deque(maxlen=size)
        self._guard = threading.Lock()

    def emit(self, record: logging.LogRecord) -> None:
        try:
            message = record.getMessage()
        except Exception:  # a bad format string must not break logging
            message = str(record.msg)
        with self._guard:
            self._records.append({"time": record.created, "level": record.levelname,
                                  "logger": record.name, "message": message[:500]})

    def recent(self) -> list[dict[str, Any]]:
        """Newest first."""
        with self._guard:
            return list(reversed(self._records))

    def install(self) -> None:
        logging.getLogger().addHandler(self)

    def remove(self) -> None:
        logging.getLogger().removeHandler(self)


def stamp(t: float) -> str:
    return time.strftime("%Y-%m-%d %H:%M:%S", time.localtime(t))
