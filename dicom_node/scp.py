"""FirstLook's DICOM Storage SCP (pynetdicom).

The receive path never decodes pixel data: the peer's encoded dataset is handed to
``StudyStore.store_instance`` as it came off the wire (plus File Meta Information built
from the negotiated presentation context), and Success is answered only after the store
returned, i.e. after the bytes are fsynced under their final name and indexed.

Status codes (PS3.4 C.4.2.3 leaves the 0xCxxx "cannot understand" range to the SCP):

====== ===========================================================================
0x0000 Success (stored, identical duplicate, or replacement of an earlier version)
0xA700 Refused: Out of Resources (disk full, below the free-space watermark, write
       error, node stopping)
0xC210 Cannot understand: the dataset cannot be parsed
0xC211 Cannot understand: Study, Series or SOP Instance UID missing
0xC212 Cannot understand: a UID violates the DICOM UID grammar (e.g. path characters)
0x0110 Processing failure: an unexpected error (logged with a traceback)
====== ===========================================================================
"""

from __future__ import annotations

import ipaddress
import logging
import socket
import socketserver
import ssl
import threading
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable, Hashable

from pydicom.uid import (
    DeflatedExplicitVRLittleEndian,
    ExplicitVRBigEndian,
    ExplicitVRLittleEndian,
    ImplicitVRLittleEndian,
    JPEG2000,
    JPEG2000Lossless,
    JPEGBaseline8Bit,
    JPEGExtended12Bit,
    JPEGLosslessSV1,
    JPEGLSLossless,
    JPEGLSNearLossless,
    RLELossless,
)
from pynetdicom import AE, AllStoragePresentationContexts, evt
from pynetdicom import _config as pynetdicom_config
from pynetdicom.sop_class import Verification
from pynetdicom.transport import ThreadedAssociationServer

from app.core import audit as audit_events
from app.core.audit import AssociationAudit, AuditLog
from app.core.config import Config
from app.core.events import EventHub, InstanceStored
from app.core.store.part10 import file_meta_bytes
from app.core.store import BadUID, LowDiskSpace, MissingUID, OutOfResources, StoredInstance, StudyStore, UnreadableDataset
from dicom_node.tls import HANDSHAKE_TIMEOUT_S, peer_subject, server_context

log = logging.getLogger(__name__)

# Written into every stored file's File Meta Information (a UUID-derived 2.25 UID).

STATUS_SUCCESS = 0x0000
STATUS_OUT_OF_RESOURCES = 0xA700
STATUS_CANNOT_UNDERSTAND = 0xC210
STATUS_MISSING_UID = 0xC211
STATUS_BAD_UID = 0xC212
STATUS_PROCESSING_FAILURE = 0x0110

# Accepted as sent and stored without transcoding. Explicit VR Big Endian is retired but
# old modalities still propose it; storing it costs nothing.
TRANSFER_SYNTAXES: list[str] = [
    ExplicitVRLittleEndian,
    ImplicitVRLittleEndian,
    DeflatedExplicitVRLittleEndian,
    ExplicitVRBigEndian,
    JPEGBaseline8Bit,
    JPEGExtended12Bit,
    JPEGLosslessSV1,
    JPEGLSLossless,
    JPEGLSNearLossless,
    JPEG2000Lossless,
    JPEG2000,
    RLELossless,
]

# Biggest P-DATA-TF PDU we advertise. Bigger PDUs mean fewer Python-level PDU decodes per
# instance (pynetdicom's default, 16 KiB, cost ~3 ms per 512 KiB slice); DCMTK storescu
# then sends 128 KiB PDUs, its own ceiling.
DEFAULT_MAX_PDU = 1 << 20

# How long an idle pynetdicom DUL reactor sleeps between polls (None: library default, 1 ms).
# Shorter polls measured no faster here and cost CPU on every open association.
DEFAULT_POLL_S: float | None = None


