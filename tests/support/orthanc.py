"""Orthanc with its DICOMweb plugin (Debian ``orthanc`` + ``orthanc-dicomweb``) as the reference
DICOMweb server. Orthanc binds every address, so it only ever runs inside a private network
namespace: the caller is a scenario started with ``in_private_network`` (``unshare -n``)."""

from __future__ import annotations

import json
import subprocess
import sys
import time
from pathlib import Path

import httpx

ORTHANC = "/usr/sbin/Orthanc"
DICOMWEB_PLUGIN = "/usr/share/orthanc/plugins/libOrthancDicomWeb.so"


def in_private_network(argv: list[str]) -> list[str]:
    """``argv`` run inside a new network namespace with only loopback up."""
    return ["unshare", "-n", "--", "sh", "-c", 'ip link set lo up && exec "$@"', "sh", *argv]


class Orthanc:
    def __init__(self, root: Path, dicom_port: int, http_port: int, aet: str = "ORTHANC") -> None:
        self.root, self.dicom_port, self.http_port, self.aet = root, dicom_port, http_port, aet
        self.proc: subprocess.Popen[bytes] | None = None

    @property
    def dicomweb_url(self) -> str:
        return f"http://127.0.0.1:{self.http_port}/dicom-web"

    def start(self, timeout: float = 60.0) -> "Orthanc":
        self.root.mkdir(parents=True, exist_ok=True)
        config = {
            "Name": "reference", "StorageDirectory": str(self.root / "storage"),
            "IndexDirectory": str(self.root / "index"), "StorageCompression": False,
            "HttpPort": self.http_port, "DicomPort": self.dicom_port, "DicomAet": self.aet,
            "RemoteAccessAllowed": False, "AuthenticationEnabled": False, "HttpDescribeErrors": True,
            "DicomCheckCalledAet": False, "DicomAlwaysAllowStore": True, "SslEnabled": False,
            "Plugins": [DICOMWEB_PLUGIN],
            "DicomWeb": {"Enable": True, "Root": "/dicom-web/", "EnableWado": False, "Ssl": False,
                         "StudiesMetadata": "Full", "SeriesMetadata": "Full"},
        }
        path = self.root / "orthanc.json"
        path.write_text(json.dumps(config))
        log = open(self.root / "orthanc.log", "ab")
        self.proc = subprocess.Popen([ORTHANC, str(path)], stdout=log, stderr=subprocess.STDOUT)
        log.close()
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                raise RuntimeError(f"Orthanc exited: {(self.root / 'orthanc.log').read_text()[-2000:]}")
            try:
                if httpx.get(f"http://127.0.0.1:{self.http_port}/system", timeout=1).status_code == 200:
                    return self
            except httpx.HTTPError:
                pass
            time.sleep(0.2)
        raise RuntimeError("Orthanc did not answer")

    def stop(self) -> None:
        if self.proc is not None and self.proc.poll() is None:
            self.proc.terminate()
            try:
                self.proc.wait(30)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()
        self.proc = None


if __name__ == "__main__":  # pragma: no cover - manual check
    sys.exit("import this module")
