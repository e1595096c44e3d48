"""DICOM over TLS against real TLS clients: pynetdicom with an SSLContext and DCMTK storescu.

Certificates are made at run time with the ``cryptography`` package (a test CA, the node's
certificate for 127.0.0.1, a client certificate from that CA and one from a rogue CA).
"""

from __future__ import annotations

import datetime
import socket
import ssl
import subprocess
import sys
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Iterator

import pydicom
import pytest
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import rsa
from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID
from pynetdicom import AE
from pynetdicom.sop_class import Verification

from app.core.audit import ASSOCIATION, TLS_REFUSED
from app.core.config import Config, ConfigError, load_config
from dicom_node.scu import ASSOCIATION_FAILED, echo, send_files
from dicom_node.tls import server_context
from tests.support import REPO, free_port
from tests.support.node_helpers import Node, dcmtk, dcmtk_env, fresh_uids, pydicom_file, start_node, stop_node

# --------------------------------------------------------------------------- certificates


@dataclass(frozen=True)
class Pki:
    ca: Path
    server_cert: Path
    server_key: Path
    client_cert: Path          # CN=CT01, issued by ``ca``
    client_key: Path
    rogue_cert: Path           # CN=CT01, issued by another CA
    rogue_key: Path
    encrypted_key: Path        # the server key, password-protected
    other_key: Path            # a key that belongs to no certificate here


def _key() -> rsa.RSAPrivateKey:
    return rsa.generate_private_key(public_exponent=65537, key_size=2048)  # RSA: DCMTK's BCP 195 suites


def _name(cn: str) -> x509.Name:
    return x509.Name([x509.NameAttribute(NameOID.ORGANIZATION_NAME, "FirstLook tests"),
                      x509.NameAttribute(NameOID.COMMON_NAME, cn)])


def _cert(subject: str, key: rsa.RSAPrivateKey, issuer: str, issuer_key: rsa.RSAPrivateKey, *, ca: bool = False,
          server: bool = False) -> x509.Certificate:
    now = datetime.datetime.now(datetime.timezone.utc)
    builder = (x509.CertificateBuilder().subject_name(_name(subject)).issuer_name(_name(issuer))
               .public_key(key.public_key()).serial_number(x509.random_serial_number())
               .not_valid_before(now - datetime.timedelta(minutes=5)).not_valid_after(now + datetime.timedelta(days=2))
               .add_extension(x509.BasicConstraints(ca=ca, path_length=None), critical=True))
    if ca:
        builder = builder.add_extension(x509.KeyUsage(digital_signature=True, key_cert_sign=True, crl_sign=True,
                                                      content_commitment=False, key_encipherment=False,
                                                      data_encipherment=False, key_agreement=False,
                                                      encipher_only=False, decipher_only=False), critical=True)
    else:
        usage = ExtendedKeyUsageOID.SERVER_AUTH if server else ExtendedKeyUsageOID.CLIENT_AUTH
        builder = builder.add_extension(x509.ExtendedKeyUsage([usage]), critical=False)
    if server:
        import ipaddress

        builder = builder.add_extension(x509.SubjectAlternativeName(
            [x509.DNSName("localhost"), x509.IPAddress(ipaddress.ip_address("127.0.0.1"))]), critical=False)
    return builder.sign(issuer_key, hashes.SHA256())


def _write(path: Path, data: bytes) -> Path:
    path.write_bytes(data)
    path.chmod(0o600)
    return path


def _pem_key(key: rsa.RSAPrivateKey, password: bytes | None = None) -> bytes:
    encryption = serialization.BestAvailableEncryption(password) if password else serialization.NoEncryption()
    return key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.TraditionalOpenSSL, encryption)


