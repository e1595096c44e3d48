"""Settings: app.core.config validation with the reason next to the field, persistence to the
TOML the headless mode reads, device choices from OpenVINO, restart notice."""

from __future__ import annotations

import os

os.environ.setdefault("QT_QPA_PLATFORM", "offscreen")

from pathlib import Path

import pytest
from PySide6.QtCore import Qt
from PySide6.QtWidgets import QDialogButtonBox

from app.core.config import Config, load_config, save_config
from ui.main_window import openvino_device_choices
from ui.settings_dialog import SettingsDialog


@pytest.fixture
def config_file(tmp_path: Path) -> tuple[Config, Path]:
    path = tmp_path / "firstlook.toml"
    config = Config(data_dir=tmp_path / "data", cache_dir=tmp_path / "cache", packs_dir=tmp_path / "packs",
                    ae_title="FIRSTLOOK", port=11112)
    save_config(config, path)
    return load_config(path), path


def save_button(dialog: SettingsDialog):
    return dialog.buttons.button(QDialogButtonBox.StandardButton.Save)


def test_invalid_fields_show_the_reason_and_block_saving(qtbot, config_file):
    config, path = config_file
    dialog = SettingsDialog(config, path, ["AUTO", "CPU"])
    qtbot.addWidget(dialog)
    dialog.show()
    assert save_button(dialog).isEnabled() and not dialog.restart_note.isVisible()

    dialog.ae_edit.setText("A_VERY_LONG_AE_TITLE")
    assert "longer than 16 characters" in dialog.error_labels["ae_title"].text()
    assert dialog.error_labels["ae_title"].isVisible()
    assert not save_button(dialog).isEnabled()
    dialog.ae_edit.setText("BAD\\AE")
    assert "backslash" in dialog.error_labels["ae_title"].text()
    dialog.ae_edit.setText("READING1")
    assert not dialog.error_labels["ae_title"].isVisible()

    dialog.port_edit.setText("70000")
    assert "1 to 65535" in dialog.error_labels["port"].text()
    dialog.port_edit.setText("eleven")
    assert "whole number" in dialog.error_labels["port"].text()
    dialog.port_edit.setText("11114")
    dialog.allow_edit.setText("CT01, THIS_ONE_IS_FAR_TOO_LONG")
    assert "longer than 16" in dialog.error_labels["allow_ae"].text()
    assert not save_button(dialog).isEnabled()
    dialog.allow_edit.setText("CT01, CR01")
    assert not dialog.errors and save_button(dialog).isEnabled()
    assert dialog.restart_note.isVisible() and "restarts the DICOM node" in dialog.restart_note.text()

    # A refused save writes nothing.
    dialog.port_edit.setText("0")
    dialog.save()
    assert load_config(path).port == 11112


def test_thresholds_are_validated_and_persisted(qtbot, config_file):
    config, path = config_file
    dialog = SettingsDialog(config, path, ["AUTO", "CPU"])
    qtbot.addWidget(dialog)
    model = dialog.threshold_model
    row = next(i for i, r in enumerate(model.rows) if r.model == "chexnet" and r.label == "Pneumothorax")
    index = model.index(row, 2)
    model.setData(index, "1.5")
    assert "at most 1" in dialog.error_labels["thresholds"].text()
    assert index.data(Qt.ItemDataRole.BackgroundRole) is not None
    assert not save_button(dialog).isEnabled()
    model.setData(index, "-2")
    assert ">= 0" in dialog.error_labels["thresholds"].text()
    model.setData(index, "0.3")
    ivh = next(i for i, r in enumerate(model.rows) if r.model == "blast-ct" and r.label == "IVH")
    model.setData(model.index(ivh, 2), "2.5")
    assert save_button(dialog).isEnabled()
    assert "reloads the models" in dialog.restart_note.text()
    with qtbot.waitSignal(dialog.saved) as signal:
        dialog.save()
    saved, restart_node, reload_models = signal.args
    assert (restart_node, reload_models) == (False, True)
    reloaded = load_config(path)
    assert reloaded.thresholds == {"chexnet": {"Pneumothorax": 0.3}, "blast-ct": {"IVH": 2.5}}
    assert saved.thresholds == reloaded.thresholds


