"""Who may associate: the calling-AE and peer-IP allow-lists and the association limit.

Decisions only; the handlers apply them on the wire (pynetdicom enforces the AE list and the
limit itself, the IP list is checked once the A-ASSOCIATE-RQ is read) and write the audit lines.
"""

from __future__ import annotations

import ipaddress
import logging
from dataclasses import dataclass

from pynetdicom import AE

from app.core.config import Config

log = logging.getLogger(__name__)

NOT_IN_ALLOW_IP = "address not in allow_ip"
NOT_IN_ALLOW_AE = "calling AE title not recognised (not in allow_ae)"
OVER_LIMIT = "local limit exceeded (max_associations)"

Network = ipaddress.IPv4Network | ipaddress.IPv6Network


@dataclass(frozen=True)
class AssociationPolicy:
    """Empty allow-lists admit everyone (warned at start: a clinic must opt in to restrictions)."""

    allow_ae: tuple[str, ...] = ()
    allow_ip: tuple[Network, ...] = ()
    max_associations: int = 16  # as Config's default

    @classmethod
    def from_config(cls, config: Config) -> "AssociationPolicy":
        return cls(allow_ae=tuple(a.strip() for a in config.allow_ae),
                   allow_ip=tuple(ipaddress.ip_network(ip, strict=False) for ip in config.allow_ip),
                   max_associations=config.max_associations)

    def apply_to(self, ae: AE) -> None:
        """Let pynetdicom enforce what it can: the calling-AE list and the association limit."""
        ae.maximum_associations = self.max_associations
        ae.require_calling_aet = list(self.allow_ae)  # empty: accept any
        ae.require_called_aet = False  # many modalities are configured with a stale called AE

    def ip_allowed(self, host: str) -> bool:
        if not self.allow_ip:
            return True
        try:
            addr = ipaddress.ip_address(host)
        except ValueError:
            return False
        return any(addr in net for net in self.allow_ip)

    def rejection_reason(self, calling_ae: str) -> str:
        """Why pynetdicom rejected an association (it does not say): the AE list or the limit."""
        if self.allow_ae and calling_ae not in self.allow_ae:
            return NOT_IN_ALLOW_AE
        return OVER_LIMIT

    def warn_if_open(self, bind: str, port: int) -> None:
        """Say at start that the node admits any peer, so an open node is never a surprise."""
        if not self.allow_ae:
            log.warning("NO CALLING-AE ALLOW-LIST: any DICOM peer that can reach %s:%d may store studies here; "
                        "set allow_ae in the configuration or pass --allow-ae AET", bind, port)
        if not self.allow_ip:
            log.info("no peer-IP allow-list: connections from any address reaching %s are considered", bind)
