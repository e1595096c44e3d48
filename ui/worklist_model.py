"""Worklist as Qt model/view: rows in arrival order in the source model; order and filters
live in the proxy, so a row whose priority changes moves by itself (dynamic sort).
"""

from __future__ import annotations

import datetime
from dataclasses import dataclass
from typing import Any

from PySide6.QtCore import QAbstractTableModel, QModelIndex, QPersistentModelIndex, QRectF, QSortFilterProxyModel, Qt
from PySide6.QtGui import QBrush, QColor, QFont, QPainter
from PySide6.QtWidgets import QStyle, QStyledItemDelegate, QStyleOptionViewItem

from app.worklist import RANK, WorklistRow

ROW_ROLE = Qt.ItemDataRole.UserRole + 1
SORT_ROLE = Qt.ItemDataRole.UserRole + 2
UID_ROLE = Qt.ItemDataRole.UserRole + 3

Index = QModelIndex | QPersistentModelIndex

COLUMNS: tuple[str, ...] = ("Priority", "Patient", "Patient ID", "Study date/time", "Modality",
                            "Description", "AI summary", "Arrival → result", "Status")
COL_PRIORITY, COL_PATIENT, COL_PID, COL_WHEN, COL_MODALITY, COL_DESC, COL_SUMMARY, COL_TURNAROUND, COL_STATUS = range(9)

PRIORITY_TEXT = {"critical": "CRITICAL", "urgent": "URGENT", "routine": "routine", "not_analysed": "not analysed",
                 "failed": "failed", "analysing": "analysing…", "new": "new"}
PRIORITY_COLOURS = {"critical": "#c62828", "urgent": "#ef6c00", "routine": "#2e7d32", "not_analysed": "#616161",
                    "failed": "#6a1b9a", "analysing": "#1565c0", "new": "#455a64"}
NOT_VALIDATED_TEXT = "NOT VALIDATED – not for diagnosis"


def format_patient_name(name: str) -> str:
    """DICOM PN 'FAMILY^GIVEN^MIDDLE' -> 'FAMILY, GIVEN MIDDLE'."""
    parts = [p for p in name.split("=")[0].split("^") if p]
    if not parts:
        return ""
    return parts[0] if len(parts) == 1 else f"{parts[0]}, {' '.join(parts[1:])}"


def format_study_when(date: str, clock: str) -> str:
    try:
        when = datetime.datetime.strptime(date[:8] + (clock[:6] or "000000").ljust(6, "0"), "%Y%m%d%H%M%S")
        return when.strftime("%Y-%m-%d %H:%M")
    except ValueError:
        return f"{date} {clock}".strip()


def format_duration(seconds: float | None) -> str:
    if seconds is None:
        return ""
    if seconds < 60:
        return f"{seconds:.0f} s"
    minutes, secs = divmod(int(round(seconds)), 60)
    if minutes < 60:
        return f"{minutes} min {secs:02d} s"
    hours, minutes = divmod(minutes, 60)
    return f"{hours} h {minutes:02d} min"


def summary_text(row: WorklistRow) -> str:
    """The AI summary, with the unvalidated warning impossible to miss."""
    text = row.summary
    if row.validated is False and "UNVALIDATED" not in text.upper():
        text = f"⚠ {NOT_VALIDATED_TEXT}: {text}" if text else f"⚠ {NOT_VALIDATED_TEXT}"
    elif row.validated is False:
        text = "⚠ " + text
    return text