def test_node_settings_and_devices_persist_to_the_headless_toml(qtbot, config_file):
    config, path = config_file
    choices = openvino_device_choices()          # real OpenVINO discovery
    assert choices[0] == "AUTO" and "CPU" in choices
    dialog = SettingsDialog(config, path, choices)
    qtbot.addWidget(dialog)
    combo = dialog.device_combos["blast-ct"]
    assert [combo.itemText(i) for i in range(combo.count())] == choices
    combo.setCurrentText("AUTO")
    dialog.ae_edit.setText("READING1")
    dialog.port_edit.setText("11114")
    dialog.allow_edit.setText("CT01 CR01")
    with qtbot.waitSignal(dialog.saved) as signal:
        qtbot.mouseClick(save_button(dialog), Qt.MouseButton.LeftButton)
    assert signal.args[1:] == [True, True]
    reloaded = load_config(path)                  # what `firstlook --headless --config` would read
    assert (reloaded.ae_title, reloaded.port, reloaded.allow_ae) == ("READING1", 11114, ["CT01", "CR01"])
    assert reloaded.devices == {"chexnet": "CPU", "blast-ct": "AUTO"}
    assert reloaded.data_dir == config.data_dir    # untouched keys survive
    assert not dialog.isVisible()


def test_settings_dialog_from_the_window_updates_its_config(qtbot, config_file):
    from ui.main_window import MainWindow

    config, path = config_file
    window = MainWindow(config, path, device_choices=None)
    qtbot.addWidget(window)
    dialog = window.open_settings()
    dialog.ae_edit.setText("DESK2")
    with qtbot.waitSignal(window.settings_saved) as signal:
        dialog.save()
    assert signal.args[1] is True
    assert window.config.ae_title == "DESK2" and load_config(path).ae_title == "DESK2"
    window.shutdown()


def test_server_url_and_token_are_checked_and_saved_for_the_next_attach(qtbot, config_file):
    config, path = config_file
    dialog = SettingsDialog(config, path, ["AUTO", "CPU"])
    qtbot.addWidget(dialog)
    dialog.show()
    dialog.server_edit.setText("http://firstlook.hospital:11113")
    assert "must start with https://" in dialog.error_labels["server_url"].text()
    assert not save_button(dialog).isEnabled()
    dialog.server_edit.setText("ftp://firstlook")
    assert "is not a URL" in dialog.error_labels["server_url"].text()
    dialog.server_edit.setText("https://firstlook.hospital:11113")
    dialog.token_edit.setText("two words")
    assert "without spaces" in dialog.error_labels["api_token"].text()
    dialog.token_edit.setText("s3cret-token")
    dialog.ca_edit.setText(str(path.parent / "missing-ca.pem"))
    assert "not a readable file" in dialog.error_labels["server_ca"].text()
    ca = path.parent / "hospital-ca.pem"
    ca.write_text("-----BEGIN CERTIFICATE-----\n")
    dialog.ca_edit.setText(str(ca))
    assert not dialog.errors and "re-attaches" in dialog.restart_note.text()
    assert "restarts the DICOM node" not in dialog.restart_note.text()
    with qtbot.waitSignal(dialog.saved) as signal:
        qtbot.mouseClick(save_button(dialog), Qt.MouseButton.LeftButton)
    assert signal.args[1] is True                 # the desktop re-attaches
    reloaded = load_config(path)
    assert (reloaded.server_url, reloaded.api_token) == ("https://firstlook.hospital:11113", "s3cret-token")
    assert reloaded.server_ca == ca


def test_an_attached_desktop_edits_only_its_server_fields(qtbot, config_file):
    """Attached, the node, models and destinations are the service's: shown read-only with the
    reason; the server fields still change and save."""
    config, path = config_file
    dialog = SettingsDialog(config, path, ["AUTO", "CPU"], attached_to="https://firstlook.hospital:11113")
    qtbot.addWidget(dialog)
    dialog.show()
    assert dialog.attached_note.isVisible() and "https://firstlook.hospital:11113" in dialog.attached_note.text()
    for widget in (dialog.ae_edit, dialog.port_edit, dialog.allow_edit, *dialog.device_combos.values(),
                   dialog.threshold_view, dialog.destinations_view):
        assert not widget.isEnabled()
    assert dialog.server_edit.isEnabled() and dialog.token_edit.isEnabled()
    dialog.server_edit.setText("https://other.hospital:11113")
    dialog.token_edit.setText("reader-token")
    dialog.save()
    saved = load_config(path)
    assert (saved.server_url, saved.api_token, saved.ae_title, saved.port) == (
        "https://other.hospital:11113", "reader-token", "FIRSTLOOK", 11112)

    embedded = SettingsDialog(config, path, ["AUTO", "CPU"])
    qtbot.addWidget(embedded)
    embedded.show()
    assert not embedded.attached_note.isVisible() and embedded.ae_edit.isEnabled()
