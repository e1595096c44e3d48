"""The desktop's side of sending to PACS: destinations edited and checked in the settings, the
PACS column with its reason on hover (fed from a real store's outbox), and "Send to PACS"
calling the service's ``send_study`` off the GUI thread."""

from __future__ import annotations

import os

os.environ.setdefault("QT_QPA_PLATFORM", "offscreen")

import threading
from pathlib import Path

import numpy as np
from pydicom.uid import generate_uid
from PySide6.QtCore import Qt
from PySide6.QtWidgets import QDialogButtonBox

from app.core.config import Config, load_config, save_config
from app.core.destinations import Destination
from app.core.events import EventHub, SendStateChanged
from app.core.outbox.result_outbox import ResultOutbox
from app.core.store import StudyStore
from tests.support.dicom_factory import make_ct_slice, write
from tests.support.outbox_helpers import StandInBuilder, done_result
from ui.main_window import MainWindow
from ui.settings_dialog import SettingsDialog
from ui.worklist_model import COL_SEND, UID_ROLE


def test_destinations_are_edited_checked_and_saved(qtbot, tmp_path: Path) -> None:
    path = tmp_path / "firstlook.toml"
    save_config(Config(data_dir=tmp_path / "data", destinations=[Destination("pacs", "ORTHANC", "10.0.0.5", 4242)]),
                path)
    config = load_config(path)
    dialog = SettingsDialog(config, path, ["CPU"])
    qtbot.addWidget(dialog)
    dialog.show()
    save = dialog.buttons.button(QDialogButtonBox.StandardButton.Save)
    model = dialog.destinations_model
    assert model.rowCount() == 1 and model.index(0, 1).data() == "ORTHANC" and save.isEnabled()
    row = model.add_row()
    model.setData(model.index(row, 0), "pacs")       # duplicate name
    model.setData(model.index(row, 1), "ARCHIVE")
    model.setData(model.index(row, 2), "10.0.0.6")
    assert "listed twice" in dialog.error_labels["destinations"].text() and not save.isEnabled()
    model.setData(model.index(row, 0), "archive")
    model.setData(model.index(row, 5), "sr, pdf")
    assert "objects" in dialog.error_labels["destinations"].text() and not save.isEnabled()
    assert model.index(row, 0).data(Qt.ItemDataRole.ToolTipRole)  # the row says why
    model.setData(model.index(row, 5), "sr")
    model.setData(model.index(row, 6), "urgent")
    model.setData(model.index(row, 4), "yes")
    assert not dialog.errors and save.isEnabled()
    assert "destinations changed" in dialog.restart_note.text()
    saved = []
    dialog.saved.connect(lambda *args: saved.append(args))
    save.click()
    assert saved and saved[0][1] is True  # the service restarts with the new destinations
    assert load_config(path).destinations == [Destination("pacs", "ORTHANC", "10.0.0.5", 4242),
                                              Destination("archive", "ARCHIVE", "10.0.0.6", 104, True, ("sr",),
                                                          "urgent")]


def test_pacs_column_and_send_to_pacs(qtbot, tmp_path: Path) -> None:
    store = StudyStore(tmp_path / "data")
    study, series = generate_uid(), generate_uid()
    source = write(make_ct_slice(np.zeros((16, 16), np.int16), (0, 0, 0), study_uid=study, series_uid=series),
                   tmp_path / "in")
    store.store_instance(source.read_bytes(), calling_ae="CT01")
    outbox = ResultOutbox(store, None, lambda: [Destination("pacs", "PACS", "127.0.0.1", 9)],  # type: ignore[arg-type]
                          StandInBuilder())
    result = done_result(series, study)
    staged = outbox.stage(result)
    store.save_result(result, also=staged.record if staged else None)
    asked: list[tuple[str, str]] = []

    def send_study(uid: str) -> int:
        asked.append((uid, threading.current_thread().name))
        return 2

    window = MainWindow(Config(data_dir=store.data_dir), tmp_path / "firstlook.toml", device_choices=None)
    qtbot.addWidget(window)
    hub = EventHub()
    window.attach_backend(store, hub, send_study=send_study)
    window.show()
    qtbot.waitUntil(lambda: window.proxy.rowCount() == 1)
    cell = window.proxy.index(0, COL_SEND)
    assert cell.data() == "queued" and "waiting for pacs" in cell.data(Qt.ItemDataRole.ToolTipRole)
    for claimed in store.outbox.claim("pacs"):
        store.outbox.mark_failed(claimed.id, 0xA700, "failure status 0xA700", 0.0)
    hub.publish(SendStateChanged(study))
    qtbot.waitUntil(lambda: window.proxy.index(0, COL_SEND).data() == "failing")
    assert "0xA700" in window.proxy.index(0, COL_SEND).data(Qt.ItemDataRole.ToolTipRole)
    window.table.setCurrentIndex(window.proxy.index(0, 0))
    assert window.send_action in window.table.actions()  # the context menu offers it
    window.send_action.trigger()
    qtbot.waitUntil(lambda: bool(asked))
    assert asked[0][0] == study and asked[0][1] != threading.main_thread().name
    qtbot.waitUntil(lambda: "Queued 2 object(s)" in window.status.currentMessage()
                    or "Queued 2 object(s)" in _status_text(window))
    assert window.proxy.index(0, 0).data(UID_ROLE) == study
    window.shutdown()
    store.close()


def _status_text(window: MainWindow) -> str:
    from PySide6.QtWidgets import QLabel

    return " ".join(label.text() for label in window.status.findChildren(QLabel))
