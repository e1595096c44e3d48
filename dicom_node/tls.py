"""DICOM over TLS: the node's server ``ssl.SSLContext`` built from the configuration.

Every problem with the certificate files becomes one ``ConfigError`` sentence naming the key
and the file, so an IT admin sees "tls_key /etc/... cannot be read: Permission denied." and
not an OpenSSL traceback. The same function is used at start-up validation and by the node.
"""

from __future__ import annotations

import logging
import ssl
from pathlib import Path

from app.core.config import Config, ConfigError

log = logging.getLogger(__name__)

# BCP 195 (PS3.15 B.9/B.10): TLS 1.2 or newer. OpenSSL's defaults give the ECDHE + AES-GCM
# suites that DCMTK's default "BCP 195 non-downgrading" profile offers.
MINIMUM_VERSION = ssl.TLSVersion.TLSv1_2

# A peer that opens the TLS port and never completes the handshake is dropped after this.
HANDSHAKE_TIMEOUT_S = 10.0


def _readable(key: str, path: Path) -> None:
    if not path.exists():
        raise ConfigError(f"{key} {path} does not exist.")
    if not path.is_file():
        raise ConfigError(f"{key} {path} is not a file.")
    try:
        with open(path, "rb") as fh:
            fh.read(1)
    except OSError as exc:
        raise ConfigError(f"{key} {path} cannot be read: {exc.strerror or exc}.") from None


def server_context(config: Config) -> ssl.SSLContext | None:
    """The TLS server context, or None when TLS is not configured.

    With ``tls_ca`` set, a client must present a certificate issued by that CA (mutual TLS);
    without it, the node authenticates itself only and any TLS client may try to associate
    (the AE and IP allow-lists still apply).
    """
    if config.tls_cert is None or config.tls_key is None:
        return None
    _readable("tls_cert", config.tls_cert)
    _readable("tls_key", config.tls_key)
    context = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    context.minimum_version = MINIMUM_VERSION
    try:
        context.load_cert_chain(str(config.tls_cert), str(config.tls_key), password=lambda: b"")
    except ssl.SSLError as exc:
        if "KEY_VALUES_MISMATCH" in str(exc) or "key values mismatch" in str(exc):
            raise ConfigError(f"tls_key {config.tls_key} does not belong to the certificate in tls_cert "
                              f"{config.tls_cert}.") from None
        raise ConfigError(f"tls_cert {config.tls_cert} and tls_key {config.tls_key} cannot be loaded as an "
                          f"unencrypted PEM certificate and private key ({exc.reason or exc}).") from None
    if config.tls_ca is not None:
        _load_ca(context, config.tls_ca)
        context.verify_mode = ssl.CERT_REQUIRED
    else:
        context.verify_mode = ssl.CERT_NONE
    return context


def peer_subject(sock: object) -> str | None:
    """``CN=..., O=...`` of a verified client certificate, for the audit log."""
    if not isinstance(sock, ssl.SSLSocket):
        return None
    try:
        cert = sock.getpeercert()
    except (ValueError, OSError):
        return None
    if not cert:
        return None
    parts = [f"{_SHORT.get(k, k)}={v}" for rdn in cert.get("subject", ()) for k, v in rdn]
    return ", ".join(parts) or None


_SHORT = {"commonName": "CN", "organizationName": "O", "organizationalUnitName": "OU", "countryName": "C",
          "localityName": "L", "stateOrProvinceName": "ST"}


def client_context(config: Config) -> ssl.SSLContext:
    """The TLS context FirstLook calls destinations with (``tls = true``): TLS 1.2 or newer, the
    destination's certificate verified against ``tls_ca`` (or the system's CAs without it), and
    the node's own certificate and key (``tls_cert``/``tls_key``) offered for mutual TLS. Host
    names are not matched: PACS are usually addressed by IP, the CA is what is trusted."""
    context = ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT)
    context.minimum_version = MINIMUM_VERSION
    context.check_hostname = False
    context.verify_mode = ssl.CERT_REQUIRED
    if config.tls_ca is not None:
        _load_ca(context, config.tls_ca)
    else:
        context.load_default_certs(ssl.Purpose.SERVER_AUTH)
    if config.tls_cert is not None and config.tls_key is not None:
        _readable("tls_cert", config.tls_cert)
        _readable("tls_key", config.tls_key)
        try:
            context.load_cert_chain(str(config.tls_cert), str(config.tls_key), password=lambda: b"")
        except ssl.SSLError as exc:
            raise ConfigError(f"tls_cert {config.tls_cert} and tls_key {config.tls_key} cannot be loaded "
                              f"({exc.reason or exc}).") from None
    return context


def _load_ca(context: ssl.SSLContext, ca: Path) -> None:
    """The CA certificates that peers' (server and client) certificates must chain to."""
    _readable("tls_ca", ca)
    try:
        context.load_verify_locations(cafile=str(ca))
    except ssl.SSLError as exc:
        raise ConfigError(f"tls_ca {ca} cannot be loaded as PEM CA certificates ({exc.reason or exc}).") from None
