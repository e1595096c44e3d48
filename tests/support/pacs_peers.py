"""Real PACS peers for the outbox tests and bench: Orthanc (Debian ``orthanc``) with a private
configuration, DCMTK ``storescp``, and FirstLook headless, all run inside one private network
namespace (``unshare -n``; loopback only) by ``tests/support/outbox_scenario.py``."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx
import pydicom

from tests.support import REPO

ORTHANC = "/usr/sbin/Orthanc"
STORESCP = "/usr/bin/storescp"


def loopback_up() -> None:
    subprocess.run(["ip", "link", "set", "lo", "up"], check=True)


def wait_port(port: int, timeout: float = 60.0, proc: subprocess.Popen | None = None) -> bool:
    import socket

    end = time.monotonic() + timeout
    while time.monotonic() < end:
        if proc is not None and proc.poll() is not None:
            return False
        with socket.socket() as s:
            s.settimeout(0.5)
            if s.connect_ex(("127.0.0.1", port)) == 0:
                return True
        time.sleep(0.05)
    return False


@dataclass
class Orthanc:
    """Orthanc as the PACS: DICOM and HTTP on loopback, storage in ``workdir``."""

    workdir: Path
    dicom_port: int = 4242
    http_port: int = 8042
    aet: str = "ORTHANC"
    proc: subprocess.Popen | None = None

    def start(self) -> "Orthanc":
        self.workdir.mkdir(parents=True, exist_ok=True)
        config = {
            "Name": "firstlook-test-pacs", "StorageDirectory": str(self.workdir / "storage"),
            "IndexDirectory": str(self.workdir / "storage"), "DicomAet": self.aet, "DicomPort": self.dicom_port,
            "HttpPort": self.http_port, "RemoteAccessAllowed": False, "AuthenticationEnabled": False,
            "DicomCheckCalledAet": True, "Plugins": [], "HttpServerEnabled": True, "DicomServerEnabled": True,
            "StableAge": 1, "ConcurrentJobs": 1, "HttpDescribeErrors": True,
        }
        path = self.workdir / "orthanc.json"
        path.write_text(json.dumps(config))
        log = open(self.workdir / "orthanc.log", "ab")
        self.proc = subprocess.Popen([ORTHANC, str(path)], stdout=log, stderr=log)
        if not (wait_port(self.http_port, 60, self.proc) and wait_port(self.dicom_port, 30, self.proc)):
            raise RuntimeError("Orthanc did not start: " + (self.workdir / "orthanc.log").read_text()[-2000:])
        return self

    def stop(self) -> None:
        if self.proc is not None and self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
            try:
                self.proc.wait(30)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait(10)
        self.proc = None

    def instances(self) -> list[dict[str, str]]:
        """Every instance Orthanc holds, with the tags the tests check (REST API)."""
        out = []
        with httpx.Client(base_url=f"http://127.0.0.1:{self.http_port}", timeout=30) as client:
            for oid in client.get("/instances").json():
                tags = client.get(f"/instances/{oid}/simplified-tags").json()
                out.append({k: str(tags.get(k, "")) for k in (
                    "SOPInstanceUID", "SOPClassUID", "StudyInstanceUID", "SeriesInstanceUID", "Modality",
                    "SeriesDescription", "SeriesNumber", "PatientID")})
        return out


@dataclass
class StoreSCP:
    """DCMTK storescp writing what it receives to ``outdir``; ``--refuse`` while ``refuse``."""

    outdir: Path
    port: int = 11119
    aet: str = "STORESCP"
    refuse: bool = False
    proc: subprocess.Popen | None = None

    def start(self) -> "StoreSCP":
        self.outdir.mkdir(parents=True, exist_ok=True)
        args = [STORESCP, "-aet", self.aet, "-od", str(self.outdir), "-uf", *(["--refuse"] if self.refuse else []),
                str(self.port)]
        log = open(self.outdir.parent / f"storescp-{self.port}.log", "ab")
        self.proc = subprocess.Popen(args, stdout=log, stderr=log)
        if not wait_port(self.port, 30, self.proc):
            raise RuntimeError("storescp did not start")
        return self

    def stop(self) -> None:
        if self.proc is not None and self.proc.poll() is None:
            self.proc.terminate()
            self.proc.wait(30)
        self.proc = None

    def received(self) -> list[str]:
        """SOP Instance UIDs of the files written (one file per C-STORE kept; -uf names by UID)."""
        return sorted(str(pydicom.dcmread(p, stop_before_pixels=True).SOPInstanceUID)
                      for p in self.outdir.iterdir() if p.is_file())


@dataclass
class FirstLook:
    """``python -m app --headless`` with a configuration file, restarted at will."""

    workdir: Path
    config: dict[str, Any]
    proc: subprocess.Popen | None = None

    @property
    def data_dir(self) -> Path:
        return Path(self.config["data_dir"])

    def start(self, crash_points: str = "") -> "FirstLook":
        import tomli_w

        path = self.workdir / "firstlook.toml"
        path.write_bytes(tomli_w.dumps(self.config).encode())
        env = {k: v for k, v in os.environ.items() if k != "FIRSTLOOK_CRASH_POINTS"}
        env["PYTHONPATH"] = str(REPO)
        if crash_points:
            env["FIRSTLOOK_CRASH_POINTS"] = crash_points
        log_path = self.workdir / "firstlook.log"
        log = open(log_path, "ab")
        log.write(f"=== start {time.strftime('%H:%M:%S')} crash points {crash_points or '-'}\n".encode())
        log.flush()
        offset = log_path.stat().st_size
        self.proc = subprocess.Popen([sys.executable, "-m", "app", "--config", str(path), "--headless"],
                                     cwd=REPO, env=env, stdout=log, stderr=log)
        end = time.monotonic() + 120
        while time.monotonic() < end:  # its own "listening" line, not any open port
            alive = self.alive()
            with open(log_path, "rb") as fh:
                fh.seek(offset)
                text = fh.read()
            if b"FirstLook headless: data in" in text:
                return self
            if not alive:
                # An armed crash point may fire before the line: the outbox re-sends what the last
                # kill interrupted as soon as the service starts, before the API is up.
                if crash_points and b"crash point" in text:
                    return self
                break
            time.sleep(0.05)
        raise RuntimeError("FirstLook did not listen:\n" + self.log_tail())

    def alive(self) -> bool:
        return self.proc is not None and self.proc.poll() is None

    def kill(self) -> None:
        if self.alive():
            self.proc.send_signal(signal.SIGKILL)  # type: ignore[union-attr]
        if self.proc is not None:
            self.proc.wait(30)

    def stop(self) -> int:
        if not self.alive():
            return self.proc.returncode if self.proc is not None else 0
        self.proc.send_signal(signal.SIGTERM)  # type: ignore[union-attr]
        return self.proc.wait(120)  # type: ignore[union-attr]

    def log_tail(self, n: int = 4000) -> str:
        path = self.workdir / "firstlook.log"
        return path.read_text(errors="replace")[-n:] if path.exists() else ""

    def db(self, sql: str) -> list[tuple]:
        import sqlite3

        try:
            conn = sqlite3.connect(f"file:{self.data_dir / 'index.sqlite3'}?mode=ro", uri=True, timeout=5)
            try:
                return conn.execute(sql).fetchall()
            finally:
                conn.close()
        except sqlite3.Error:
            return []


def storescu(port: int, files: list[Path], called: str = "FIRSTLOOK", calling: str = "MODALITY",
             check: bool = True) -> None:
    subprocess.run(["storescu", "-aet", calling, "-aec", called, "127.0.0.1", str(port), *map(str, files)],
                   check=check, capture_output=True, timeout=300)