@dataclass(frozen=True)
class StoreOutcome:
    """What one C-STORE did, for logging and the readiness tracker."""

    status: int
    stored: StoredInstance | None
    message: str


class _Server(ThreadedAssociationServer):
    """pynetdicom's threaded server plus a 'stopping' gate checked before any byte is read,
    and, on the TLS port, the handshake moved off the accept thread.

    pynetdicom 3.0.4 wraps and handshakes each client socket inside ``get_request``, on the one
    thread that accepts connections and with no timeout: one peer that connects and sends
    nothing would stop every later connection. Here the accept thread only accepts; the
    handshake runs on the connection's own thread with ``HANDSHAKE_TIMEOUT_S``."""

    node: "StorageSCP"
    # socketserver's default listen backlog is 5: with 16 modalities connecting at once the
    # kernel drops SYNs and each retry costs a second (C-ECHO measured at 1.2 s under load).
    request_queue_size = 64

    def get_request(self) -> tuple[socket.socket, Any]:
        assert self.socket is not None
        return self.socket.accept()

    def verify_request(self, request: Any, client_address: Any) -> bool:
        host = client_address[0] if isinstance(client_address, tuple) else str(client_address)
        return self.node._accept_connection(host)

    def process_request_thread(self, request: Any, client_address: Any) -> None:
        if self.ssl_context is not None:
            request = self.node._tls_handshake(self.ssl_context, request, client_address)
            if request is None:
                return
        super().process_request_thread(request, client_address)


