"""The DIMSE services: C-ECHO, and C-STORE from the wire into the store and back as a status.

The receive path never decodes pixel data: the peer's encoded dataset is handed to
``StudyStore.store_instance`` as it came off the wire (plus File Meta Information built
from the negotiated presentation context), and Success is answered only after the store
returned, i.e. after the bytes are fsynced under their final name and indexed.
``InstanceStored`` is published on the association thread before that answer, so a
subscriber sees every instance before the ``AssociationEnded`` of the association carrying it.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable

from pynetdicom import evt

from app.core.audit import AssociationAudit
from app.core.events import EventHub, InstanceStored
from app.core.store.job_priority import from_dimse
from app.core.store import LowDiskSpace, StoredInstance, StudyStore
from app.core.store.part10 import file_meta_bytes
from dicom_node.associations import AuditSessions, association_key, peer
from dicom_node.disk_space import DiskSpaceState
from dicom_node.intake import Intake
from dicom_node.statuses import STATUS_OUT_OF_RESOURCES, STATUS_PROCESSING_FAILURE, STATUS_SUCCESS, status_for

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class StoreOutcome:
    """What one C-STORE did: the status answered, the stored instance on Success, and why."""

    status: int
    stored: StoredInstance | None
    message: str


class ServiceHandlers:
    """C-ECHO and C-STORE; each counted in its association's audit record."""

    def __init__(self, store: StudyStore, hub: EventHub, sessions: AuditSessions, intake: Intake,
                 disk_space: DiskSpaceState) -> None:
        self.store = store
        self.hub = hub
        self.sessions = sessions
        self.intake = intake
        self.disk_space = disk_space

    def handlers(self) -> list[tuple[Any, Callable[[evt.Event], Any]]]:
        return [(evt.EVT_C_STORE, self.on_store), (evt.EVT_C_ECHO, self.on_echo)]

    def on_echo(self, event: evt.Event) -> int:
        self.sessions.update(association_key(event.assoc), _count_echo)
        return STATUS_SUCCESS

    def on_store(self, event: evt.Event) -> int:
        key = association_key(event.assoc)
        if not self.intake.enter_store():
            self.sessions.update(key, lambda session: session.status(STATUS_OUT_OF_RESOURCES))
            return STATUS_OUT_OF_RESOURCES
        try:
            outcome = self.receive(event)
        finally:
            self.intake.leave_store()
        stored = outcome.stored

        def record(session: AssociationAudit) -> None:
            session.status(outcome.status)
            if stored is not None:
                session.stored(stored.header.study_uid, stored.header.series_uid, stored.header.sop_uid)

        self.sessions.update(key, record)
        if stored is not None:
            h = stored.header
            self.hub.publish(InstanceStored(h.study_uid, h.series_uid, h.sop_uid, stored.outcome, association=key,
                                            priority=from_dimse(getattr(event.request, "Priority", None))))
        return outcome.status

    def receive(self, event: evt.Event) -> StoreOutcome:
        """Store the encoded dataset of one C-STORE and map the result to a DIMSE status."""
        calling_ae = str(event.assoc.requestor.ae_title).strip()
        sender = peer(event.assoc)
        spooled: Path | None = None
        try:
            # pynetdicom spooled the dataset to a temporary file when its process-wide chunked
            # flag is on (set by this or any other SCP in the process); handle both cases.
            path = getattr(event.request, "_dataset_path", None)
            if path is not None:
                spooled = Path(path)
                stored = self.store.store_instance(spooled, calling_ae=calling_ae, peer=sender)
            else:
                meta, body = part10_parts(event, calling_ae)
                stored = self.store.store_instance(meta, body=body, calling_ae=calling_ae, peer=sender,
                                                   sop_uid_hint=str(event.request.AffectedSOPInstanceUID or ""))
        except Exception as exc:  # never Success, never a dead association thread
            status = status_for(exc)
            if status == STATUS_PROCESSING_FAILURE:
                log.exception("unexpected error storing an instance from %s (%s)", calling_ae, sender)
                return StoreOutcome(STATUS_PROCESSING_FAILURE, None, str(exc))
            if isinstance(exc, LowDiskSpace):
                self.disk_space.note(exc)
            log.warning("C-STORE from %s (%s) failed with 0x%04X: %s", calling_ae, sender, status, exc)
            return StoreOutcome(status, None, str(exc))
        finally:
            if spooled is not None:
                spooled.unlink(missing_ok=True)
        if self.disk_space.refusing:
            self.disk_space.note(None)
        if stored.outcome != "stored":
            log.info("%s instance %s from %s", stored.outcome, stored.header.sop_uid, calling_ae)
        else:
            log.debug("stored %s from %s", stored.header.sop_uid, calling_ae)
        return StoreOutcome(STATUS_SUCCESS, stored, stored.outcome)


def _count_echo(session: AssociationAudit) -> None:
    session.echoes += 1


def part10_parts(event: evt.Event, calling_ae: str) -> tuple[bytes, memoryview]:
    """File Meta (from the C-STORE command and negotiated context) and the dataset as received,
    kept apart: joining them copied the whole instance (2x peak memory for a large one)."""
    request = event.request
    meta = file_meta_bytes(str(request.AffectedSOPClassUID or ""), str(request.AffectedSOPInstanceUID or ""),
                           str(event.context.transfer_syntax), calling_ae)
    return meta, request.DataSet.getbuffer()
