"""The settings dialog lists what the model specs say: a row per model and label, the spec's
units and limits, and, before a pack is built, the thresholds its builder will write."""

from __future__ import annotations

import os

os.environ.setdefault("QT_QPA_PLATFORM", "offscreen")

from pathlib import Path

from app.core.config import Config, load_config
from tests.support.toy_model import TOY, specs_with_toy
from ui.settings_dialog import SettingsDialog, pack_thresholds


def test_without_packs_the_defaults_are_the_builders(tmp_path: Path) -> None:
    defaults = pack_thresholds(tmp_path / "no-packs")
    assert defaults["blast-ct"] == {"IPH": 0.1, "EAH": 0.1, "oedema": 5.0, "IVH": 0.1}  # not 1 mL
    assert set(defaults["chexnet"].values()) == {0.5} and len(defaults["chexnet"]) == 14


def test_a_registered_model_gets_its_device_and_threshold_rows(qtbot, tmp_path: Path) -> None:
    specs = specs_with_toy()
    path = tmp_path / "firstlook.toml"
    config = Config(data_dir=tmp_path / "data", packs_dir=tmp_path / "no-packs")
    dialog = SettingsDialog(config, path, ["AUTO", "CPU"], specs=specs)
    qtbot.addWidget(dialog)
    assert list(dialog.device_combos) == ["chexnet", "blast-ct", TOY]
    model = dialog.threshold_model
    row = next(i for i, r in enumerate(model.rows) if r.model == TOY)
    assert model.index(row, 3).data() == "0.5 probability"
    model.setData(model.index(row, 2), "1.2")
    assert dialog.errors["thresholds"] == f"threshold {TOY}.bright is a probability and must be at most 1, not 1.2."
    model.setData(model.index(row, 2), "0.8")
    dialog.device_combos[TOY].setCurrentText("AUTO")
    assert not dialog.errors
    with qtbot.waitSignal(dialog.saved):
        dialog.save()
    reloaded = load_config(path, model_names=specs.names)
    assert reloaded.thresholds == {TOY: {"bright": 0.8}} and reloaded.devices[TOY] == "AUTO"
