"""Live events over server-sent events from a real headless service (study arrived, series ready,
analysis, result stored, reviewed changed, each with the study's worklist row), and IT's status
page rendered by headless Chromium."""

from __future__ import annotations

import json
import queue
import shutil
import subprocess
import threading
from collections.abc import Iterator
from pathlib import Path

import httpx
import numpy as np
import pytest
from PIL import Image

from app.core.synthetic_dicom import synthetic_cxr
from app.core.worklist_json import row_from_json
from tests.api.conftest import Served, storescu
from tests.support.api_service import HeadlessService


@pytest.fixture(scope="module")
def own_service(tmp_path_factory: pytest.TempPathFactory) -> Iterator[HeadlessService]:
    service = HeadlessService(tmp_path_factory.mktemp("events")).start()
    yield service
    service.stop()


def _listen(url: str, token: str, into: "queue.Queue[tuple[str, dict]]", stop: threading.Event) -> None:
    with httpx.stream("GET", url, headers={"Authorization": f"Bearer {token}"}, timeout=None) as answer:
        assert answer.headers["content-type"].startswith("text/event-stream")
        name = ""
        for line in answer.iter_lines():
            if stop.is_set():
                return
            if line.startswith("event: "):
                name = line[7:]
            elif line.startswith("data: "):
                into.put((name, json.loads(line[6:])))


def _next(events: "queue.Queue[tuple[str, dict]]", name: str, timeout: float = 60.0) -> dict:
    while True:
        got, data = events.get(timeout=timeout)
        if got == name:
            return data


def test_events_reach_a_listener_with_rows(own_service: HeadlessService, tmp_path: Path) -> None:
    events: queue.Queue[tuple[str, dict]] = queue.Queue()
    stop = threading.Event()
    listener = threading.Thread(target=_listen, args=(own_service.url + "/api/v1/events", own_service.token(),
                                                      events, stop), daemon=True)
    listener.start()
    hello = _next(events, "hello", 10)
    assert hello["user"] == "local"

    cxr = synthetic_cxr(tmp_path, size=256)
    storescu(own_service.port, [cxr])
    arrived = _next(events, "study_arrived")
    row = row_from_json(arrived["row"])
    assert row.study_uid == arrived["study_uid"] and row.n_instances == 1 and row.patient_id == "SELFTEST"
    ready = _next(events, "series_ready")
    assert ready["study_uid"] == row.study_uid and ready["why"] in ("association released", "quiet period")
    stored = _next(events, "result_stored")  # no packs here: the result says why it was not analysed
    assert stored["study_uid"] == row.study_uid and row_from_json(stored["row"]).result_at is not None

    headers = {"Authorization": f"Bearer {own_service.users_add('reviewer')}"}
    answer = httpx.put(f"{own_service.url}/api/v1/studies/{row.study_uid}/reviewed", json={"reviewed": True},
                       headers=headers)
    assert answer.status_code == 200
    changed = _next(events, "reviewed_changed", 10)
    assert changed["user"] == "reviewer" and changed["reviewed"] is True
    assert row_from_json(changed["row"]).status == "reviewed"
    stop.set()


CHROMIUM_FLAGS = ["--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
                  "--disable-background-networking", "--disable-component-update", "--disable-sync"]


def test_status_page_renders_in_headless_chromium(served: Served, tmp_path: Path) -> None:
    page = httpx.get(served.service.url + "/status", headers=served.headers)
    assert page.status_code == 200 and page.headers["content-type"].startswith("text/html")
    html = page.text
    assert "FirstLook service" in html and f"FIRSTLOOK on 127.0.0.1:{served.service.port}" in html
    for model in ("chexnet", "blast-ct"):
        assert model in html
    assert 'id="queue"' in html and "GB free" in html and 'id="outbox"' in html
    assert httpx.get(served.service.url + "/status").status_code == 401

    chromium = shutil.which("chromium")
    assert chromium, "Debian chromium is a test dependency (.ci/system-deps.sh)"
    shot = tmp_path / "status.png"
    done = subprocess.run([chromium, *CHROMIUM_FLAGS, f"--user-data-dir={tmp_path / 'profile'}",
                           f"--screenshot={shot}", "--window-size=1100,900",
                           f"{served.service.url}/status?token={served.token}"],
                          capture_output=True, text=True, timeout=120)
    assert shot.is_file(), done.stderr[-2000:]
    pixels = np.asarray(Image.open(shot).convert("RGB"))
    assert pixels.shape[:2] == (900, 1100)
    assert pixels.std() > 10                               # not blank
    green = (pixels[..., 1] > 100) & (pixels[..., 0] < 80) & (pixels[..., 2] < 80)
    red = (pixels[..., 0] > 170) & (pixels[..., 1] < 70) & (pixels[..., 2] < 70)
    assert green.sum() + red.sum() > 200                   # the OK / ATTENTION badge was painted