class WorklistModel(QAbstractTableModel):
    """One row per study; rows are only ever replaced in place or appended."""

    def __init__(self, parent: Any = None) -> None:
        super().__init__(parent)
        self._rows: list[WorklistRow] = []
        self._where: dict[str, int] = {}
        self._bold = QFont()
        self._bold.setBold(True)

    # -- data ----------------------------------------------------------------------------
    def rowCount(self, parent: Index = QModelIndex()) -> int:
        return 0 if parent.isValid() else len(self._rows)

    def columnCount(self, parent: Index = QModelIndex()) -> int:
        return 0 if parent.isValid() else len(COLUMNS)

    def headerData(self, section: int, orientation: Qt.Orientation, role: int = Qt.ItemDataRole.DisplayRole) -> Any:
        if orientation == Qt.Orientation.Horizontal and role == Qt.ItemDataRole.DisplayRole:
            return COLUMNS[section]
        return None

    def row_at(self, row: int) -> WorklistRow:
        return self._rows[row]

    def row_for(self, study_uid: str) -> WorklistRow | None:
        i = self._where.get(study_uid)
        return self._rows[i] if i is not None else None

    def data(self, index: Index, role: int = Qt.ItemDataRole.DisplayRole) -> Any:
        if not index.isValid():
            return None
        r = self._rows[index.row()]
        col = index.column()
        if role == Qt.ItemDataRole.DisplayRole:
            return self._display(r, col)
        if role == SORT_ROLE:
            return self._sort_value(r, col)
        if role == ROW_ROLE:
            return r
        if role == UID_ROLE:
            return r.study_uid
        if role == Qt.ItemDataRole.ForegroundRole:
            if col == COL_SUMMARY and r.validated is False:
                return QBrush(QColor("#b00020"))
            if r.status == "reviewed":
                return QBrush(QColor("#808080"))
            return None
        if role == Qt.ItemDataRole.FontRole:
            if r.status != "reviewed" and r.priority in ("critical", "urgent"):
                return self._bold
            return None
        if role == Qt.ItemDataRole.ToolTipRole:
            if col == COL_SUMMARY:
                return summary_text(r) or None
            if col == COL_PRIORITY and r.validated is False:
                return f"Priority from a model that is {NOT_VALIDATED_TEXT}"
            return None
        return None

    @staticmethod
    def _display(r: WorklistRow, col: int) -> str:
        if col == COL_PRIORITY:
            return PRIORITY_TEXT.get(r.priority, r.priority)
        if col == COL_PATIENT:
            return format_patient_name(r.patient_name)
        if col == COL_PID:
            return r.patient_id
        if col == COL_WHEN:
            return format_study_when(r.study_date, r.study_time)
        if col == COL_MODALITY:
            return r.modalities
        if col == COL_DESC:
            return r.description
        if col == COL_SUMMARY:
            return summary_text(r)
        if col == COL_TURNAROUND:
            return format_duration(r.arrival_to_result_s)
        if col == COL_STATUS:
            return r.status
        return ""

    @staticmethod
    def _sort_value(r: WorklistRow, col: int) -> Any:
        if col == COL_PRIORITY:
            # The worklist order as one double, so the proxy sorts in C++: rank, then arrival.
            return float(RANK.get(r.priority, 3)) * 1e11 + float(r.arrival)
        if col == COL_WHEN:
            return f"{r.study_date}{r.study_time}"
        if col == COL_TURNAROUND:
            return r.arrival_to_result_s if r.arrival_to_result_s is not None else 1e18
        return WorklistModel._display(r, col).casefold()

    # -- updates (GUI thread) ------------------------------------------------------------
    def set_rows(self, rows: list[WorklistRow]) -> None:
        self.beginResetModel()
        self._rows = list(rows)
        self._where = {r.study_uid: i for i, r in enumerate(self._rows)}
        self.endResetModel()

    def upsert_rows(self, rows: list[WorklistRow]) -> None:
        new = []
        for row in rows:
            i = self._where.get(row.study_uid)
            if i is None:
                new.append(row)
            else:
                self._rows[i] = row
                self.dataChanged.emit(self.index(i, 0), self.index(i, len(COLUMNS) - 1))
        if new:
            first = len(self._rows)
            self.beginInsertRows(QModelIndex(), first, first + len(new) - 1)
            for row in new:
                self._where[row.study_uid] = len(self._rows)
                self._rows.append(row)
            self.endInsertRows()


