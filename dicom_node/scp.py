"""FirstLook's DICOM Storage SCP: the node's lifecycle, composing one module per concept.

=================== ===================================================================
``contexts``        presentation contexts, transfer syntaxes, PDU size, timeouts
``policy``          who may associate: calling-AE and peer-IP allow-lists, the limit
``server``          the listening sockets, backlog, TLS handshake off the accept thread
``tls``             the server ``SSLContext`` from the configuration
``associations``    accept/reject/release/abort, the audit record of each association
``handlers``        C-ECHO and C-STORE: wire -> ``StudyStore.store_instance`` -> status
``statuses``        the DIMSE status codes and which store error earns which
``disk_space``      the low-disk-space refusing state
``intake``          refusing new work on stop while in-flight writes finish
=================== ===================================================================

The node reports only through events on the hub (``app.core.events``: ``InstanceStored``,
``AssociationEnded``, ``DiskSpaceChanged``), published synchronously on the thread where
they happen; it holds no callbacks into the service.
"""

from __future__ import annotations

import logging
import ssl
import threading
import time

from pynetdicom import _config as pynetdicom_config

from app.core.audit import AuditLog
from app.core.config import Config
from app.core.events import EventHub
from app.core.store import LowDiskSpace, StudyStore
from dicom_node.associations import AssociationHandlers, AuditSessions
from dicom_node.contexts import DEFAULT_MAX_PDU, DEFAULT_POLL_S, storage_ae
from dicom_node.disk_space import DiskSpaceState
from dicom_node.handlers import ServiceHandlers
from dicom_node.intake import Intake
from dicom_node.policy import AssociationPolicy
from dicom_node.server import AssociationServer, serve
from dicom_node.statuses import (
    STATUS_BAD_UID,
    STATUS_CANNOT_UNDERSTAND,
    STATUS_MISSING_UID,
    STATUS_OUT_OF_RESOURCES,
    STATUS_PROCESSING_FAILURE,
    STATUS_SUCCESS,
)
from dicom_node.tls import server_context

# The statuses were long imported from here (tests, bench); they live in ``statuses``.
__all__ = [
    "STATUS_BAD_UID", "STATUS_CANNOT_UNDERSTAND", "STATUS_MISSING_UID", "STATUS_OUT_OF_RESOURCES",
    "STATUS_PROCESSING_FAILURE", "STATUS_SUCCESS", "StorageSCP",
]

log = logging.getLogger(__name__)


class StorageSCP:
    """Storage SCP + Verification for every storage SOP class pynetdicom knows."""

    def __init__(self, config: Config, store: StudyStore, hub: EventHub | None = None, *,
                 max_pdu: int = DEFAULT_MAX_PDU, poll_s: float | None = DEFAULT_POLL_S,
                 chunked: bool = False, audit: AuditLog | None = None) -> None:
        """``chunked`` switches to pynetdicom's stream-to-temporary-file receive; it sets a
        process-wide pynetdicom flag and measured slower (bench/bench_receive.py), so it exists
        for comparison only. The audit log defaults to the store's data dir: a node never runs
        without recording who sent what. Without a hub the node's events reach no one (a
        self-test or benchmark). A TLS file problem raises ``ConfigError``."""
        self.config = config
        self.store = store
        self.hub = hub if hub is not None else EventHub()
        self.audit = audit if audit is not None else AuditLog(store.data_dir)
        self._ssl_context = server_context(config)
        self.policy = AssociationPolicy.from_config(config)
        self.intake = Intake()
        self.disk_space = DiskSpaceState(self.hub)
        self.sessions = AuditSessions(self.audit)
        self.associations = AssociationHandlers(self.policy, self.sessions, self.hub, poll_s)
        self.services = ServiceHandlers(store, self.hub, self.sessions, self.intake, self.disk_space)
        self._chunked = chunked
        self._chunked_before = False
        self._server: AssociationServer | None = None      # the plaintext server, or the TLS one when tls_only
        self._tls_server: AssociationServer | None = None
        self._threads: list[threading.Thread] = []
        self.ae = storage_ae(config.ae_title, max_pdu)
        self.policy.apply_to(self.ae)

    @property
    def address(self) -> tuple[str, int]:
        if self._server is None:
            return self.config.bind, self.config.port
        return self._server.address

    @property
    def tls_address(self) -> tuple[str, int] | None:
        """Where the TLS port listens (None without TLS or before start)."""
        return None if self._tls_server is None else self._tls_server.address

    @property
    def running(self) -> bool:
        return self._server is not None

    def note_space(self, problem: LowDiskSpace | None) -> None:
        """Enter or leave the 'refusing: low disk space' state (the service's periodic check
        feeds this; the C-STORE path does on its own). Published once per change."""
        self.disk_space.note(problem)

    # -- lifecycle ----------------------------------------------------------------------
    def start(self) -> None:
        """Bind and serve in a background thread; OSError (e.g. port in use) propagates."""
        if self._server is not None:
            return
        self.policy.warn_if_open(self.config.bind, self.config.port)
        handlers = self.associations.handlers() + self.services.handlers()
        self.intake.open()
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
                server, thread = serve(self.ae, self.config.bind, port, handlers, context,
                                       admit=self.intake.admit, audit=self.audit)
                if context is not None:
                    self._tls_server = server
                if self._server is None:
                    self._server = server
                self._threads.append(thread)
        except OSError:
            self._close_servers()
            raise
        for server in self._servers():
            host, port = server.address
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

    def stop(self, timeout: float = 30.0) -> None:
        """Refuse new work, let in-flight C-STOREs finish their write, then close everything."""
        if self._server is None:
            return
        self.intake.close(timeout)
        servers = self._servers()
        for srv in servers:
            for assoc in list(srv.active_associations):
                assoc.abort()  # nothing un-acknowledged is lost: the sender still holds it and retries
        self._close_servers()
        end = time.monotonic() + 5
        while any(srv.active_associations for srv in servers) and time.monotonic() < end:
            time.sleep(0.02)
        self.sessions.end_all("node stopped")
        if self._chunked:
            pynetdicom_config.STORE_RECV_CHUNKED_DATASET = self._chunked_before
        log.info("DICOM node %s stopped", self.config.ae_title)

    def _servers(self) -> list[AssociationServer]:
        return [s for s in dict.fromkeys([self._server, self._tls_server]) if s is not None]

    def _close_servers(self) -> None:
        for server in self._servers():
            server.close()
        for thread in self._threads:
            thread.join(timeout=5)
        self._server = self._tls_server = None
        self._threads = []
