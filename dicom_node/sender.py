"""The outbox's C-STORE SCU: sends a batch of Part 10 files to one destination over one
association, calling with FirstLook's own AE title, over TLS when the destination asks for it.

It is the ``app.core.outbox.Sender`` the wiring hands the outbox worker: one outcome per file,
the DIMSE status, or None and the network error (refused association, lost connection).
"""

from __future__ import annotations

import logging
import ssl
from pathlib import Path
from typing import Callable, Sequence

from pydicom import dcmread
from pydicom.uid import UID, ExplicitVRLittleEndian, ImplicitVRLittleEndian
from pynetdicom import AE

from app.core.destinations import Destination
from app.core.outbox.worker import SendOutcome

log = logging.getLogger(__name__)

_UNCOMPRESSED = (ExplicitVRLittleEndian, ImplicitVRLittleEndian)


class StoreSender:
    def __init__(self, calling_ae: str, tls_context: Callable[[], ssl.SSLContext] | None = None,
                 timeout: float = 30.0) -> None:
        """``tls_context`` builds the client context for ``tls = true`` destinations
        (``dicom_node.tls.client_context``); built at the first such send."""
        self.calling_ae = calling_ae
        self.timeout = timeout
        self._tls_factory = tls_context
        self._tls: ssl.SSLContext | None = None

    def __call__(self, destination: Destination, files: Sequence[Path],
                 on_outcome: Callable[[int, SendOutcome], None] | None = None) -> list[SendOutcome]:
        """``on_outcome(index, outcome)`` is called after each C-STORE response (the outbox records
        it at once); the returned list has every file's outcome, association failures included."""
        outcomes: list[SendOutcome | None] = [None] * len(files)
        datasets = []
        for i, path in enumerate(files):
            try:
                datasets.append((i, dcmread(path)))
            except (OSError, ValueError) as exc:
                outcomes[i] = SendOutcome(None, f"object file unreadable: {exc}")
        if not datasets:
            return [o or SendOutcome(None, "nothing to send") for o in outcomes]
        ae = AE(ae_title=self.calling_ae)
        ae.acse_timeout = ae.dimse_timeout = ae.network_timeout = self.timeout
        pairs: dict[str, list[UID]] = {}
        for _, ds in datasets:
            syntaxes = pairs.setdefault(str(ds.SOPClassUID), [])
            own = UID(ds.file_meta.TransferSyntaxUID)
            for syntax in (own, *([] if own.is_compressed else _UNCOMPRESSED)):
                if syntax not in syntaxes:
                    syntaxes.append(syntax)
        for sop_class, syntaxes in pairs.items():
            ae.add_requested_context(sop_class, syntaxes)
        where = f"{destination.name} ({destination.ae_title} at {destination.host}:{destination.port})"
        try:
            tls_args = (self._tls_context(), None) if destination.tls else None
            assoc = ae.associate(destination.host, destination.port, ae_title=destination.ae_title,
                                 tls_args=tls_args)
        except (OSError, ssl.SSLError, ValueError) as exc:
            return [o or SendOutcome(None, f"cannot reach {where}: {exc}") for o in outcomes]
        if not assoc.is_established:
            why = "rejected the association" if assoc.is_rejected else \
                "gave no association (connection refused, timed out or aborted)"
            return [o or SendOutcome(None, f"{where} {why}") for o in outcomes]
        try:
            for i, ds in datasets:
                if not assoc.is_established:
                    outcomes[i] = SendOutcome(None, f"{where} closed the association")
                    continue
                try:
                    rsp = assoc.send_c_store(ds)
                except (OSError, ValueError, RuntimeError) as exc:
                    outcomes[i] = SendOutcome(None, f"C-STORE to {where} failed: {exc}")
                    continue
                status = getattr(rsp, "Status", None)
                outcomes[i] = SendOutcome(int(status)) if status is not None else \
                    SendOutcome(None, f"no C-STORE response from {where} (timeout or connection lost)")
                if on_outcome is not None:
                    on_outcome(i, outcomes[i])  # type: ignore[arg-type]
        finally:
            if assoc.is_established:
                assoc.release()
        return [o or SendOutcome(None, "not sent") for o in outcomes]

    def _tls_context(self) -> ssl.SSLContext:
        if self._tls is None:
            if self._tls_factory is None:
                raise ValueError("TLS is not configured for sending")
            self._tls = self._tls_factory()
        return self._tls