@pytest.fixture(scope="session")
def pki(tmp_path_factory: pytest.TempPathFactory) -> Pki:
    d = tmp_path_factory.mktemp("pki")
    ca_key, rogue_ca_key, server_key, client_key, rogue_key, other = (_key() for _ in range(6))
    ca = _cert("FirstLook test CA", ca_key, "FirstLook test CA", ca_key, ca=True)
    pem = serialization.Encoding.PEM
    return Pki(
        ca=_write(d / "ca.crt", ca.public_bytes(pem)),
        server_cert=_write(d / "node.crt", _cert("firstlook-node", server_key, "FirstLook test CA", ca_key,
                                                 server=True).public_bytes(pem)),
        server_key=_write(d / "node.key", _pem_key(server_key)),
        client_cert=_write(d / "ct01.crt", _cert("CT01", client_key, "FirstLook test CA", ca_key).public_bytes(pem)),
        client_key=_write(d / "ct01.key", _pem_key(client_key)),
        rogue_cert=_write(d / "rogue.crt", _cert("CT01", rogue_key, "Rogue CA", rogue_ca_key).public_bytes(pem)),
        rogue_key=_write(d / "rogue.key", _pem_key(rogue_key)),
        encrypted_key=_write(d / "node-encrypted.key", _pem_key(server_key, b"secret")),
        other_key=_write(d / "other.key", _pem_key(other)),
    )


def client_context(pki: Pki, cert: Path | None = None, key: Path | None = None) -> ssl.SSLContext:
    """What a modality does: verify the node against the site CA, optionally present its own certificate."""
    context = ssl.create_default_context(ssl.Purpose.SERVER_AUTH, cafile=str(pki.ca))
    if cert is not None:
        context.load_cert_chain(str(cert), str(key))
    return context


def tls_node(data_dir: Path, pki: Pki, *, verify_clients: bool = True, **kwargs: object) -> Node:
    return start_node(data_dir, tls_cert=pki.server_cert, tls_key=pki.server_key,
                      tls_ca=pki.ca if verify_clients else None, tls_port=free_port(), **kwargs)


@pytest.fixture
def mtls(data_dir: Path, pki: Pki) -> Iterator[Node]:
    n = tls_node(data_dir, pki)
    yield n
    stop_node(n)


def tls_port(node: Node) -> int:
    address = node.scp.tls_address
    assert address is not None
    return address[1]


def tls_store(node: Node, context: ssl.SSLContext, paths: list[Path], calling_ae: str = "CT01") -> list[int]:
    """pynetdicom SCU over TLS; one status per file, ASSOCIATION_FAILED for each when refused."""
    ae = AE(ae_title=calling_ae)
    ae.acse_timeout = ae.dimse_timeout = ae.network_timeout = 10
    for path in paths:
        ds = pydicom.dcmread(path, stop_before_pixels=True)
        ae.add_requested_context(ds.file_meta.MediaStorageSOPClassUID, ds.file_meta.TransferSyntaxUID)
    ae.add_requested_context(Verification)
    assoc = ae.associate("127.0.0.1", tls_port(node), ae_title=node.ae, tls_args=(context, "127.0.0.1"))
    if not assoc.is_established:
        return [ASSOCIATION_FAILED] * len(paths)
    try:
        assert int(assoc.send_c_echo().Status) == 0
        return [int(assoc.send_c_store(p).Status) for p in paths]
    finally:
        assoc.release()


def dataset_body(path: Path) -> bytes:
    """The bytes after the File Meta Information: what travels on the wire."""
    ds = pydicom.dcmread(path, stop_before_pixels=True)
    data = path.read_bytes()
    meta_end = 132 + 12 + int(ds.file_meta.FileMetaInformationGroupLength)
    return data[meta_end:]


def audit(node: Node, event: str) -> list[dict]:
    end = time.monotonic() + 5
    while time.monotonic() < end:
        found = [r for r in node.scp.audit.records() if r["event"] == event]
        if found:
            return found
        time.sleep(0.05)
    return []


# --------------------------------------------------------------------------- pynetdicom client


