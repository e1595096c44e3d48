"""Run blocking work (SQLite, DICOM decoding, OpenVINO queries) off the GUI thread.

Results come back through a queued signal, so callbacks always run on the GUI thread.
"""

from __future__ import annotations

import itertools
import logging
from concurrent.futures import ThreadPoolExecutor
from typing import Any, Callable

from PySide6.QtCore import QObject, Qt, Signal

log = logging.getLogger(__name__)

Callback = Callable[[Any], None]
ErrorCallback = Callable[[BaseException], None]


class TaskRunner(QObject):
    """A one-thread executor (work is ordered) whose completions are delivered as Qt signals."""

    _done = Signal(int, object, object)  # token, result, exception

    def __init__(self, name: str, parent: QObject | None = None) -> None:
        super().__init__(parent)
        self._pool = ThreadPoolExecutor(max_workers=1, thread_name_prefix=name)
        self._pending: dict[int, tuple[Callback | None, ErrorCallback | None]] = {}
        self._tokens = itertools.count(1)
        self._closed = False
        self._done.connect(self._deliver, Qt.ConnectionType.QueuedConnection)

    def submit(self, fn: Callable[[], Any], on_done: Callback | None = None,
               on_error: ErrorCallback | None = None) -> None:
        if self._closed:
            return
        token = next(self._tokens)
        self._pending[token] = (on_done, on_error)

        def run() -> None:
            try:
                result, error = fn(), None
            except BaseException as exc:  # reported to the caller on the GUI thread
                result, error = None, exc
            if not self._closed:
                self._done.emit(token, result, error)

        self._pool.submit(run)

    def _deliver(self, token: int, result: Any, error: BaseException | None) -> None:
        on_done, on_error = self._pending.pop(token, (None, None))
        if error is not None:
            if on_error is not None:
                on_error(error)
            else:
                log.error("background task failed: %s", error, exc_info=error)
        elif on_done is not None:
            on_done(result)

    def shutdown(self, wait: bool = False) -> None:
        self._closed = True
        self._pool.shutdown(wait=wait, cancel_futures=True)
