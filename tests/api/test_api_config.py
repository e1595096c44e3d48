"""The API's settings: TLS is required whenever it is bound beyond loopback (one sentence
otherwise), the CLI options reach the config, HTTPS serves with the DICOM certificate, and an
index made before the users table gains it on open."""

from __future__ import annotations

import datetime
import ipaddress
import os
import ssl
import sqlite3
import subprocess
import sys
import time
from pathlib import Path

import httpx
import pytest
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import rsa
from cryptography.x509.oid import NameOID

from app.cli import CONFIG_KEYS
from app.core.config import Config, ConfigError, load_config
from app.core.store import StudyStore
from app.core.store.migrations import bundled_migrations, migrate
from app.core.users import UserDirectory
from tests.support import REPO, free_port


def _one_sentence(message: str) -> None:
    assert message.endswith(".") and ". " not in message and "\n" not in message, message


@pytest.mark.parametrize("values, needle", [
    ({"api_bind": "0.0.0.0"}, "api_bind 0.0.0.0 reaches beyond this machine, so the API must use TLS"),
    ({"api_bind": "192.168.1.20"}, "must use TLS"),
    ({"api_bind": "::"}, "must use TLS"),
    ({"api_tls": True}, "api_tls needs tls_cert and tls_key"),
    ({"api_bind": "server.local"}, "api_bind must be an IP address"),
    ({"api_port": 0}, "api_port must be a whole number"),
    ({"api_tls": "yes"}, "api_tls must be true or false"),
])
def test_api_settings_that_cannot_work_are_one_sentence(tmp_path: Path, values: dict, needle: str) -> None:
    with pytest.raises(ConfigError) as caught:
        Config(data_dir=tmp_path, **values).validate()
    assert needle in str(caught.value)
    _one_sentence(str(caught.value))


def test_beyond_loopback_with_tls_and_loopback_without_are_fine(tmp_path: Path) -> None:
    cert, key = tmp_path / "c.pem", tmp_path / "k.pem"
    Config(data_dir=tmp_path, api_bind="0.0.0.0", api_tls=True, tls_cert=cert, tls_key=key).validate()
    Config(data_dir=tmp_path, api_bind="127.0.0.2").validate()
    Config(data_dir=tmp_path, api_bind="::1").validate()
    assert Config(data_dir=tmp_path).service_token_file == tmp_path / "api" / "local-token"
    assert Config(data_dir=tmp_path, api_token_file=tmp_path / "t").token_file == tmp_path / "t"


def test_cli_options_reach_the_config(tmp_path: Path) -> None:
    assert {"api_bind", "api_port", "api_tls"} <= set(CONFIG_KEYS)
    config = load_config(tmp_path / "absent.toml", {"api_bind": "127.0.0.1", "api_port": 12345})
    assert (config.api_bind, config.api_port, config.api_tls) == ("127.0.0.1", 12345, False)


def test_headless_beyond_loopback_without_tls_refuses_with_one_sentence(tmp_path: Path) -> None:
    done = subprocess.run([sys.executable, "-m", "app", "--config", str(tmp_path / "absent.toml"), "--headless",
                           "--data-dir", str(tmp_path / "data"), "--port", str(free_port()),
                           "--api-bind", "0.0.0.0"], cwd=REPO, capture_output=True, text=True, timeout=60)
    assert done.returncode == 2
    (line,) = done.stderr.strip().splitlines()
    assert line.startswith("firstlook: api_bind 0.0.0.0 reaches beyond this machine, so the API must use TLS")
    _one_sentence(line.removeprefix("firstlook: "))
    assert not (tmp_path / "data").exists()  # refused before anything was opened


def test_headless_with_the_api_on_the_dicom_port_says_so(tmp_path: Path) -> None:
    port = free_port()
    done = subprocess.run([sys.executable, "-m", "app", "--config", str(tmp_path / "absent.toml"), "--headless",
                           "--data-dir", str(tmp_path / "data"), "--packs-dir", str(tmp_path / "no-packs"),
                           "--port", str(port), "--api-port", str(port)],
                          cwd=REPO, capture_output=True, text=True, timeout=120)
    assert done.returncode == 1
    assert f"HTTP API not started: cannot listen on 127.0.0.1:{port}" in done.stderr and "Traceback" not in done.stderr
    assert Config(data_dir=tmp_path, port=11113).validate().api_port == 11113  # an old desktop config still loads


def _self_signed(directory: Path) -> tuple[Path, Path]:
    key = rsa.generate_private_key(public_exponent=65537, key_size=2048)
    name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "firstlook-test")])
    now = datetime.datetime.now(datetime.timezone.utc)
    cert = (x509.CertificateBuilder().subject_name(name).issuer_name(name).public_key(key.public_key())
            .serial_number(x509.random_serial_number()).not_valid_before(now - datetime.timedelta(minutes=5))
            .not_valid_after(now + datetime.timedelta(days=1))
            .add_extension(x509.SubjectAlternativeName([x509.IPAddress(ipaddress.ip_address("127.0.0.1"))]), False)
            .add_extension(x509.BasicConstraints(ca=True, path_length=None), True)
            .sign(key, hashes.SHA256()))
    cert_path, key_path = directory / "api.crt", directory / "api.key"
    cert_path.write_bytes(cert.public_bytes(serialization.Encoding.PEM))
    key_path.write_bytes(key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8,
                                           serialization.NoEncryption()))
    os.chmod(key_path, 0o600)
    return cert_path, key_path