def test_client_with_certificate_from_the_site_ca_stores_byte_identical_data(mtls: Node, pki: Pki,
                                                                            tmp_path: Path) -> None:
    sent = [fresh_uids(pydicom_file(name), tmp_path) for name in ("CT_small.dcm", "JPEG2000.dcm", "SC_rgb_rle.dcm")]
    assert tls_store(mtls, client_context(pki, pki.client_cert, pki.client_key), sent) == [0, 0, 0]
    for path in sent:
        ds = pydicom.dcmread(path, stop_before_pixels=True)
        stored = mtls.store.studies_dir / ds.StudyInstanceUID / ds.SeriesInstanceUID / f"{ds.SOPInstanceUID}.dcm"
        assert dataset_body(stored) == dataset_body(path)  # byte for byte, pixel data included
    (record,) = audit(mtls, ASSOCIATION)
    assert record["transport"] == "tls" and record["ae"] == "CT01" and record["ip"] == "127.0.0.1"
    assert "CN=CT01" in record["tls_subject"]
    assert record["c_store"] == 3 and record["statuses"] == {"0x0000": 3} and record["c_echo"] == 1
    assert sorted(s["study_uid"] for s in record["studies"]) == sorted(
        str(pydicom.dcmread(p, stop_before_pixels=True).StudyInstanceUID) for p in sent)


def test_client_without_certificate_is_refused_when_verification_is_on(mtls: Node, pki: Pki, tmp_path: Path) -> None:
    path = fresh_uids(pydicom_file("CT_small.dcm"), tmp_path)
    assert tls_store(mtls, client_context(pki), [path]) == [ASSOCIATION_FAILED]
    assert tls_store(mtls, client_context(pki, pki.rogue_cert, pki.rogue_key), [path]) == [ASSOCIATION_FAILED]
    assert mtls.store.instance_rows() == []
    refused = audit(mtls, TLS_REFUSED)
    assert len(refused) == 2 and all(r["ip"] == "127.0.0.1" and r["reason"] for r in refused)
    # the node keeps serving the right client
    assert tls_store(mtls, client_context(pki, pki.client_cert, pki.client_key), [path]) == [0]


def test_without_tls_ca_any_tls_client_may_associate_but_the_ae_list_still_applies(data_dir: Path, pki: Pki,
                                                                                 tmp_path: Path) -> None:
    n = tls_node(data_dir, pki, verify_clients=False, allow_ae=["CT01"])
    try:
        path = fresh_uids(pydicom_file("CT_small.dcm"), tmp_path)
        assert tls_store(n, client_context(pki), [path], calling_ae="STRANGER") == [ASSOCIATION_FAILED]
        assert n.store.instance_rows() == []
        assert tls_store(n, client_context(pki), [path]) == [0]
    finally:
        stop_node(n)


def test_plaintext_to_the_tls_port_fails_and_the_plain_port_still_works(mtls: Node, tmp_path: Path) -> None:
    path = fresh_uids(pydicom_file("CT_small.dcm"), tmp_path)
    assert send_files("127.0.0.1", tls_port(mtls), mtls.ae, [path], timeout=10) == [ASSOCIATION_FAILED]
    assert echo("127.0.0.1", tls_port(mtls), mtls.ae, timeout=10) == ASSOCIATION_FAILED
    assert mtls.store.instance_rows() == []
    assert audit(mtls, TLS_REFUSED)
    assert echo("127.0.0.1", mtls.port, mtls.ae) == 0  # tls_only is off: plaintext port alongside


def test_tls_only_opens_no_plaintext_port(data_dir: Path, pki: Pki, tmp_path: Path) -> None:
    n = tls_node(data_dir, pki, tls_only=True)
    try:
        assert n.scp.address == n.scp.tls_address and n.scp.config.port == n.port
        with pytest.raises(OSError):  # the configured plaintext port is not listening
            socket.create_connection(("127.0.0.1", n.port), timeout=2).close()
        path = fresh_uids(pydicom_file("CT_small.dcm"), tmp_path)
        assert tls_store(n, client_context(pki, pki.client_cert, pki.client_key), [path]) == [0]
    finally:
        stop_node(n)


def test_a_silent_peer_does_not_block_other_tls_clients(mtls: Node, pki: Pki, tmp_path: Path) -> None:
    """pynetdicom alone handshakes on its accept thread without a timeout: one peer that
    connects and says nothing would block the TLS port. Here it must not."""
    silent = [socket.create_connection(("127.0.0.1", tls_port(mtls)), timeout=5) for _ in range(2)]
    try:
        time.sleep(0.2)
        path = fresh_uids(pydicom_file("CT_small.dcm"), tmp_path)
        started = time.monotonic()
        assert tls_store(mtls, client_context(pki, pki.client_cert, pki.client_key), [path]) == [0]
        assert time.monotonic() - started < 5
    finally:
        for s in silent:
            s.close()