class StorageSCP:
    """Storage SCP + Verification for every storage SOP class pynetdicom knows."""

    def __init__(self, config: Config, store: StudyStore, hub: EventHub | None = None,
                 on_instance: Callable[[StoredInstance, Hashable], None] | None = None,
                 on_association_end: Callable[[Hashable, bool], None] | None = None,
                 max_pdu: int = DEFAULT_MAX_PDU, poll_s: float | None = DEFAULT_POLL_S,
                 chunked: bool = False, audit: AuditLog | None = None) -> None:
        """``chunked`` switches to pynetdicom's stream-to-temporary-file receive; it sets a
        process-wide pynetdicom flag and measured slower (bench/bench_receive.py), so it exists
        for comparison only. The audit log defaults to the store's data dir: a node never runs
        without recording who sent what. A TLS file problem raises ``ConfigError``."""
        self.config = config
        self.store = store
        self.hub = hub
        self.audit = audit if audit is not None else AuditLog(store.data_dir)
        self._ssl_context = server_context(config)
        self._sessions: dict[int, AssociationAudit] = {}
        self._sessions_lock = threading.Lock()
        self._on_instance = on_instance
        self._on_association_end = on_association_end
        self._allow_ae = [a.strip() for a in config.allow_ae]
        self._allow_ip = [ipaddress.ip_network(ip, strict=False) for ip in config.allow_ip]
        self._poll_s = poll_s
        self._chunked = chunked
        self._chunked_before = False
        self._server: _Server | None = None      # the plaintext server, or the TLS one when tls_only
        self._tls_server: _Server | None = None
        self._threads: list[threading.Thread] = []
        self._stopping = False
        self._inflight = 0
        self._inflight_cond = threading.Condition()
        self._space_low = False
        self._space_lock = threading.Lock()
        # called with the reason when the node starts refusing for lack of disk space, None when it stops
        self.on_space: Callable[[str | None], None] | None = None
        self.ae = self._make_ae(max_pdu)

    # -- set-up ---------------------------------------------------------------------
    def _make_ae(self, max_pdu: int) -> AE:
        ae = AE(ae_title=self.config.ae_title)
        for cx in AllStoragePresentationContexts:
            ae.add_supported_context(cx.abstract_syntax, TRANSFER_SYNTAXES)
        ae.add_supported_context(Verification, [ExplicitVRLittleEndian, ImplicitVRLittleEndian])
        ae.maximum_associations = self.config.max_associations
        ae.maximum_pdu_size = max_pdu
        ae.require_calling_aet = list(self._allow_ae)  # empty: accept any (warned at start)
        ae.require_called_aet = False  # many modalities are configured with a stale called AE
        ae.network_timeout = 60
        ae.acse_timeout = 30
        ae.dimse_timeout = 60
        return ae

    @property
    def address(self) -> tuple[str, int]:
        if self._server is None:
            return self.config.bind, self.config.port
        host, port = self._server.server_address[:2]
        return str(host), int(port)

    @property
    def tls_address(self) -> tuple[str, int] | None:
        """Where the TLS port listens (None without TLS or before start)."""
        if self._tls_server is None:
            return None
        host, port = self._tls_server.server_address[:2]
        return str(host), int(port)

    @property
    def running(self) -> bool:
        return self._server is not None

    def start(self) -> None:
        """Bind and serve in a background thread; OSError (e.g. port in use) propagates."""
        if self._server is not None:
            return
        if not self._allow_ae:
            log.warning("NO CALLING-AE ALLOW-LIST: any DICOM peer that can reach %s:%d may store studies here; "
                        "set allow_ae in the configuration or pass --allow-ae AET", self.config.bind, self.config.port)
        if not self._allow_ip:
            log.info("no peer-IP allow-list: connections from any address reaching %s are considered",
                     self.config.bind)
        handlers = [
            (evt.EVT_CONN_OPEN, self._on_conn_open),
            (evt.EVT_REQUESTED, self._on_requested),
            (evt.EVT_C_STORE, self._on_store),
            (evt.EVT_C_ECHO, self._on_echo),
            (evt.EVT_ACCEPTED, self._on_accepted),
            (evt.EVT_REJECTED, self._on_rejected),
            (evt.EVT_RELEASED, self._on_released),
            (evt.EVT_ABORTED, self._on_aborted),
        ]
        self._stopping = False
        if self._chunked:
            self._chunked_before = pynetdicom_config.STORE_RECV_CHUNKED_DATASET
            pynetdicom_config.STORE_RECV_CHUNKED_DATASET = True
        listen: list[tuple[int, ssl.SSLContext | None]] = []
        if not (self.config.tls_only and self._ssl_context is not None):
            listen.append((self.config.port, None))
        if self._ssl_context is not None:
            listen.append((self.config.tls_port, self._ssl_context))
        try:
            for port, context in listen:
                server = self.ae.make_server((self.config.bind, port), evt_handlers=handlers,
                                             ssl_context=context, server_class=_Server)
                server.node = self
                server.daemon_threads = True
                if context is not None:
                    self._tls_server = server
                if self._server is None:
                    self._server = server
                thread = threading.Thread(target=server.serve_forever, daemon=True,
                                          name="dicom-scp-accept-tls" if context else "dicom-scp-accept")
                thread.start()
                self._threads.append(thread)
        except OSError:
            self._close_servers()
            raise
        for server in self._servers():
            host, port = server.server_address[:2]
            if server.ssl_context is None:
                log.info("DICOM node %s listening on %s:%d (max %d associations)", self.config.ae_title, host, port,
                         self.config.max_associations)
            else:
                log.info("DICOM node %s listening with TLS on %s:%d (%s)", self.config.ae_title, host, port,
                         "client certificates from tls_ca required" if self.config.tls_ca
                         else "no client certificate required")
        if self._ssl_context is not None and not self.config.tls_only:
            log.warning("plaintext DICOM is also open on port %d; set tls_only = true once every sender uses TLS",
                        self.config.port)

    def _servers(self) -> list[_Server]:
        return [s for s in dict.fromkeys([self._server, self._tls_server]) if s is not None]

    def _close_servers(self) -> None:
        for server in self._servers():
            socketserver.BaseServer.shutdown(server)  # ends serve_forever (the AE never registered it)
            server.server_close()
        for thread in self._threads:
            thread.join(timeout=5)
        self._server = self._tls_server = None
        self._threads = []

    def stop(self, timeout: float = 30.0) -> None:
        """Refuse new work, let in-flight C-STOREs finish their write, then close everything."""
        server = self._server
        if server is None:
            return
        self._stopping = True
        deadline = time.monotonic() + timeout
        with self._inflight_cond:
            while self._inflight and time.monotonic() < deadline:
                self._inflight_cond.wait(max(0.0, deadline - time.monotonic()))
            if self._inflight:
                log.error("%d C-STORE write(s) still running after %.0f s; stopping anyway", self._inflight, timeout)
        servers = self._servers()
        for srv in servers:
            for assoc in list(srv.active_associations):
                assoc.abort()  # nothing un-acknowledged is lost: the sender still holds it and retries
        self._close_servers()
        end = time.monotonic() + 5
        while any(srv.active_associations for srv in servers) and time.monotonic() < end:
            time.sleep(0.02)
        with self._sessions_lock:
            left = list(self._sessions.values())
            self._sessions.clear()
        for session in left:
            self.audit.append(audit_events.ASSOCIATION, **session.fields("node stopped"))
        if self._chunked:
            pynetdicom_config.STORE_RECV_CHUNKED_DATASET = self._chunked_before
        log.info("DICOM node %s stopped", self.config.ae_title)

    # -- association policy -------------------------------------------------------------
    def _accept_connection(self, host: str) -> bool:
        if self._stopping:
            log.info("connection from %s refused: node is stopping", host)
            return False
        return True

    def _ip_allowed(self, host: str) -> bool:
        if not self._allow_ip:
            return True
        try:
            addr = ipaddress.ip_address(host)
        except ValueError:
            return False
        return any(addr in net for net in self._allow_ip)

    def _tls_handshake(self, context: ssl.SSLContext, sock: socket.socket, client_address: Any) -> ssl.SSLSocket | None:
        """Handshake on the connection's thread, bounded in time; a failure (plaintext client,
        no or untrusted client certificate, old protocol) closes the connection and is audited."""
        host, port = (client_address[0], int(client_address[1])) if isinstance(client_address, tuple) \
            else (str(client_address), 0)
        try:
            sock.settimeout(HANDSHAKE_TIMEOUT_S)
            tls = context.wrap_socket(sock, server_side=True)
            tls.settimeout(None)  # pynetdicom expects a blocking socket (it selects before reading)
            return tls
        except (ssl.SSLError, OSError) as exc:
            reason = getattr(exc, "verify_message", None) or getattr(exc, "reason", None) or exc.__class__.__name__
            if isinstance(exc, (socket.timeout, TimeoutError)):
                reason = f"no TLS handshake within {HANDSHAKE_TIMEOUT_S:.0f} s"
            log.warning("TLS connection from %s:%d refused: %s", host, port, reason)
            self.audit.append(audit_events.TLS_REFUSED, ip=host, port=port, reason=str(reason))
            try:
                sock.close()
            except OSError:
                pass
            return None

    def _on_requested(self, event: evt.Event) -> None:
        """Peer-IP allow-list, checked once the A-ASSOCIATE-RQ is read so that a refused peer
        gets a real A-ASSOCIATE-RJ (rejected-permanent, service-user, no-reason-given: PS3.8
        has no "address not allowed" reason) instead of a silently closed connection."""
        assoc = event.assoc
        host = str(assoc.requestor.address)
        if self._ip_allowed(host):
            return
        primitive = assoc.requestor.primitive
        calling = str(getattr(primitive, "calling_ae_title", "") or "").strip()
        log.warning("association from calling AE %r at %s:%s rejected: address not in allow_ip", calling, host,
                    assoc.requestor.port)
        self.audit.append(audit_events.ASSOCIATION_REJECTED, ae=calling, ip=host, port=int(assoc.requestor.port),
                          transport=self._transport(assoc), reason="address not in allow_ip")
        assoc.acse.send_reject(0x01, 0x01, 0x01)
        assoc.kill()  # as pynetdicom does after its own rejections: waits until the RJ is sent

    @staticmethod
    def _transport(assoc: Any) -> str:
        sock = getattr(getattr(assoc.dul, "socket", None), "socket", None)
        return "tls" if isinstance(sock, ssl.SSLSocket) else "plain"

    def _on_conn_open(self, event: evt.Event) -> None:
        try:
            event.assoc.dul.socket.socket.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        except (AttributeError, OSError):
            pass
        if self._poll_s is not None:
            event.assoc.dul._run_loop_delay = self._poll_s

    @staticmethod
    def _peer(event: evt.Event) -> str:
        req = event.assoc.requestor
        return f"{req.address}:{req.port}"

    def _on_accepted(self, event: evt.Event) -> None:
        assoc = event.assoc
        log.info("association from %s (%s) accepted", assoc.requestor.ae_title, self._peer(event))
        primitive = assoc.requestor.primitive
        session = AssociationAudit(
            ae=str(assoc.requestor.ae_title).strip(),
            called_ae=str(getattr(primitive, "called_ae_title", "") or "").strip(),
            ip=str(assoc.requestor.address), port=int(assoc.requestor.port), transport=self._transport(assoc),
            tls_subject=peer_subject(getattr(assoc.dul.socket, "socket", None)))
        with self._sessions_lock:
            self._sessions[id(assoc)] = session

    def _end_session(self, assoc: Any, outcome: str) -> None:
        with self._sessions_lock:
            session = self._sessions.pop(id(assoc), None)
        if session is not None:
            self.audit.append(audit_events.ASSOCIATION, **session.fields(outcome))

    def _on_rejected(self, event: evt.Event) -> None:
        # pynetdicom has already sent the A-ASSOCIATE-RJ; say why, with the peer address.
        assoc = event.assoc
        calling = str(assoc.requestor.ae_title).strip()
        if self._allow_ae and calling not in self._allow_ae:
            reason = "calling AE title not recognised (not in allow_ae)"
        else:
            reason = "local limit exceeded (max_associations)"
        log.warning("association from calling AE %r at %s rejected: %s", calling, self._peer(event), reason)
        self.audit.append(audit_events.ASSOCIATION_REJECTED, ae=calling, ip=str(assoc.requestor.address),
                          port=int(assoc.requestor.port), transport=self._transport(assoc), reason=reason)

    def _on_released(self, event: evt.Event) -> None:
        log.info("association from %s (%s) released", event.assoc.requestor.ae_title, self._peer(event))
        self._end_session(event.assoc, "released")
        if self._on_association_end is not None:
            self._on_association_end(id(event.assoc), True)

    def _on_aborted(self, event: evt.Event) -> None:
        if event.assoc.is_rejected:  # a rejected association torn down by stop(): already logged
            return
        log.warning("association from %s (%s) aborted", event.assoc.requestor.ae_title, self._peer(event))
        self._end_session(event.assoc, "aborted")
        if self._on_association_end is not None:
            self._on_association_end(id(event.assoc), False)

    # -- services -------------------------------------------------------------------------
    def _on_echo(self, event: evt.Event) -> int:
        with self._sessions_lock:
            session = self._sessions.get(id(event.assoc))
            if session is not None:
                session.echoes += 1
        return STATUS_SUCCESS

    def _on_store(self, event: evt.Event) -> int:
        with self._inflight_cond:
            if self._stopping:
                with self._sessions_lock:
                    if (refused := self._sessions.get(id(event.assoc))) is not None:
                        refused.status(STATUS_OUT_OF_RESOURCES)
                return STATUS_OUT_OF_RESOURCES
            self._inflight += 1
        try:
            outcome = self.receive(event)
        finally:
            with self._inflight_cond:
                self._inflight -= 1
                self._inflight_cond.notify_all()
        with self._sessions_lock:
            session = self._sessions.get(id(event.assoc))
            if session is not None:
                session.status(outcome.status)
                if outcome.stored is not None:
                    h = outcome.stored.header
                    session.stored(h.study_uid, h.series_uid, h.sop_uid)
        if outcome.stored is not None:
            h = outcome.stored.header
            if self.hub is not None:
                self.hub.publish(InstanceStored(h.study_uid, h.series_uid, h.sop_uid, outcome.stored.outcome))
            if self._on_instance is not None:
                self._on_instance(outcome.stored, id(event.assoc))
        return outcome.status

    def receive(self, event: evt.Event) -> StoreOutcome:
        """Store the encoded dataset of one C-STORE and map the result to a DIMSE status."""
        calling_ae = str(event.assoc.requestor.ae_title).strip()
        peer = self._peer(event)
        spooled: Path | None = None
        try:
            # pynetdicom spooled the dataset to a temporary file when its process-wide chunked
            # flag is on (set by this or any other SCP in the process); handle both cases.
            path = getattr(event.request, "_dataset_path", None)
            if path is not None:
                spooled = Path(path)
                stored = self.store.store_instance(spooled, calling_ae=calling_ae, peer=peer)
            else:
                meta, body = _part10_parts(event, calling_ae)
                stored = self.store.store_instance(meta, body=body, calling_ae=calling_ae, peer=peer,
                                                   sop_uid_hint=str(event.request.AffectedSOPInstanceUID or ""))
        except UnreadableDataset as exc:
            return self._fail(STATUS_CANNOT_UNDERSTAND, exc, calling_ae, peer)
        except MissingUID as exc:
            return self._fail(STATUS_MISSING_UID, exc, calling_ae, peer)
        except BadUID as exc:
            return self._fail(STATUS_BAD_UID, exc, calling_ae, peer)
        except OutOfResources as exc:
            if isinstance(exc, LowDiskSpace):
                self.note_space(exc)
            return self._fail(STATUS_OUT_OF_RESOURCES, exc, calling_ae, peer)
        except Exception as exc:  # never Success, never a dead association thread
            log.exception("unexpected error storing an instance from %s (%s)", calling_ae, peer)
            return StoreOutcome(STATUS_PROCESSING_FAILURE, None, str(exc))
        finally:
            if spooled is not None:
                spooled.unlink(missing_ok=True)
        if self._space_low:
            self.note_space(None)
        if stored.outcome != "stored":
            log.info("%s instance %s from %s", stored.outcome, stored.header.sop_uid, calling_ae)
        else:
            log.debug("stored %s from %s", stored.header.sop_uid, calling_ae)
        return StoreOutcome(STATUS_SUCCESS, stored, stored.outcome)

    def note_space(self, problem: LowDiskSpace | None) -> None:
        """Enter or leave the 'refusing: low disk space' state. Logged and passed to
        ``on_space`` (the service turns it into the status bar's node status) once per change,
        not once per refused instance."""
        with self._space_lock:
            changed = (problem is not None) != self._space_low
            self._space_low = problem is not None
        if not changed:
            return
        if problem is not None:
            log.error("REFUSING NEW INSTANCES (0xA700) until disk space is freed: %s", problem)
        else:
            log.warning("disk space is above the watermark again; accepting instances")
        if self.on_space is not None:
            self.on_space(None if problem is None else str(problem))

    @staticmethod
    def _fail(status: int, exc: Exception, calling_ae: str, peer: str) -> StoreOutcome:
        log.warning("C-STORE from %s (%s) failed with 0x%04X: %s", calling_ae, peer, status, exc)
        return StoreOutcome(status, None, str(exc))


def _part10_parts(event: evt.Event, calling_ae: str) -> tuple[bytes, memoryview]:
    """File Meta (from the C-STORE command and negotiated context) and the dataset as received,
    kept apart: joining them copied the whole instance (2x peak memory for a large one)."""
    request = event.request
    meta = file_meta_bytes(str(request.AffectedSOPClassUID or ""), str(request.AffectedSOPInstanceUID or ""),
                           str(event.context.transfer_syntax), calling_ae)
    return meta, request.DataSet.getbuffer()