STATUS_FILTERS: dict[str, set[str] | None] = {
    "All statuses": None, "Not reviewed": {"new", "analysing", "ready"}, "New": {"new"},
    "Analysing": {"analysing"}, "Ready": {"ready"}, "Reviewed": {"reviewed"},
}
PRIORITY_FILTERS: dict[str, set[str] | None] = {
    "All priorities": None, "Critical + urgent": {"critical", "urgent"}, "Critical": {"critical"},
    "Urgent": {"urgent"}, "Routine": {"routine"}, "Not analysed / failed": {"not_analysed", "failed"},
    "Analysing / new": {"analysing", "new"},
}


@dataclass
class WorklistFilter:
    statuses: set[str] | None = None
    priorities: set[str] | None = None
    text: str = ""

    def accepts(self, r: WorklistRow) -> bool:
        if self.statuses is not None and r.status not in self.statuses:
            return False
        if self.priorities is not None and r.priority not in self.priorities:
            return False
        if self.text:
            needle = self.text.casefold()
            hay = " ".join((r.patient_name, format_patient_name(r.patient_name), r.patient_id, r.description,
                            r.modalities, r.summary, r.study_date)).casefold()
            return needle in hay
        return True


class WorklistProxy(QSortFilterProxyModel):
    """Sorted by the priority column (worklist order) unless the user clicks another header."""

    def __init__(self, parent: Any = None) -> None:
        super().__init__(parent)
        self.filter = WorklistFilter()
        self.setSortRole(SORT_ROLE)
        self.setDynamicSortFilter(True)
        self.sort(COL_PRIORITY, Qt.SortOrder.AscendingOrder)

    def set_filter(self, statuses: set[str] | None = None, priorities: set[str] | None = None,
                   text: str | None = None) -> None:
        self.beginFilterChange()
        self.filter = WorklistFilter(statuses=statuses, priorities=priorities,
                                     text=(text if text is not None else self.filter.text).strip())
        self.endFilterChange(QSortFilterProxyModel.Direction.Rows)

    def set_text(self, text: str) -> None:
        self.beginFilterChange()
        self.filter.text = text.strip()
        self.endFilterChange(QSortFilterProxyModel.Direction.Rows)

    def filterAcceptsRow(self, source_row: int, source_parent: Index) -> bool:
        model = self.sourceModel()
        if not isinstance(model, WorklistModel):
            return True
        return self.filter.accepts(model.row_at(source_row))

    def study_uid_at(self, row: int) -> str | None:
        index = self.index(row, 0)
        return index.data(UID_ROLE) if index.isValid() else None

    def row_of(self, study_uid: str) -> int | None:
        model = self.sourceModel()
        if not isinstance(model, WorklistModel):
            return None
        i = model._where.get(study_uid)
        if i is None:
            return None
        proxy = self.mapFromSource(model.index(i, 0))
        return proxy.row() if proxy.isValid() else None


class PriorityBadgeDelegate(QStyledItemDelegate):
    """Paints the priority as a coloured pill, so critical rows stand out at a glance."""

    def paint(self, painter: QPainter, option: QStyleOptionViewItem, index: Index) -> None:
        row = index.data(ROW_ROLE)
        if not isinstance(row, WorklistRow):
            super().paint(painter, option, index)
            return
        painter.save()
        if option.state & QStyle.StateFlag.State_Selected:
            painter.fillRect(option.rect, option.palette.highlight())
        colour = QColor(PRIORITY_COLOURS.get(row.priority, "#455a64"))
        if row.status == "reviewed":
            colour = colour.lighter(160)
        rect = QRectF(option.rect.adjusted(4, 3, -4, -3))
        painter.setRenderHint(QPainter.RenderHint.Antialiasing)
        painter.setPen(Qt.PenStyle.NoPen)
        painter.setBrush(colour)
        painter.drawRoundedRect(rect, rect.height() / 2, rect.height() / 2)
        painter.setPen(QColor("white"))
        font = QFont(option.font)
        font.setBold(row.priority in ("critical", "urgent"))
        painter.setFont(font)
        text = PRIORITY_TEXT.get(row.priority, row.priority)
        if row.validated is False:
            text += " ⚠"
        painter.drawText(rect, Qt.AlignmentFlag.AlignCenter, text)
        painter.restore()