# --------------------------------------------------------------------------- DCMTK client


def storescu_tls(node: Node, pki: Pki, files: list[Path], *tls_args: str, port: int | None = None
                 ) -> subprocess.CompletedProcess[str]:
    return subprocess.run([dcmtk("storescu"), *tls_args, "-aet", "CT01", "-aec", node.ae, "127.0.0.1",
                           str(port or tls_port(node)), *map(str, files)],
                          capture_output=True, text=True, timeout=60, env=dcmtk_env())


def test_dcmtk_storescu_over_tls(mtls: Node, pki: Pki, tmp_path: Path) -> None:
    """Debian's DCMTK 3.6.7 is built with OpenSSL: +tls KEY CERT, +cf CA, default BCP 195 profile.

    storescu re-encodes what it reads (it drops trailing padding of pydicom's CT_small), so the
    reference for "byte-identical" is the same file sent by storescu without TLS."""
    assert "+tls" in subprocess.run([dcmtk("storescu"), "--help"], capture_output=True, text=True).stdout
    files = [fresh_uids(pydicom_file("CT_small.dcm"), tmp_path / "a"), fresh_uids(pydicom_file("MR_small.dcm"),
                                                                                   tmp_path / "b")]
    done = storescu_tls(mtls, pki, files, "-R", "-xe", "+tls", str(pki.client_key), str(pki.client_cert),
                        "+cf", str(pki.ca))
    assert done.returncode == 0, done.stdout + done.stderr
    plain = start_node(tmp_path / "plain-data")
    try:
        done = storescu_tls(plain, pki, files, "-R", "-xe", port=plain.port)
        assert done.returncode == 0, done.stdout + done.stderr
        for path in files:
            ds = pydicom.dcmread(path, stop_before_pixels=True)
            rel = Path(ds.StudyInstanceUID) / ds.SeriesInstanceUID / f"{ds.SOPInstanceUID}.dcm"
            via_tls = dataset_body(mtls.store.studies_dir / rel)
            assert via_tls == dataset_body(plain.store.studies_dir / rel)
            assert pydicom.dcmread(mtls.store.studies_dir / rel).PixelData == pydicom.dcmread(path).PixelData
    finally:
        stop_node(plain)
    # no client certificate (+tla), a certificate from another CA, and plaintext: all refused
    other = [fresh_uids(pydicom_file("CT_small.dcm"), tmp_path / "c")]
    for args in (("+tla", "+cf", str(pki.ca)), ("+tls", str(pki.rogue_key), str(pki.rogue_cert), "+cf", str(pki.ca)),
                 ()):
        done = storescu_tls(mtls, pki, other, *args)
        assert done.returncode != 0, args
    assert len(mtls.store.instance_rows()) == 2
    # and storescu refuses a node whose certificate it cannot verify (it does check ours)
    done = storescu_tls(mtls, pki, other, "+tls", str(pki.client_key), str(pki.client_cert), "+cf",
                        str(pki.rogue_cert))
    assert done.returncode != 0
    assert len(audit(mtls, TLS_REFUSED)) >= 3


# --------------------------------------------------------------------------- configuration


@pytest.mark.parametrize("change, needle", [
    ({"tls_cert": "missing.crt"}, "tls_cert {d}/missing.crt does not exist."),
    ({"tls_key": "other.key"}, "does not belong to the certificate"),
    ({"tls_key": "node-encrypted.key"}, "cannot be loaded as an unencrypted PEM"),
    ({"tls_ca": "missing-ca.crt"}, "tls_ca {d}/missing-ca.crt does not exist."),
    ({"tls_ca": "node.key"}, "tls_ca {d}/node.key cannot be loaded as PEM CA certificates"),
])
def test_certificate_files_that_do_not_load_are_one_sentence(pki: Pki, change: dict[str, str], needle: str) -> None:
    d = pki.ca.parent
    values = {"tls_cert": "node.crt", "tls_key": "node.key", "tls_ca": "ca.crt", **change}
    config = Config(**{k: d / v for k, v in values.items()}).validate()  # type: ignore[arg-type]
    with pytest.raises(ConfigError) as info:
        server_context(config)
    message = str(info.value)
    assert needle.format(d=d) in message and message.endswith(".") and "\n" not in message


