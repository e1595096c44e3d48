"""The settings dialog's destinations table: one row per PACS results are sent to, edited in
place and checked with the configuration's own rules (``app.core.destinations``)."""

from __future__ import annotations

from typing import Any

from PySide6.QtCore import QAbstractTableModel, QModelIndex, QPersistentModelIndex, Qt
from PySide6.QtGui import QBrush, QColor

from app.core.destinations import Destination, DestinationError, parse_destination, parse_destinations

Index = QModelIndex | QPersistentModelIndex

HEADERS = ("Name", "AE title", "Host", "Port", "TLS", "Objects", "When")
TIPS = ("A name for the log and the outbox", "The destination's AE title (called AE)", "IP address or host name",
        "TCP port", "yes / no", "any of sr, seg, sc (comma separated)", "all, or urgent (urgent + critical only)")


def _cells(d: Destination) -> list[str]:
    return [d.name, d.ae_title, d.host, str(d.port), "yes" if d.tls else "no", ", ".join(d.objects), d.when]


def _raw(cells: list[str]) -> dict[str, Any]:
    port_text = cells[3].strip()
    port: Any = int(port_text) if port_text.isdigit() else port_text
    tls_text = cells[4].strip().lower()
    tls: Any = True if tls_text in ("yes", "true", "1", "on") else False if tls_text in ("no", "false", "0", "off", "") \
        else tls_text
    objects = [o.strip().lower() for o in cells[5].replace(";", ",").split(",") if o.strip()]
    return {"name": cells[0].strip(), "ae_title": cells[1].strip(), "host": cells[2].strip(), "port": port,
            "tls": tls, "objects": objects, "when": cells[6].strip().lower() or "all"}


class DestinationsModel(QAbstractTableModel):
    def __init__(self, destinations: list[Destination], parent: Any = None) -> None:
        super().__init__(parent)
        self._rows = [_cells(d) for d in destinations]

    def rowCount(self, parent: Index = QModelIndex()) -> int:
        return 0 if parent.isValid() else len(self._rows)

    def columnCount(self, parent: Index = QModelIndex()) -> int:
        return 0 if parent.isValid() else len(HEADERS)

    def headerData(self, section: int, orientation: Qt.Orientation, role: int = Qt.ItemDataRole.DisplayRole) -> Any:
        if orientation == Qt.Orientation.Horizontal:
            if role == Qt.ItemDataRole.DisplayRole:
                return HEADERS[section]
            if role == Qt.ItemDataRole.ToolTipRole:
                return TIPS[section]
        return None

    def flags(self, index: Index) -> Qt.ItemFlag:
        return Qt.ItemFlag.ItemIsEnabled | Qt.ItemFlag.ItemIsSelectable | Qt.ItemFlag.ItemIsEditable

    def data(self, index: Index, role: int = Qt.ItemDataRole.DisplayRole) -> Any:
        if not index.isValid():
            return None
        if role in (Qt.ItemDataRole.DisplayRole, Qt.ItemDataRole.EditRole):
            return self._rows[index.row()][index.column()]
        if role == Qt.ItemDataRole.BackgroundRole and self.row_error(index.row()):
            return QBrush(QColor("#fde7e9"))
        if role == Qt.ItemDataRole.ToolTipRole:
            return self.row_error(index.row()) or None
        return None

    def setData(self, index: Index, value: Any, role: int = Qt.ItemDataRole.EditRole) -> bool:
        if not index.isValid() or role != Qt.ItemDataRole.EditRole:
            return False
        self._rows[index.row()][index.column()] = str(value)
        self.dataChanged.emit(self.index(index.row(), 0), self.index(index.row(), len(HEADERS) - 1))
        return True

    def add_row(self) -> int:
        at = len(self._rows)
        self.beginInsertRows(QModelIndex(), at, at)
        self._rows.append([f"pacs{at + 1}" if at else "pacs", "", "", "104", "no", "sr, seg, sc", "all"])
        self.endInsertRows()
        return at

    def remove_row(self, row: int) -> None:
        if 0 <= row < len(self._rows):
            self.beginRemoveRows(QModelIndex(), row, row)
            del self._rows[row]
            self.endRemoveRows()

    def row_error(self, row: int) -> str:
        try:
            parse_destination(_raw(self._rows[row]), row + 1)
        except DestinationError as exc:
            return str(exc)
        return ""

    def destinations(self) -> tuple[list[Destination], str]:
        """The rows as destinations, or the first error (one sentence naming the entry)."""
        try:
            return parse_destinations([_raw(r) for r in self._rows]), ""
        except DestinationError as exc:
            return [], str(exc)
