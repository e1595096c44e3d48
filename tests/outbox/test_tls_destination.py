"""A ``tls = true`` destination: FirstLook's sender verifies the PACS certificate against
``tls_ca`` and presents ``tls_cert``/``tls_key`` (the node's own certificate handling); a PACS
whose certificate does not chain to that CA gets nothing and the send is retried."""

from __future__ import annotations

import datetime
import ssl
from dataclasses import replace
from pathlib import Path

from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import NameOID

from app.core.config import Config
from app.core.destinations import Destination
from dicom_node.sender import StoreSender
from dicom_node.tls import client_context
from tests.support.outbox_helpers import RecordingSCP, StandInBuilder, done_result


def _issue(subject: str, key: ec.EllipticCurvePrivateKey, issuer: str, issuer_key: ec.EllipticCurvePrivateKey,
           ca: bool = False) -> bytes:
    now = datetime.datetime.now(datetime.timezone.utc)
    cert = (x509.CertificateBuilder().subject_name(x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, subject)]))
            .issuer_name(x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, issuer)]))
            .public_key(key.public_key()).serial_number(x509.random_serial_number())
            .not_valid_before(now - datetime.timedelta(minutes=5)).not_valid_after(now + datetime.timedelta(days=1))
            .add_extension(x509.BasicConstraints(ca=ca, path_length=None), critical=True)
            .sign(issuer_key, hashes.SHA256()))
    return cert.public_bytes(serialization.Encoding.PEM)


def _key_pem(key: ec.EllipticCurvePrivateKey) -> bytes:
    return key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.TraditionalOpenSSL,
                             serialization.NoEncryption())


def test_tls_destination_with_mutual_certificates(tmp_path: Path, store, stored_series) -> None:
    ca_key, rogue_key, pacs_key, node_key = (ec.generate_private_key(ec.SECP256R1()) for _ in range(4))
    files = {"ca.crt": _issue("Site CA", ca_key, "Site CA", ca_key, ca=True),
             "pacs.crt": _issue("pacs", pacs_key, "Site CA", ca_key), "pacs.key": _key_pem(pacs_key),
             "rogue-pacs.crt": _issue("pacs", pacs_key, "Rogue CA", rogue_key),
             "node.crt": _issue("firstlook", node_key, "Site CA", ca_key), "node.key": _key_pem(node_key)}
    for name, data in files.items():
        (tmp_path / name).write_bytes(data)

    def pacs_context(cert: str) -> ssl.SSLContext:
        context = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
        context.load_cert_chain(str(tmp_path / cert), str(tmp_path / "pacs.key"))
        context.load_verify_locations(cafile=str(tmp_path / "ca.crt"))
        context.verify_mode = ssl.CERT_REQUIRED  # the PACS wants FirstLook's client certificate
        return context

    config = replace(Config(), tls_cert=tmp_path / "node.crt", tls_key=tmp_path / "node.key",
                     tls_ca=tmp_path / "ca.crt")
    sender = StoreSender("FIRSTLOOK", lambda: client_context(config), timeout=10)
    study, series = stored_series
    objects = StandInBuilder()(done_result(series, study), store.series_files(series), None, store.data_dir)
    paths = []
    for i, obj in enumerate(objects):
        path = tmp_path / f"{i}.dcm"
        obj.dataset.save_as(path, enforce_file_format=True)
        paths.append(path)

    good = RecordingSCP("TLSPACS").start(pacs_context("pacs.crt"))
    rogue = RecordingSCP("ROGUE").start(pacs_context("rogue-pacs.crt"))
    try:
        sent = sender(Destination("tls-pacs", "TLSPACS", "127.0.0.1", good.port, tls=True), paths)
        assert [o.status for o in sent] == [0, 0]
        assert sorted(good.sop_uids()) == sorted(o.sop_instance_uid for o in objects)
        refused = sender(Destination("rogue", "ROGUE", "127.0.0.1", rogue.port, tls=True), paths)
        assert all(o.status is None and o.error for o in refused) and rogue.sop_uids() == []
        plain = sender(Destination("plain-to-tls", "TLSPACS", "127.0.0.1", good.port), paths)
        assert all(o.status is None for o in plain)  # no TLS to a TLS port: nothing sent
    finally:
        good.stop()
        rogue.stop()