def test_unreadable_key_is_named(pki: Pki, tmp_path: Path) -> None:
    import os

    if os.geteuid() == 0:
        # root reads any file: prove the sentence with a directory in the key's place instead
        key = tmp_path / "node.key"
        key.mkdir()
        expected = f"tls_key {key} is not a file."
    else:
        key = tmp_path / "node.key"
        key.write_bytes(pki.server_key.read_bytes())
        key.chmod(0)
        expected = f"tls_key {key} cannot be read: Permission denied."
    with pytest.raises(ConfigError, match="^" + expected.replace(".", r"\.") + "$"):
        server_context(Config(tls_cert=pki.server_cert, tls_key=key).validate())


@pytest.mark.parametrize("values, needle", [
    ({"tls_only": True}, "tls_only needs tls_cert and tls_key"),
    ({"tls_ca": "/x/ca.crt"}, "tls_ca (client certificate verification) needs tls_cert"),
    ({"tls_cert": "/x/a.crt", "tls_key": "/x/a.key", "tls_port": 11112}, "tls_port and port are both 11112"),
    ({"tls_port": 70000}, "tls_port must be a whole number"),
])
def test_tls_settings_that_cannot_work(tmp_path: Path, values: dict[str, object], needle: str) -> None:
    with pytest.raises(ConfigError) as info:
        load_config(tmp_path / "absent.toml", values)
    assert needle in str(info.value)


def test_headless_with_a_missing_key_stops_with_one_sentence(pki: Pki, tmp_path: Path) -> None:
    done = subprocess.run([sys.executable, "-m", "app", "--config", str(tmp_path / "none.toml"), "--headless",
                           "--data-dir", str(tmp_path / "data"), "--port", str(free_port()),
                           "--tls-cert", str(pki.server_cert), "--tls-key", str(tmp_path / "gone.key")],
                          cwd=REPO, capture_output=True, text=True, timeout=60)
    assert done.returncode == 2
    assert done.stderr.strip() == f"firstlook: tls_key {tmp_path / 'gone.key'} does not exist."
    assert not (tmp_path / "data").exists()  # nothing started


def test_cli_tls_options_reach_the_config(pki: Pki, tmp_path: Path) -> None:
    from app.cli import CONFIG_KEYS, build_parser
    from app.core.models import default_specs

    args = build_parser(default_specs()).parse_args(["--tls-cert", str(pki.server_cert), "--tls-key", str(pki.server_key),
                                 "--tls-ca", str(pki.ca), "--tls-port", "2763", "--tls-only"])
    config = load_config(tmp_path / "absent.toml", {k: getattr(args, k) for k in CONFIG_KEYS})
    assert (config.tls_cert, config.tls_key, config.tls_ca, config.tls_port, config.tls_only) == \
        (pki.server_cert, pki.server_key, pki.ca, 2763, True)
    assert server_context(config).verify_mode == ssl.CERT_REQUIRED
    assert load_config(tmp_path / "absent.toml").tls_port == 2762  # IANA dicom-tls


def test_address_allow_list_on_the_tls_port_answers_with_an_association_reject(data_dir: Path, pki: Pki) -> None:
    n = tls_node(data_dir, pki, bind="127.0.0.1", allow_ip=["127.0.0.2"])
    try:
        context = client_context(pki, pki.client_cert, pki.client_key)
        for source, rejected in (("127.0.0.1", True), ("127.0.0.2", False)):
            ae = AE(ae_title="CT01")
            ae.add_requested_context(Verification)
            assoc = ae.associate("127.0.0.1", tls_port(n), ae_title=n.ae, tls_args=(context, "127.0.0.1"),
                                 bind_address=(source, 0))
            assert assoc.is_rejected is rejected and assoc.is_established is not rejected, source
            if assoc.is_established:
                assert int(assoc.send_c_echo().Status) == 0
                assoc.release()
        (refused,) = [r for r in n.scp.audit.records() if r["event"] == "dicom.association_rejected"]
        assert (refused["ip"], refused["transport"], refused["reason"]) == ("127.0.0.1", "tls", "address not in allow_ip")
    finally:
        stop_node(n)
