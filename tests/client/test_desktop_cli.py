"""``firstlook`` (the desktop, offscreen) with ``--server-url`` attaches through the wiring in
app/cli.py: it logs the attach, opens no DICOM node or store of its own, and closes cleanly."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import threading
import time
from pathlib import Path

from tests.support import REPO
from tests.support.api_service import HeadlessService


def test_the_desktop_command_attaches_to_the_configured_server(tmp_path: Path):
    service = HeadlessService(tmp_path / "server").start()
    try:
        config = tmp_path / "desk.toml"
        config.write_text(f'api_token = "{service.users_add("desk")}"\n')
        proc = subprocess.Popen(
            [sys.executable, "-m", "app", "--config", str(config), "--server-url", service.url,
             "--data-dir", str(tmp_path / "desk-data"), "--cache-dir", str(tmp_path / "desk-cache"),
             "--port", str(service.port)],   # the service's own DICOM port: an embedded node could not bind it
            cwd=REPO, env=dict(os.environ, QT_QPA_PLATFORM="offscreen"), stderr=subprocess.PIPE, text=True)
        lines: list[str] = []
        reader = threading.Thread(target=lambda: lines.extend(iter(proc.stderr.readline, "")), daemon=True)
        reader.start()
        deadline = time.monotonic() + 60
        while time.monotonic() < deadline and not any("attaching to the FirstLook service" in x for x in lines):
            assert proc.poll() is None, "".join(lines)[-3000:]
            time.sleep(0.1)
        time.sleep(1.0)   # let it start: the status request, the event stream
        proc.send_signal(signal.SIGTERM)
        proc.wait(60)
        reader.join(10)
        err = "".join(lines)
        assert proc.returncode == 0, err[-3000:]
        assert f"attaching to the FirstLook service at {service.url}" in err
        assert "embedded" not in err and "cannot listen" not in err and "Traceback" not in err
        assert not (tmp_path / "desk-data" / "index.sqlite3").exists()   # no store of its own
    finally:
        service.stop()
