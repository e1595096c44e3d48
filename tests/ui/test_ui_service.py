"""The desktop with the real service: window first, node + models started off the GUI
thread, a study sent over loopback appears and gets its result, settings restart the node."""

from __future__ import annotations

import os

os.environ.setdefault("QT_QPA_PLATFORM", "offscreen")

import threading
import time
from dataclasses import replace
from pathlib import Path

from app.core.config import Config, load_config, save_config
from app.service import Service
from dicom_node.scu import send_files
from tests.support import free_port
from tests.support.dicom_factory import write_cxr
from ui.main import wire
from ui.main_window import MainWindow
from ui.service_controller import ServiceController


def test_study_sent_over_loopback_appears_and_is_analysed(qtbot, tmp_path: Path, cxr_dir: Path, packs_dir: Path):
    port = free_port()
    config = replace(Config(), data_dir=tmp_path / "data", cache_dir=tmp_path / "cache", packs_dir=packs_dir,
                     port=port, quiet_period_s=0.5)
    config_path = tmp_path / "firstlook.toml"
    save_config(config, config_path)

    gui_thread = threading.get_ident()
    factory_threads: list[int] = []

    def factory(cfg: Config) -> Service:
        factory_threads.append(threading.get_ident())
        return Service(cfg)

    window = MainWindow(config, config_path, device_choices=None)
    qtbot.addWidget(window)
    controller = ServiceController(factory, config)
    wire(window, controller)
    window.show()
    started = time.perf_counter()
    controller.start()
    assert time.perf_counter() - started < 0.2          # nothing heavy on the GUI thread
    assert window.status.progress.isVisible()           # loading progress shown straight away
    try:
        qtbot.waitUntil(lambda: f":{port}" in window.status.node_label.text(), timeout=20000)
        assert factory_threads and factory_threads[0] != gui_thread
        assert "FIRSTLOOK" in window.status.node_label.text()

        png = sorted((cxr_dir / "images").glob("*.png"))[1]
        path = write_cxr(tmp_path / "send", png, patient_name="LOOPBACK^TEST")
        statuses: list[int] = []
        sender = threading.Thread(target=lambda: statuses.extend(send_files("127.0.0.1", port, "FIRSTLOOK",
                                                                            [path])))
        sender.start()
        qtbot.waitUntil(lambda: window.model.rowCount() == 1, timeout=15000)
        sender.join(10)
        assert statuses == [0]
        row = window.model.row_at(0)
        assert row.patient_name == "LOOPBACK^TEST"
        # The real pipeline analyses it: the row leaves new/analysing with a model summary.
        qtbot.waitUntil(lambda: window.model.row_at(0).status == "ready", timeout=120000)
        row = window.model.row_at(0)
        assert row.priority in ("critical", "urgent", "routine", "not_analysed", "failed")
        assert row.summary
        qtbot.waitUntil(lambda: "chexnet: ready" in window.status.models_label.text(), timeout=10000)
        # The progress bar stays while any model (e.g. the 12 BLAST-CT members) is still loading,
        # and goes once every model has settled.
        qtbot.waitUntil(lambda: not window.status.progress.isVisible(), timeout=300000)
        assert "blast-ct:" in window.status.models_label.text()
        # Opening it shows the radiograph, and the heatmap when the model produced one.
        window.open_study(row.study_uid)
        qtbot.waitUntil(lambda: window.viewer.rendered is not None and window.viewer.overlays_ready, timeout=10000)
        if row.priority not in ("not_analysed", "failed"):
            assert window.viewer.opened.cam is not None

        # Settings: a new port restarts the node through the service.
        new_port = free_port()
        dialog = window.open_settings()
        dialog.port_edit.setText(str(new_port))
        assert "restarts the DICOM node" in dialog.restart_note.text()
        first_service = controller.service
        dialog.save()
        assert load_config(config_path).port == new_port
        qtbot.waitUntil(lambda: controller.service is not None and controller.service is not first_service
                        and f":{new_port}" in window.status.node_label.text(), timeout=30000)
        qtbot.waitUntil(lambda: window.model.rowCount() == 1, timeout=10000)   # re-attached to the new store
    finally:
        window.shutdown()
        controller.stop_and_wait()
    assert controller.service is None


def test_run_desktop_shows_the_window_before_the_service_and_stops_it_on_close(qtbot, tmp_path: Path,
                                                                                packs_dir: Path):
    from PySide6.QtCore import QTimer
    from PySide6.QtWidgets import QApplication

    from ui.main import run_desktop

    port = free_port()
    config = replace(Config(), data_dir=tmp_path / "data", cache_dir=tmp_path / "cache", packs_dir=packs_dir,
                     port=port)
    seen: dict[str, object] = {}
    services: list[Service] = []

    def factory(cfg: Config) -> Service:
        # (windows of earlier tests may linger, closed: any visible one is run_desktop's)
        seen["window_visible_before_service"] = any(
            isinstance(w, MainWindow) and w.isVisible() for w in QApplication.topLevelWidgets())
        services.append(Service(cfg))
        return services[-1]

    def check_then_close() -> None:
        windows = [w for w in QApplication.topLevelWidgets() if isinstance(w, MainWindow) and w.isVisible()]
        if windows and f":{port}" in windows[0].status.node_label.text():
            seen["listening"] = windows[0].status.node_label.text()
            windows[0].close()
        elif time.monotonic() - started < 30:
            QTimer.singleShot(50, check_then_close)
        else:
            for w in windows:
                w.close()

    started = time.monotonic()
    QTimer.singleShot(50, check_then_close)
    assert run_desktop(config, factory, config_path=tmp_path / "firstlook.toml") == 0
    assert seen.get("window_visible_before_service") is True
    assert "FIRSTLOOK" in str(seen.get("listening"))
    # Stopped on close: the port is free again.
    import socket

    with socket.socket() as s:
        s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        s.bind(("127.0.0.1", port))
