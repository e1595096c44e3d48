"""Two desktops attached to one real ``firstlook --headless`` over its HTTP API: a study sent
by DCMTK storescu appears in both, "mark reviewed" on one shows on the other, and when the
service is stopped and started again both say so and recover without a restart."""

from __future__ import annotations

import os

os.environ.setdefault("QT_QPA_PLATFORM", "offscreen")

from collections.abc import Iterator
from dataclasses import dataclass, replace
from pathlib import Path

import pytest

from app.client import RemoteService, choose_service
from app.core.audit import AuditLog
from app.core.config import Config
from app.core.service_api import DesktopService
from tests.support.api_service import HeadlessService
from tests.support.node_helpers import fresh_uids, pydicom_file
from ui.main import wire
from ui.main_window import MainWindow
from ui.service_controller import ServiceController


@dataclass
class Desktop:
    window: MainWindow
    controller: ServiceController

    def row(self, study_uid: str):
        return self.window.model.row_for(study_uid)

    def server_text(self) -> str:
        return self.window.status.server_label.text()


def no_embedded_service(config: Config) -> DesktopService:
    raise AssertionError("a desktop with a server configured must not start the embedded service")


@pytest.fixture
def service(tmp_path: Path) -> Iterator[HeadlessService]:
    svc = HeadlessService(tmp_path / "server").start()
    yield svc
    svc.stop()


def open_desktop(qtbot, tmp_path: Path, name: str, url: str, token: str) -> Desktop:
    config = replace(Config(), data_dir=tmp_path / name / "data", cache_dir=tmp_path / name / "cache",
                     packs_dir=tmp_path / "no-packs", server_url=url, api_token=token)
    window = MainWindow(config, tmp_path / name / "firstlook.toml", device_choices=None)
    qtbot.addWidget(window)
    controller = ServiceController(lambda cfg: choose_service(cfg, no_embedded_service), config)
    wire(window, controller)
    window.show()
    controller.start()
    return Desktop(window, controller)


def test_two_desktops_follow_one_service_and_survive_its_restart(qtbot, tmp_path: Path, service: HeadlessService):
    tokens = [service.users_add("reader1"), service.users_add("reader2")]
    desktops = [open_desktop(qtbot, tmp_path, f"desk{i}", service.url, token) for i, token in enumerate(tokens)]
    try:
        qtbot.waitUntil(lambda: all("connected to" in d.server_text() for d in desktops), timeout=15000)
        assert all(isinstance(d.controller.service, RemoteService) for d in desktops)
        qtbot.waitUntil(lambda: all(f":{service.port}" in d.window.status.node_label.text() for d in desktops),
                        timeout=5000)   # the node label shows the service's node, not a local one
        settings = desktops[0].window.open_settings()   # the service's node, models and destinations: read-only
        assert settings.attached_note.isVisible() and service.url in settings.attached_note.text()
        assert not settings.ae_edit.isEnabled() and settings.server_edit.isEnabled()
        settings.reject()

        # A study sent by storescu appears in both worklists.
        study_uid = "1.2.826.0.1.3680043.8.498.1201"
        service.storescu(fresh_uids(pydicom_file("CT_small.dcm"), tmp_path / "send", study=study_uid))
        qtbot.waitUntil(lambda: all(d.row(study_uid) is not None for d in desktops), timeout=15000)
        qtbot.waitUntil(lambda: all(d.row(study_uid).status == "ready" for d in desktops), timeout=15000)

        # Reviewed on one shows on the other within a second.
        first, second = desktops
        first.window.mark_reviewed(study_uid)
        qtbot.waitUntil(lambda: second.row(study_uid).status == "reviewed", timeout=1000)
        assert first.row(study_uid).status == "reviewed"

        # The first desktop opens the study: images by WADO-RS into its own cache.
        first.window.open_study(study_uid)
        qtbot.waitUntil(lambda: first.window.viewer.state.opened is not None, timeout=15000)
        cached = list((tmp_path / "desk0" / "cache").rglob("*.dcm"))
        assert len(cached) == 1 and cached[0].read_bytes() == next(service.data_dir.rglob("*.dcm")).read_bytes()
        # The opening is audited where the records are, with the reader's API user.
        opened = [r for r in AuditLog(service.data_dir).records() if r.get("event") == "api.study_opened"]
        assert [(r["user"], r["study_uid"]) for r in opened] == [("reader1", study_uid)]
        assert not list((tmp_path / "desk0").rglob("audit.log"))

        # The service goes away: both say so, and keep what they show.
        service.stop()
        qtbot.waitUntil(lambda: all("disconnected, retrying" in d.server_text() for d in desktops), timeout=15000)
        assert all(d.row(study_uid) is not None for d in desktops)
        qtbot.waitUntil(lambda: all("not reachable" in d.window.status.node_label.text() for d in desktops),
                        timeout=5000)
        assert first.window.viewer.state.opened is not None and first.window.viewer.study_uid == study_uid

        # It comes back on the same ports: both recover by themselves and follow it again.
        service.start()
        qtbot.waitUntil(lambda: all("connected to" in d.server_text() and "disconnected" not in d.server_text()
                                    for d in desktops), timeout=20000)
        qtbot.waitUntil(lambda: all(f":{service.port}" in d.window.status.node_label.text() for d in desktops),
                        timeout=5000)
        later = "1.2.826.0.1.3680043.8.498.1202"
        service.storescu(fresh_uids(pydicom_file("CT_small.dcm"), tmp_path / "send2", study=later))
        qtbot.waitUntil(lambda: all(d.row(later) is not None for d in desktops), timeout=15000)
        second.window.mark_reviewed(study_uid)   # toggles back, from the other desktop this time
        qtbot.waitUntil(lambda: first.row(study_uid).status != "reviewed", timeout=1000)
    finally:
        for d in desktops:
            d.window.shutdown()
            d.controller.stop_and_wait()
