"""Settings: the service to attach to, node identity and access, device per model, thresholds.

Every field is checked with app.core.config's own rules while typing, the reason is shown next
to the field, and Save writes the same TOML file the headless mode reads.
"""

from __future__ import annotations

import json
import logging
import re
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any

from PySide6.QtCore import QAbstractTableModel, QModelIndex, QPersistentModelIndex, Qt, Signal
from PySide6.QtGui import QBrush, QColor
from PySide6.QtWidgets import (
    QComboBox,
    QDialog,
    QDialogButtonBox,
    QFormLayout,
    QGroupBox,
    QHBoxLayout,
    QHeaderView,
    QLabel,
    QLineEdit,
    QPushButton,
    QTableView,
    QVBoxLayout,
    QWidget,
)

from app.core.config import Config, ConfigError, save_config, validate_ae_title, validate_server_url
from app.core.models import ModelSpecs, default_specs
from ui.destinations_table import DestinationsModel

log = logging.getLogger(__name__)

Index = QModelIndex | QPersistentModelIndex

NODE_FIELDS = ("ae_title", "port", "allow_ae", "destinations")
SERVER_FIELDS = ("server_url", "api_token", "server_ca")   # a change re-attaches the desktop
MODEL_FIELDS = ("devices", "thresholds")


def pack_thresholds(packs_dir: Path, specs: ModelSpecs | None = None) -> dict[str, dict[str, float]]:
    """Default threshold per label from each pack's manifest; when a pack is not built (or its
    manifest is unreadable) the spec's defaults, which are what the builder will write."""
    out: dict[str, dict[str, float]] = {}
    for spec in specs if specs is not None else default_specs():
        model = spec.name
        table = dict(spec.default_thresholds)
        manifest = Path(packs_dir) / model / "manifest.json"
        try:
            data = json.loads(manifest.read_text())
            labels = [str(x) for x in data.get("labels", [])]
            given = {str(k): float(v) for k, v in (data.get("thresholds") or {}).items()}
            if labels:
                table = {label: given.get(label, table.get(label, 0.5)) for label in labels}
        except (OSError, ValueError, TypeError, AttributeError):
            log.debug("no readable manifest at %s; using the spec's defaults", manifest)
        out[model] = table
    return out


def parse_ae_list(text: str) -> list[str]:
    return [part for part in re.split(r"[,\s]+", text.strip()) if part]


@dataclass
class ThresholdRow:
    model: str
    label: str
    default: float
    text: str           # what is in the cell
    error: str = ""
    units: str = ""                 # "probability", "mL"
    maximum: float | None = None    # e.g. 1 for a probability
    model_names: tuple[str, ...] | None = None  # the models the configuration may name

    def value(self) -> float | None:
        try:
            return float(self.text)
        except ValueError:
            return None


class ThresholdModel(QAbstractTableModel):
    HEADERS = ("Model", "Label", "Threshold", "Default")

    def __init__(self, rows: list[ThresholdRow], parent: Any = None) -> None:
        super().__init__(parent)
        self.rows = rows
        for row in self.rows:
            row.error = self._check(row)

    def rowCount(self, parent: Index = QModelIndex()) -> int:
        return 0 if parent.isValid() else len(self.rows)

    def columnCount(self, parent: Index = QModelIndex()) -> int:
        return 0 if parent.isValid() else len(self.HEADERS)

    def headerData(self, section: int, orientation: Qt.Orientation, role: int = Qt.ItemDataRole.DisplayRole) -> Any:
        if orientation == Qt.Orientation.Horizontal and role == Qt.ItemDataRole.DisplayRole:
            return self.HEADERS[section]
        return None

    def flags(self, index: Index) -> Qt.ItemFlag:
        base = super().flags(index)
        return base | Qt.ItemFlag.ItemIsEditable if index.column() == 2 else base

    def data(self, index: Index, role: int = Qt.ItemDataRole.DisplayRole) -> Any:
        if not index.isValid():
            return None
        row = self.rows[index.row()]
        col = index.column()
        if role in (Qt.ItemDataRole.DisplayRole, Qt.ItemDataRole.EditRole):
            return (row.model, row.label, row.text, f"{row.default:g} {row.units}")[col]
        if role == Qt.ItemDataRole.BackgroundRole and col == 2 and row.error:
            return QBrush(QColor("#ffcdd2"))
        if role == Qt.ItemDataRole.ToolTipRole and row.error:
            return row.error
        return None

    def setData(self, index: Index, value: Any, role: int = Qt.ItemDataRole.EditRole) -> bool:
        if not index.isValid() or index.column() != 2 or role != Qt.ItemDataRole.EditRole:
            return False
        row = self.rows[index.row()]
        row.text = str(value).strip()
        row.error = self._check(row)
        self.dataChanged.emit(index, index)
        return True

    @staticmethod
    def _check(row: ThresholdRow) -> str:
        value = row.value()
        if value is None:
            return f"threshold {row.model}.{row.label} must be a number, not {row.text!r}."
        try:
            replace(Config(), thresholds={row.model: {row.label: value}}).validate(row.model_names)
        except ConfigError as exc:
            return str(exc)
        if row.maximum is not None and value > row.maximum:
            return (f"threshold {row.model}.{row.label} is a {row.units} and must be at most {row.maximum:g}, "
                    f"not {value:g}.")
        return ""

    def errors(self) -> list[str]:
        return [r.error for r in self.rows if r.error]

    def overrides(self) -> dict[str, dict[str, float]]:
        """Only values that differ from the pack's default are written to the config."""
        out: dict[str, dict[str, float]] = {}
        for r in self.rows:
            value = r.value()
            if value is not None and abs(value - r.default) > 1e-12:
                out.setdefault(r.model, {})[r.label] = value
        return out


