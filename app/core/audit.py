"""Append-only audit log: who sent which studies, who opened which study.

One JSON object per line in ``<data_dir>/audit.log``. Each record is written with a single
``write`` on a descriptor opened ``O_APPEND`` (so concurrent writers, e.g. the service and a
desktop on the same data dir, never overwrite each other) and fsynced before the call
returns. The file is opened per record, so an administrator can rotate it by renaming it
(never by truncating it); the next record creates a fresh file, mode 0600.

Records carry UIDs, AE titles, addresses, counts and OS user names: never patient names or
IDs, so the audit log can be handed to IT without exposing who the patients are.
"""

from __future__ import annotations

import datetime
import getpass
import json
import logging
import os
import threading
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Iterator

log = logging.getLogger(__name__)

AUDIT_FILE = "audit.log"

# Event names (the ``event`` field); docs/security.md describes each.
ASSOCIATION = "dicom.association"
ASSOCIATION_REJECTED = "dicom.association_rejected"
TLS_REFUSED = "dicom.tls_refused"
STUDY_OPENED = "viewer.study_opened"
OBJECTS_SENT = "dicom.objects_sent"  # the outbox's associations with destinations
STUDIES_LISTED = "admin.studies_listed"
# The HTTP API (app/api): ``user`` is the API user (``local`` for the local token file).
API_STUDY_OPENED = "api.study_opened"
API_REVIEWED_CHANGED = "api.reviewed_changed"
API_SEND_REQUESTED = "api.send_requested"  # a reader asked to send (or re-send) a study to PACS
API_RETRIEVED = "api.retrieved"          # instances or metadata sent through WADO-RS
API_REFUSED = "api.refused"              # no, unknown or revoked token
API_USER_ADDED = "admin.api_user_added"
API_USER_REVOKED = "admin.api_user_revoked"
PRIORITY_CHANGED = "analysis.priority_changed"  # a preliminary priority was revised (app/core/progressive.py)


def os_user() -> str:
    """The operating-system account of this process (the viewer's user)."""
    try:
        return getpass.getuser()
    except (KeyError, OSError):  # no passwd entry and no LOGNAME/USER (containers)
        return f"uid:{os.getuid()}"


class AuditLog:
    """Writer for one data dir's audit log. Writing never raises: a failure is logged as an
    error (the DICOM data it describes is already stored and must still be acknowledged)."""

    def __init__(self, data_dir: Path) -> None:
        self.path = Path(data_dir) / AUDIT_FILE
        self._lock = threading.Lock()

    def append(self, event: str, **fields: Any) -> dict[str, Any]:
        """Write one record ``{"time", "event", **fields}`` durably; returns the record."""
        record: dict[str, Any] = {
            "time": datetime.datetime.now(datetime.timezone.utc).isoformat(timespec="milliseconds"),
            "event": event,
        }
        record.update(fields)
        line = (json.dumps(record, ensure_ascii=True, separators=(",", ":"), default=str) + "\n").encode("ascii")
        try:
            with self._lock:
                fd = os.open(self.path, os.O_WRONLY | os.O_APPEND | os.O_CREAT | os.O_CLOEXEC, 0o600)
                try:
                    view = memoryview(line)
                    while view:
                        view = view[os.write(fd, view):]
                    os.fsync(fd)
                finally:
                    os.close(fd)
        except OSError as exc:
            log.error("cannot write the audit log %s (%s); lost record: event %s", self.path, exc, event)
        return record

    def records(self) -> Iterator[dict[str, Any]]:
        """Every record in the current file (tools and tests); unreadable lines are skipped."""
        try:
            with open(self.path, encoding="ascii", errors="replace") as fh:
                for line in fh:
                    try:
                        yield json.loads(line)
                    except json.JSONDecodeError:
                        continue
        except FileNotFoundError:
            return


@dataclass
class AssociationAudit:
    """What one DICOM association did, accumulated on its thread and written once at its end."""

    ae: str
    called_ae: str
    ip: str
    port: int
    transport: str                      # "plain" or "tls"
    tls_subject: str | None = None      # client certificate subject when one was verified
    studies: dict[str, dict[str, set[str]]] = field(default_factory=dict)  # study -> series -> SOP UIDs
    statuses: dict[str, int] = field(default_factory=dict)                  # C-STORE status -> count
    echoes: int = 0

    def stored(self, study_uid: str, series_uid: str, sop_uid: str) -> None:
        self.studies.setdefault(study_uid, {}).setdefault(series_uid, set()).add(sop_uid)

    def status(self, status: int) -> None:
        key = f"0x{status:04X}"
        self.statuses[key] = self.statuses.get(key, 0) + 1

    def fields(self, outcome: str) -> dict[str, Any]:
        return {
            "ae": self.ae, "called_ae": self.called_ae, "ip": self.ip, "port": self.port,
            "transport": self.transport, "tls_subject": self.tls_subject, "outcome": outcome,
            "studies": [{"study_uid": study, "series": len(series), "instances": sum(len(s) for s in series.values())}
                        for study, series in self.studies.items()],
            "c_store": sum(self.statuses.values()), "statuses": dict(self.statuses), "c_echo": self.echoes,
        }
