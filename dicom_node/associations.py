"""The life of one association: admitted or rejected, accepted, released or aborted.

Each accepted association gets one audit record that the service handlers add to and that is
written once, when the association ends (or when the node stops under it). Its end is also
published as ``AssociationEnded`` so that the readiness tracker can close the series it carried.
"""

from __future__ import annotations

import logging
import socket
import threading
from typing import Any, Callable

from pynetdicom import evt

from app.core import audit as audit_events
from app.core.audit import AssociationAudit, AuditLog
from app.core.events import AssociationEnded, EventHub
from dicom_node.policy import NOT_IN_ALLOW_IP, AssociationPolicy
from dicom_node.server import transport
from dicom_node.tls import peer_subject

log = logging.getLogger(__name__)


def association_key(assoc: Any) -> int:
    """The hashable identity events carry instead of the pynetdicom object. Unique while the
    association lives, which spans every event about it (its end is published before it can go)."""
    return id(assoc)


def peer(assoc: Any) -> str:
    req = assoc.requestor
    return f"{req.address}:{req.port}"


class AuditSessions:
    """The audit records of the open associations, by association key; any thread may update."""

    def __init__(self, audit: AuditLog) -> None:
        self.audit = audit
        self._open: dict[int, AssociationAudit] = {}
        self._lock = threading.Lock()

    def open(self, key: int, session: AssociationAudit) -> None:
        with self._lock:
            self._open[key] = session

    def update(self, key: int, change: Callable[[AssociationAudit], None]) -> None:
        with self._lock:
            session = self._open.get(key)
            if session is not None:
                change(session)

    def end(self, key: int, outcome: str) -> None:
        with self._lock:
            session = self._open.pop(key, None)
        if session is not None:
            self.audit.append(audit_events.ASSOCIATION, **session.fields(outcome))

    def end_all(self, outcome: str) -> None:
        with self._lock:
            left = list(self._open.values())
            self._open.clear()
        for session in left:
            self.audit.append(audit_events.ASSOCIATION, **session.fields(outcome))


class AssociationHandlers:
    """pynetdicom's association-level events, turned into policy, audit lines and hub events."""

    def __init__(self, policy: AssociationPolicy, sessions: AuditSessions, hub: EventHub,
                 poll_s: float | None = None) -> None:
        self.policy = policy
        self.sessions = sessions
        self.hub = hub
        self.poll_s = poll_s

    def handlers(self) -> list[tuple[Any, Callable[[evt.Event], Any]]]:
        return [
            (evt.EVT_CONN_OPEN, self.on_conn_open),
            (evt.EVT_REQUESTED, self.on_requested),
            (evt.EVT_ACCEPTED, self.on_accepted),
            (evt.EVT_REJECTED, self.on_rejected),
            (evt.EVT_RELEASED, self.on_released),
            (evt.EVT_ABORTED, self.on_aborted),
        ]

    def on_conn_open(self, event: evt.Event) -> None:
        try:
            event.assoc.dul.socket.socket.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        except (AttributeError, OSError):
            pass
        if self.poll_s is not None:
            event.assoc.dul._run_loop_delay = self.poll_s

    def on_requested(self, event: evt.Event) -> None:
        """Peer-IP allow-list, checked once the A-ASSOCIATE-RQ is read so that a refused peer
        gets a real A-ASSOCIATE-RJ (rejected-permanent, service-user, no-reason-given: PS3.8
        has no "address not allowed" reason) instead of a silently closed connection."""
        assoc = event.assoc
        host = str(assoc.requestor.address)
        if self.policy.ip_allowed(host):
            return
        primitive = assoc.requestor.primitive
        calling = str(getattr(primitive, "calling_ae_title", "") or "").strip()
        log.warning("association from calling AE %r at %s:%s rejected: %s", calling, host,
                    assoc.requestor.port, NOT_IN_ALLOW_IP)
        self.sessions.audit.append(audit_events.ASSOCIATION_REJECTED, ae=calling, ip=host,
                                   port=int(assoc.requestor.port), transport=transport(assoc), reason=NOT_IN_ALLOW_IP)
        assoc.acse.send_reject(0x01, 0x01, 0x01)
        assoc.kill()  # as pynetdicom does after its own rejections: waits until the RJ is sent

    def on_accepted(self, event: evt.Event) -> None:
        assoc = event.assoc
        log.info("association from %s (%s) accepted", assoc.requestor.ae_title, peer(assoc))
        primitive = assoc.requestor.primitive
        self.sessions.open(association_key(assoc), AssociationAudit(
            ae=str(assoc.requestor.ae_title).strip(),
            called_ae=str(getattr(primitive, "called_ae_title", "") or "").strip(),
            ip=str(assoc.requestor.address), port=int(assoc.requestor.port), transport=transport(assoc),
            tls_subject=peer_subject(getattr(assoc.dul.socket, "socket", None))))

    def on_rejected(self, event: evt.Event) -> None:
        # pynetdicom has already sent the A-ASSOCIATE-RJ; say why, with the peer address.
        assoc = event.assoc
        calling = str(assoc.requestor.ae_title).strip()
        reason = self.policy.rejection_reason(calling)
        log.warning("association from calling AE %r at %s rejected: %s", calling, peer(assoc), reason)
        self.sessions.audit.append(audit_events.ASSOCIATION_REJECTED, ae=calling, ip=str(assoc.requestor.address),
                                   port=int(assoc.requestor.port), transport=transport(assoc), reason=reason)

    def on_released(self, event: evt.Event) -> None:
        log.info("association from %s (%s) released", event.assoc.requestor.ae_title, peer(event.assoc))
        self._ended(event.assoc, released=True)

    def on_aborted(self, event: evt.Event) -> None:
        if event.assoc.is_rejected:  # a rejected association torn down by stop(): already logged
            return
        log.warning("association from %s (%s) aborted", event.assoc.requestor.ae_title, peer(event.assoc))
        self._ended(event.assoc, released=False)

    def _ended(self, assoc: Any, released: bool) -> None:
        key = association_key(assoc)
        self.sessions.end(key, "released" if released else "aborted")
        self.hub.publish(AssociationEnded(key, released))