class SettingsDialog(QDialog):
    """Emits ``saved(config, restart_node, reload_models)`` after the file is written."""

    saved = Signal(object, bool, bool)

    def __init__(self, config: Config, config_path: Path | None, device_choices: list[str] | None = None,
                 parent: QWidget | None = None, specs: ModelSpecs | None = None, attached_to: str = "") -> None:
        """``attached_to``: the URL of the service this desktop is attached to (empty: embedded).
        Attached, the node, models and destinations are the service's (set on the server), so
        their fields are shown read-only and only the server fields can change here."""
        super().__init__(parent)
        self.specs = specs if specs is not None else default_specs()
        self.setWindowTitle("FirstLook settings")
        self.setMinimumWidth(620)
        # A model without a device entry runs on CPU: say so, so that showing it is not a change.
        self.config = replace(config, devices={**{m: "CPU" for m in self.specs.names}, **config.devices})
        self.config_path = config_path
        self.errors: dict[str, str] = {}
        self.error_labels: dict[str, QLabel] = {}

        server = QGroupBox("FirstLook server")
        server_form = QFormLayout(server)
        self.server_edit = QLineEdit(config.server_url)
        self.server_edit.setPlaceholderText("empty = the service on this computer, else the built-in one")
        self.token_edit = QLineEdit(config.api_token)
        self.token_edit.setEchoMode(QLineEdit.EchoMode.Password)
        self.token_edit.setPlaceholderText("from IT (firstlook users add NAME); empty = the local token file")
        server_form.addRow("Server URL", self._with_error("server_url", self.server_edit))
        self.ca_edit = QLineEdit(str(config.server_ca) if config.server_ca is not None else "")
        self.ca_edit.setPlaceholderText("PEM file, only when the server's certificate comes from a private CA")
        server_form.addRow("Token", self._with_error("api_token", self.token_edit))
        server_form.addRow("CA certificate", self._with_error("server_ca", self.ca_edit))

        node = QGroupBox("DICOM node")
        node_form = QFormLayout(node)
        self.ae_edit = QLineEdit(config.ae_title)
        self.ae_edit.setMaxLength(64)
        self.port_edit = QLineEdit(str(config.port))
        self.allow_edit = QLineEdit(", ".join(config.allow_ae))
        self.allow_edit.setPlaceholderText("empty = accept any calling AE")
        node_form.addRow("AE title", self._with_error("ae_title", self.ae_edit))
        node_form.addRow("Port", self._with_error("port", self.port_edit))
        node_form.addRow("Allowed calling AEs", self._with_error("allow_ae", self.allow_edit))

        models = QGroupBox("Models")
        model_form = QFormLayout(models)
        self.device_combos: dict[str, QComboBox] = {}
        choices = list(device_choices or ["AUTO", "CPU"])
        for model in self.specs.names:
            combo = QComboBox()
            current = config.devices.get(model, "CPU")
            items = choices if current in choices else [*choices, current]
            combo.addItems(items)
            combo.setCurrentText(current)
            combo.currentTextChanged.connect(self.validate)
            self.device_combos[model] = combo
            model_form.addRow(f"Device for {model}", self._with_error(f"device:{model}", combo))
        defaults = pack_thresholds(config.packs_dir, self.specs)
        rows = []
        for spec in self.specs:
            overrides = config.thresholds.get(spec.name, {})
            for label, default in defaults[spec.name].items():
                rows.append(ThresholdRow(spec.name, label, default, f"{overrides.get(label, default):g}",
                                         units=spec.units, maximum=spec.threshold_max, model_names=self.specs.names))
        self.threshold_model = ThresholdModel(rows, self)
        self.threshold_model.dataChanged.connect(lambda *_: self.validate())
        self.threshold_view = QTableView()
        self.threshold_view.setModel(self.threshold_model)
        self.threshold_view.horizontalHeader().setSectionResizeMode(QHeaderView.ResizeMode.Stretch)
        self.threshold_view.verticalHeader().setVisible(False)
        self.threshold_view.setMinimumHeight(220)
        model_form.addRow("Thresholds", self.threshold_view)
        model_form.addRow("", self._error_label("thresholds"))

        sending = QGroupBox("Destinations (results sent to PACS)")
        sending_layout = QVBoxLayout(sending)
        self.destinations_model = DestinationsModel(list(config.destinations), self)
        self.destinations_model.dataChanged.connect(lambda *_: self.validate())
        self.destinations_model.rowsInserted.connect(lambda *_: self.validate())
        self.destinations_model.rowsRemoved.connect(lambda *_: self.validate())
        self.destinations_view = QTableView()
        self.destinations_view.setModel(self.destinations_model)
        self.destinations_view.horizontalHeader().setSectionResizeMode(QHeaderView.ResizeMode.Stretch)
        self.destinations_view.verticalHeader().setVisible(False)
        self.destinations_view.setMinimumHeight(110)
        add, remove = QPushButton("Add destination"), QPushButton("Remove selected")
        add.clicked.connect(lambda: self.destinations_view.edit(
            self.destinations_model.index(self.destinations_model.add_row(), 1)))
        remove.clicked.connect(lambda: self.destinations_model.remove_row(self.destinations_view.currentIndex().row()))
        buttons_row = QHBoxLayout()
        buttons_row.addWidget(add)
        buttons_row.addWidget(remove)
        buttons_row.addStretch(1)
        sending_layout.addWidget(self.destinations_view)
        sending_layout.addLayout(buttons_row)
        sending_layout.addWidget(self._error_label("destinations"))

        self.restart_note = QLabel()
        self.restart_note.setWordWrap(True)
        self.restart_note.setStyleSheet("color:#8a5a00;")
        self.buttons = QDialogButtonBox(QDialogButtonBox.StandardButton.Save | QDialogButtonBox.StandardButton.Cancel)
        self.buttons.accepted.connect(self.save)
        self.buttons.rejected.connect(self.reject)
        self.save_error = QLabel()
        self.save_error.setStyleSheet("color:#b00020;")
        self.attached_note = QLabel()
        self.attached_note.setWordWrap(True)
        self.attached_note.setStyleSheet("color:#00507a;")
        if attached_to:
            self.attached_note.setText(
                f"This desktop is attached to the FirstLook service at {attached_to}. Its DICOM node, models and "
                "destinations are set on that server (IT: firstlook.toml there), so they are shown here read-only.")
            for group in (node, models, sending):
                group.setEnabled(False)
        self.attached_note.setVisible(bool(attached_to))
        layout = QVBoxLayout(self)
        layout.addWidget(server)
        layout.addWidget(self.attached_note)
        layout.addWidget(node)
        layout.addWidget(models)
        layout.addWidget(sending)
        layout.addWidget(self.restart_note)
        layout.addWidget(self.save_error)
        layout.addWidget(self.buttons)
        for edit in (self.ae_edit, self.port_edit, self.allow_edit, self.server_edit, self.token_edit,
                     self.ca_edit):
            edit.textChanged.connect(self.validate)
        self.validate()

    def _error_label(self, key: str) -> QLabel:
        label = QLabel()
        label.setStyleSheet("color:#b00020;")
        label.setWordWrap(True)
        label.setVisible(False)
        self.error_labels[key] = label
        return label

    def _with_error(self, key: str, field_widget: QWidget) -> QWidget:
        box = QWidget()
        row = QHBoxLayout(box)
        row.setContentsMargins(0, 0, 0, 0)
        row.addWidget(field_widget, 1)
        row.addWidget(self._error_label(key), 2)
        return box

    # -- validation -------------------------------------------------------------------------
    def _candidate(self) -> tuple[Config, dict[str, str]]:
        errors: dict[str, str] = {}
        values: dict[str, Any] = {}
        try:
            values["ae_title"] = validate_ae_title(self.ae_edit.text().strip(), "AE title")
        except ConfigError as exc:
            errors["ae_title"] = str(exc)
        text = self.port_edit.text().strip()
        try:
            port = int(text)
            replace(self.config, port=port).validate(self.specs.names)
            values["port"] = port
        except ValueError:
            errors["port"] = f"port must be a whole number from 1 to 65535, not {text!r}."
        except ConfigError as exc:
            errors["port"] = str(exc)
        allow = parse_ae_list(self.allow_edit.text())
        try:
            for aet in allow:
                validate_ae_title(aet, "allowed calling AE")
            values["allow_ae"] = allow
        except ConfigError as exc:
            errors["allow_ae"] = str(exc)
        url = self.server_edit.text().strip()
        try:
            values["server_url"] = validate_server_url(url) if url else ""
        except ConfigError as exc:
            errors["server_url"] = str(exc)
        token = self.token_edit.text().strip()
        try:
            replace(self.config, api_token=token, server_url=values.get("server_url", "")).validate(self.specs.names)
            values["api_token"] = token
        except ConfigError as exc:
            if "server_url" not in errors:
                errors["api_token"] = str(exc)
        ca_text = self.ca_edit.text().strip()
        ca = Path(ca_text).expanduser() if ca_text else None
        if ca is not None and not ca.is_file():
            errors["server_ca"] = f"server_ca {ca_text!r} is not a readable file."
        else:
            try:
                replace(self.config, server_url=values.get("server_url", url), server_ca=ca).validate(self.specs.names)
                values["server_ca"] = ca
            except ConfigError as exc:
                if "server_url" not in errors:
                    errors["server_ca"] = str(exc)
        devices = dict(self.config.devices)
        for model, combo in self.device_combos.items():
            devices[model] = combo.currentText()
            try:
                replace(self.config, devices={model: combo.currentText()}).validate(self.specs.names)
            except ConfigError as exc:
                errors[f"device:{model}"] = str(exc)
        values["devices"] = devices
        threshold_errors = self.threshold_model.errors()
        if threshold_errors:
            errors["thresholds"] = threshold_errors[0]
        values["thresholds"] = self.threshold_model.overrides()
        destinations, problem = self.destinations_model.destinations()
        if problem:
            errors["destinations"] = problem
        else:
            values["destinations"] = destinations
        candidate = replace(self.config, **values)
        return candidate, errors

    def validate(self) -> bool:
        candidate, errors = self._candidate()
        self.errors = errors
        for key, label in self.error_labels.items():
            label.setText(errors.get(key, ""))
            label.setVisible(key in errors)
        save = self.buttons.button(QDialogButtonBox.StandardButton.Save)
        save.setEnabled(not errors)
        restart_node, reload_models = self._changes(candidate) if not errors else (False, False)
        notes = []
        if any(getattr(candidate, f) != getattr(self.config, f) for f in SERVER_FIELDS) and not errors:
            notes.append("Saving re-attaches this desktop (to the server, or to this computer's service).")
        if restart_node and any(getattr(candidate, f) != getattr(self.config, f) for f in NODE_FIELDS):
            notes.append("Saving restarts the DICOM node (AE title, port, allowed AEs or destinations changed); "
                         "transfers in progress are interrupted and modalities must use the new settings.")
        if reload_models:
            notes.append("Saving reloads the models (device or thresholds changed); analysis pauses meanwhile.")
        self.restart_note.setText("\n".join(notes))
        self.restart_note.setVisible(bool(notes))
        return not errors

    def _changes(self, candidate: Config) -> tuple[bool, bool]:
        restart_node = any(getattr(candidate, f) != getattr(self.config, f) for f in NODE_FIELDS + SERVER_FIELDS)
        reload_models = any(getattr(candidate, f) != getattr(self.config, f) for f in MODEL_FIELDS)
        return restart_node, reload_models

    def save(self) -> None:
        if not self.validate():
            return
        candidate, _ = self._candidate()
        restart_node, reload_models = self._changes(candidate)
        try:
            path = save_config(candidate, self.config_path, self.specs.names)
        except (ConfigError, OSError) as exc:
            self.save_error.setText(f"Not saved: {exc}")
            return
        log.info("settings saved to %s (restart node: %s, reload models: %s)", path, restart_node, reload_models)
        self.saved.emit(candidate, restart_node, reload_models)
        self.accept()