def test_https_with_the_dicom_certificate(tmp_path: Path) -> None:
    cert, key = _self_signed(tmp_path)
    api_port = free_port()
    data = tmp_path / "data"
    proc = subprocess.Popen([sys.executable, "-m", "app", "--config", str(tmp_path / "absent.toml"), "--headless",
                             "--data-dir", str(data), "--packs-dir", str(tmp_path / "no-packs"),
                             "--port", str(free_port()), "--tls-port", str(free_port()), "--tls-cert", str(cert),
                             "--tls-key", str(key), "--api-tls", "--api-port", str(api_port), "--min-free-mb", "0"],
                            cwd=REPO, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)
    try:
        token_file = data / "api" / "local-token"
        deadline = time.monotonic() + 60
        while not token_file.is_file() and time.monotonic() < deadline and proc.poll() is None:
            time.sleep(0.2)
        headers = {"Authorization": f"Bearer {token_file.read_text().strip()}"}
        answer = None
        while time.monotonic() < deadline:
            try:
                answer = httpx.get(f"https://127.0.0.1:{api_port}/api/v1/status", headers=headers,
                                   verify=ssl.create_default_context(cafile=str(cert)))
                break
            except httpx.ConnectError:
                time.sleep(0.2)
        assert answer is not None and answer.status_code == 200 and answer.json()["user"] == "local"
        with pytest.raises(httpx.HTTPError):  # plain HTTP is not served on the TLS port
            httpx.get(f"http://127.0.0.1:{api_port}/api/v1/status", headers=headers, timeout=5)
    finally:
        proc.terminate()
        proc.wait(60)


def test_an_index_from_before_the_users_table_gains_it(tmp_path: Path) -> None:
    data = tmp_path / "data"
    data.mkdir()
    conn = sqlite3.connect(data / "index.sqlite3", isolation_level=None)
    migrate(conn, bundled_migrations()[:1])  # the index as schema 1 left it
    conn.execute("INSERT INTO studies (study_uid, patient_id, first_received, last_received) VALUES ('1.2.3', 'P', 1, 1)")
    conn.close()
    store = StudyStore(data)
    try:
        assert store.index.schema_version >= 3 and [s.study_uid for s in store.list_studies()] == ["1.2.3"]
        users = UserDirectory(store)
        token = users.add("alice")
        assert users.check(token).user == "alice" and users.check("fl_other").refusal == "unknown token"
    finally:
        store.close()


def test_the_self_test_reports_the_api_port(tmp_path: Path) -> None:
    import socket

    from app.commands.selftest import INFO, SelfTestOptions, run_self_test

    options = SelfTestOptions(devices=[], report_dir=tmp_path / "logs")
    with socket.socket() as busy:
        busy.bind(("127.0.0.1", 0))
        busy.listen()
        taken = busy.getsockname()[1]
        config = Config(data_dir=tmp_path / "data", packs_dir=tmp_path / "no-packs", min_free_mb=0,
                        port=free_port(), api_port=taken)
        (check,) = [c for c in run_self_test(config, options).checks if c.name == "configured API port"]
    assert check.status == INFO and f"127.0.0.1:{taken} is in use" in check.detail and "/status" in check.detail
    free = free_port()
    (check,) = [c for c in run_self_test(Config(data_dir=tmp_path / "data", packs_dir=tmp_path / "no-packs",
                                                min_free_mb=0, port=free_port(), api_port=free), options).checks
                if c.name == "configured API port"]
    assert check.status == INFO and check.detail == f"127.0.0.1:{free} is free for the HTTP API (http)"


# Inside a private network namespace (only loopback exists, so 0.0.0.0 reaches nothing else):
# the service bound to every address with TLS serves HTTPS, and the plain variant is refused.
BEYOND_LOOPBACK = r"""
import json, ssl, subprocess, sys, time
import httpx
from tests.support import free_port
cert, key, work = sys.argv[1:4]
common = [sys.executable, "-m", "app", "--config", work + "/absent.toml", "--headless", "--data-dir", work + "/data",
          "--packs-dir", work + "/no-packs", "--port", str(free_port()), "--min-free-mb", "0", "--api-bind", "0.0.0.0"]
plain = subprocess.run(common + ["--api-port", str(free_port())], capture_output=True, text=True, timeout=60)
api_port = free_port()
proc = subprocess.Popen(common + ["--api-port", str(api_port), "--api-tls", "--tls-cert", cert, "--tls-key", key,
                                  "--tls-port", str(free_port())], stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
status = None
try:
    deadline = time.monotonic() + 60
    while time.monotonic() < deadline and status is None:
        try:
            token = open(work + "/data/api/local-token").read().strip()
            status = httpx.get(f"https://127.0.0.1:{api_port}/api/v1/status", headers={"Authorization": "Bearer " + token},
                               verify=ssl.create_default_context(cafile=cert)).json()
        except (OSError, httpx.HTTPError):
            time.sleep(0.2)
finally:
    proc.terminate()
    proc.wait(60)
print(json.dumps({"plain_code": plain.returncode, "plain_err": plain.stderr, "status": status}))
"""


def test_bound_beyond_loopback_with_tls_serves_https(tmp_path: Path) -> None:
    import json

    from tests.support.orthanc import in_private_network

    cert, key = _self_signed(tmp_path)
    done = subprocess.run(in_private_network([sys.executable, "-c", BEYOND_LOOPBACK, str(cert), str(key),
                                              str(tmp_path)]),
                          cwd=REPO, env={**os.environ, "PYTHONPATH": str(REPO)}, capture_output=True, text=True,
                          timeout=180)
    assert done.returncode == 0, done.stderr[-3000:]
    result = json.loads(done.stdout.strip().splitlines()[-1])
    assert result["plain_code"] == 2 and "must use TLS" in result["plain_err"]
    assert result["status"] is not None and result["status"]["user"] == "local"
    assert result["status"]["node"]["listening"] is True
