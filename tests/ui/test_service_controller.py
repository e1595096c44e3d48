"""The controller holds the desktop to the service's declared interface: a factory that
builds something else is reported at once, not found out later by a silent status poller."""

from __future__ import annotations

import os

os.environ.setdefault("QT_QPA_PLATFORM", "offscreen")

from app.core.config import Config
from ui.service_controller import ServiceController


class NodeOnly:
    """A service without the analysis side (no models_status, no queue_length)."""

    def __init__(self, config: Config) -> None:
        self.store = self.hub = None

    def start(self) -> bool:
        return True

    def stop(self) -> None:
        pass


def test_a_factory_without_the_desktop_interface_is_reported(qtbot, tmp_path):
    controller = ServiceController(NodeOnly, Config(data_dir=tmp_path / "data"))
    with qtbot.waitSignal(controller.failed, timeout=5000) as failed:
        controller.start()
    assert "DesktopService" in failed.args[0] and controller.service is None
    controller.stop_and_wait()
