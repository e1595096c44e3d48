"""The outbox worker: one thread per destination sends due objects over one association per
batch and records each outcome, off the node's and the GUI's threads.

Success: sent. A warning status (0xB000 range, and 0x0001/0x0107/0x0116): sent, and logged.
A failure status or a network error (refused association, timeout): failed, retried after an
exponential backoff capped at ``retry_max_s``. After a refused association the destination
waits for that retry time instead of trying the next batch at once.
"""

from __future__ import annotations

import logging
import threading
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Callable, Protocol, Sequence

from app.core.audit import OBJECTS_SENT, AuditLog
from app.core.crashpoints import crash_point
from app.core.destinations import Destination
from app.core.store import StudyStore
from app.core.store.outbox_queue import Claimed

log = logging.getLogger(__name__)

WARNING_STATUSES = (0x0001, 0x0107, 0x0116)
BATCH = 50


@dataclass(frozen=True)
class SendOutcome:
    """One object's C-STORE: the DIMSE status, or None and the network error."""

    status: int | None
    error: str | None = None


class Sender(Protocol):
    """C-STORE these files to ``destination`` over one association; one outcome per file.
    ``on_outcome(index, outcome)``, when given, is called as each response arrives."""

    def __call__(self, destination: Destination, files: Sequence[Path],
                 on_outcome: Callable[[int, SendOutcome], None] | None = None) -> list[SendOutcome]: ...


def classify_status(status: int | None) -> str:
    """'success', 'warning' (counts as sent), or 'failure' (retried)."""
    if status == 0x0000:
        return "success"
    if status is not None and (0xB000 <= status <= 0xBFFF or status in WARNING_STATUSES):
        return "warning"
    return "failure"


def backoff_delay(attempts: int, base_s: float, max_s: float) -> float:
    """Seconds before the next try after ``attempts`` failed ones: base, 2 base, 4 base, ... capped."""
    return min(max_s, base_s * (2 ** max(0, min(attempts - 1, 30))))


class OutboxWorker:
    def __init__(self, store: StudyStore, destinations: Sequence[Destination], sender: Sender, audit: AuditLog,
                 calling_ae: str, retry_s: float = 10.0, retry_max_s: float = 600.0,
                 on_change: Callable[[str], None] | None = None) -> None:
        """``on_change(study_uid)`` is called after a study's send state changed (the wiring
        publishes it on the hub)."""
        self.store = store
        self.destinations = {d.name: d for d in destinations}
        self.sender = sender
        self.audit = audit
        self.calling_ae = calling_ae
        self.retry_s = retry_s
        self.retry_max_s = retry_max_s
        self.on_change = on_change
        self._stop = threading.Event()
        self._wake = {name: threading.Event() for name in self.destinations}
        self._threads: list[threading.Thread] = []

    def start(self) -> None:
        self._stop.clear()
        self._threads = [threading.Thread(target=self._run, args=(d,), name=f"outbox-{d.name}", daemon=True)
                         for d in self.destinations.values()]
        for thread in self._threads:
            thread.start()

    def stop(self, timeout: float = 30.0) -> None:
        self._stop.set()
        for wake in self._wake.values():
            wake.set()
        for thread in self._threads:
            thread.join(timeout)
        self._threads = []

    def notify(self) -> None:
        """New rows are queued (a result stored, a re-send asked): look now."""
        for wake in self._wake.values():
            wake.set()

    # -- one destination ------------------------------------------------------------------------------
    def _run(self, destination: Destination) -> None:
        wake = self._wake[destination.name]
        while not self._stop.is_set():
            try:
                batch = self.store.outbox.claim(destination.name, BATCH)
            except Exception:
                log.exception("the outbox of %s cannot be read; trying again", destination.name)
                self._stop.wait(5.0)
                continue
            if not batch:
                due = self.store.outbox.next_due(destination.name)
                wait = 5.0 if due is None else min(5.0, max(0.02, due - time.time()))
                wake.wait(wait)
                wake.clear()
                continue
            refused = self._send(destination, batch)
            if refused:  # the destination is down: wait for the retry time (or a re-send asked)
                due = self.store.outbox.next_due(destination.name)
                if due is not None and due > time.time():
                    wake.wait(due - time.time())
                    wake.clear()

    def _send(self, destination: Destination, batch: list[Claimed]) -> bool:
        """Send one batch and record every outcome, each as soon as its C-STORE response is in
        (a crash then repeats at most the object in flight); True when nothing got through."""
        paths = [self.store.data_dir / c.path for c in batch]
        records: dict[int, dict[str, object]] = {}

        def record(i: int, outcome: SendOutcome) -> None:
            if i in records or not 0 <= i < len(batch):
                return
            crash_point("outbox-sent")  # the peer has the object, its row still says 'sending'
            records[i] = self._record(destination, batch[i], outcome)

        try:
            outcomes = list(self.sender(destination, paths, record))
        except Exception as exc:  # a sender bug must not end the worker: retried like a network error
            log.exception("sending to %s failed", destination.name)
            outcomes = [SendOutcome(None, f"{exc.__class__.__name__}: {exc}")] * len(batch)
        outcomes = (outcomes + [SendOutcome(None, "no response")] * len(batch))[:len(batch)]
        for i, outcome in enumerate(outcomes):
            record(i, outcome)
        self.audit.append(OBJECTS_SENT, destination=destination.name, called_ae=destination.ae_title,
                          calling_ae=self.calling_ae, host=destination.host, port=destination.port,
                          tls=destination.tls, objects=[records[i] for i in sorted(records)])
        if self.on_change is not None:
            for study_uid in dict.fromkeys(c.study_uid for c in batch):
                try:
                    self.on_change(study_uid)
                except Exception:
                    log.exception("send state listener failed")
        return all(o.status is None for o in outcomes)

    def _record(self, destination: Destination, claimed: Claimed, outcome: SendOutcome) -> dict[str, object]:
        verdict = classify_status(outcome.status)
        status_text = f"0x{outcome.status:04X}" if outcome.status is not None else None
        if verdict == "success":
            self.store.outbox.mark_sent(claimed.id, 0)
        elif verdict == "warning":
            note = f"accepted with warning status {status_text}"
            log.warning("%s accepted %s %s with warning status %s", destination.name, claimed.kind,
                        claimed.sop_uid, status_text)
            self.store.outbox.mark_sent(claimed.id, int(outcome.status or 0), note)
        else:
            error = outcome.error or f"failure status {status_text}"
            delay = backoff_delay(claimed.attempts, self.retry_s, self.retry_max_s)
            self.store.outbox.mark_failed(claimed.id, outcome.status, error, time.time() + delay)
            log.warning("%s did not accept %s %s (attempt %d): %s; retry in %.0f s", destination.name,
                        claimed.kind, claimed.sop_uid, claimed.attempts, error, delay)
        return {"study_uid": claimed.study_uid, "sop_uid": claimed.sop_uid, "kind": claimed.kind,
                "status": status_text, "outcome": "sent" if verdict != "failure" else "failed", "error": outcome.error}
