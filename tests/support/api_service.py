"""A real ``python -m app --headless`` with its HTTP API on free loopback ports, for the
desktop-client tests: start, stop (SIGTERM) and start again on the same ports and data dir."""

from __future__ import annotations

import signal
import subprocess
import sys
import time
from pathlib import Path

import httpx

from tests.support import REPO, free_port
from tests.support.node_helpers import dcmtk, dcmtk_env


class HeadlessService:
    def __init__(self, root: Path, packs_dir: Path | None = None, quiet_period_s: float = 0.5) -> None:
        self.root = root
        self.data_dir = root / "service-data"
        self.packs_dir = packs_dir or root / "no-packs"
        self.port = free_port()
        self.api_port = free_port()
        self.quiet_period_s = quiet_period_s
        self.proc: subprocess.Popen[str] | None = None
        self.log = root / "service.log"

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.api_port}"

    @property
    def token_file(self) -> Path:
        return self.data_dir / "api" / "local-token"

    def token(self) -> str:
        return self.token_file.read_text().strip()

    def start(self, timeout: float = 90.0) -> "HeadlessService":
        self.root.mkdir(parents=True, exist_ok=True)
        log = open(self.log, "a")
        self.proc = subprocess.Popen(
            [sys.executable, "-m", "app", "--config", str(self.root / "absent.toml"), "--headless",
             "--data-dir", str(self.data_dir), "--cache-dir", str(self.root / "service-cache"),
             "--packs-dir", str(self.packs_dir), "--port", str(self.port), "--api-port", str(self.api_port),
             "--quiet-period", str(self.quiet_period_s), "--min-free-mb", "0"],
            cwd=REPO, stdout=log, stderr=subprocess.STDOUT, text=True)
        log.close()
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            assert self.proc.poll() is None, f"the service exited: {self.log.read_text()[-3000:]}"
            if self.token_file.is_file():
                try:
                    answer = httpx.get(f"{self.url}/api/v1/status", timeout=2,
                                       headers={"Authorization": f"Bearer {self.token()}"})
                    if answer.status_code == 200 and answer.json()["node"]["listening"]:
                        return self
                except (httpx.HTTPError, ValueError, KeyError):
                    pass
            time.sleep(0.2)
        raise AssertionError(f"the service did not answer in {timeout} s: {self.log.read_text()[-3000:]}")

    def stop(self, timeout: float = 60.0) -> None:
        if self.proc is None:
            return
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
            try:
                self.proc.wait(timeout)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()
        self.proc = None

    def users_add(self, name: str) -> str:
        """``firstlook users add NAME``: the token is the last line it prints."""
        out = subprocess.run([sys.executable, "-m", "app", "--config", str(self.root / "absent.toml"),
                              "--data-dir", str(self.data_dir), "users", "add", name],
                             cwd=REPO, capture_output=True, text=True, timeout=60)
        assert out.returncode == 0, out.stderr
        return out.stdout.strip().splitlines()[-1].strip()

    def users_revoke(self, name: str) -> None:
        out = subprocess.run([sys.executable, "-m", "app", "--config", str(self.root / "absent.toml"),
                              "--data-dir", str(self.data_dir), "users", "revoke", name],
                             cwd=REPO, capture_output=True, text=True, timeout=60)
        assert out.returncode == 0, out.stderr

    def storescu(self, *files: Path) -> None:
        sent = subprocess.run([dcmtk("storescu"), "-aec", "FIRSTLOOK", "127.0.0.1", str(self.port),
                               *map(str, files)], capture_output=True, text=True, env=dcmtk_env(), timeout=120)
        assert sent.returncode == 0, sent.stderr
