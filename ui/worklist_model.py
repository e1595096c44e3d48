"""Worklist as Qt model/view: the source model keeps rows in display order (worklist order by
default: priority, then arrival) and moves a row when its priority changes; the proxy filters.
"""

from __future__ import annotations

import bisect
from dataclasses import dataclass
from typing import Any

from PySide6.QtCore import QAbstractTableModel, QModelIndex, QPersistentModelIndex, QRectF, QSortFilterProxyModel, Qt
from PySide6.QtGui import QBrush, QColor, QFont, QPainter
from PySide6.QtWidgets import QStyle, QStyledItemDelegate, QStyleOptionViewItem

from app.core.worklist import RANK, WorklistRow
from app.core.worklist_text import (  # noqa: F401  (re-exported: the viewer and the findings panel use them)
    NOT_VALIDATED_TEXT, PRIORITY_TEXT, format_duration, format_patient_name, format_study_when, priority_text,
    status_text, summary_text, turnaround_text,
)

ROW_ROLE = Qt.ItemDataRole.UserRole + 1
UID_ROLE = Qt.ItemDataRole.UserRole + 3

Index = QModelIndex | QPersistentModelIndex

COLUMNS: tuple[str, ...] = ("Priority", "Patient", "Patient ID", "Study date/time", "Modality",
                            "Description", "AI summary", "Arrival → result", "Status", "PACS")
(COL_PRIORITY, COL_PATIENT, COL_PID, COL_WHEN, COL_MODALITY, COL_DESC, COL_SUMMARY, COL_TURNAROUND, COL_STATUS,
 COL_SEND) = range(10)
SEND_TEXT = {"queued": "queued", "sent": "sent", "failing": "failing", "stopped": "stopped"}
SEND_COLOURS = {"failing": "#b00020", "stopped": "#6a1b9a"}

PRIORITY_COLOURS = {"critical": "#c62828", "urgent": "#ef6c00", "routine": "#2e7d32", "not_analysed": "#616161",
                    "failed": "#6a1b9a", "analysing": "#1565c0", "new": "#455a64"}


class _Descending:
    """Wraps a sort key so that bisect/sorted order it high-to-low."""

    __slots__ = ("key",)

    def __init__(self, key: Any) -> None:
        self.key = key

    def __lt__(self, other: "_Descending") -> bool:
        return other.key < self.key


class WorklistModel(QAbstractTableModel):
    """One row per study, kept in display order by the model itself.

    Sorting 10,000 rows in a QSortFilterProxyModel calls back into Python for every
    comparison (over a second); here one ``sorted()`` does it in milliseconds, and a row
    whose priority changes is moved to its new place with ``beginMoveRows``. The proxy
    on top only filters.
    """

    def __init__(self, parent: Any = None) -> None:
        super().__init__(parent)
        self._rows: list[WorklistRow] = []
        self._where: dict[str, int] = {}
        self._sort_column = COL_PRIORITY
        self._sort_order = Qt.SortOrder.AscendingOrder
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

    def index_of(self, study_uid: str) -> int | None:
        return self._where.get(study_uid)

    @property
    def sort_column(self) -> int:
        return self._sort_column

    def data(self, index: Index, role: int = Qt.ItemDataRole.DisplayRole) -> Any:
        if not index.isValid():
            return None
        r = self._rows[index.row()]
        col = index.column()
        if role == Qt.ItemDataRole.DisplayRole:
            return self._display(r, col)
        if role == ROW_ROLE:
            return r
        if role == UID_ROLE:
            return r.study_uid
        if role == Qt.ItemDataRole.ForegroundRole:
            if col == COL_SUMMARY and r.validated is False:
                return QBrush(QColor("#b00020"))
            if col == COL_SEND and r.send_state in SEND_COLOURS:
                return QBrush(QColor(SEND_COLOURS[r.send_state]))
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
            if col == COL_SEND:
                return r.send_detail or None
            return None
        return None

    @staticmethod
    def _display(r: WorklistRow, col: int) -> str:
        if col == COL_PRIORITY:
            return priority_text(r)
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
            return turnaround_text(r)
        if col == COL_STATUS:
            return status_text(r)
        if col == COL_SEND:
            return SEND_TEXT.get(r.send_state, r.send_state)
        return ""

    @staticmethod
    def sort_value(r: WorklistRow, col: int) -> tuple[Any, ...]:
        """Column value, then the worklist order (rank, arrival) so ties stay triage-ordered."""
        base = (RANK.get(r.priority, 3), r.arrival, r.study_uid)
        if col == COL_PRIORITY:
            return base
        if col == COL_WHEN:
            return (f"{r.study_date}{r.study_time}", *base)
        if col == COL_TURNAROUND:
            return (r.arrival_to_result_s if r.arrival_to_result_s is not None else float("inf"), *base)
        return (WorklistModel._display(r, col).casefold(), *base)

    def _key(self, r: WorklistRow) -> Any:
        key = self.sort_value(r, self._sort_column)
        return _Descending(key) if self._sort_order == Qt.SortOrder.DescendingOrder else key

    def _reindex(self, start: int = 0, stop: int | None = None) -> None:
        rows = self._rows
        for i in range(start, len(rows) if stop is None else stop):
            self._where[rows[i].study_uid] = i

    # -- ordering ------------------------------------------------------------------------
    def sort(self, column: int, order: Qt.SortOrder = Qt.SortOrder.AscendingOrder) -> None:
        self.layoutAboutToBeChanged.emit()
        old_uids = [r.study_uid for r in self._rows]
        self._sort_column, self._sort_order = column, order
        self._rows.sort(key=self._key)
        self._where = {}
        self._reindex()
        persistent = self.persistentIndexList()
        if persistent:
            moved = [self.index(self._where[old_uids[p.row()]], p.column()) for p in persistent]
            self.changePersistentIndexList(persistent, moved)
        self.layoutChanged.emit()

    # -- updates (GUI thread) ------------------------------------------------------------
    def set_rows(self, rows: list[WorklistRow]) -> None:
        self.beginResetModel()
        self._rows = sorted(rows, key=self._key)
        self._where = {}
        self._reindex()
        self.endResetModel()

    def upsert_rows(self, rows: list[WorklistRow]) -> None:
        """Replace or insert each row at its sorted place; moved rows keep their selection."""
        for row in rows:
            old = self._where.get(row.study_uid)
            if old is None:
                at = bisect.bisect_right(self._rows, self._key(row), key=self._key)
                self.beginInsertRows(QModelIndex(), at, at)
                self._rows.insert(at, row)
                self._reindex(at)
                self.endInsertRows()
                continue
            del self._rows[old]
            at = bisect.bisect_right(self._rows, self._key(row), key=self._key)
            self._rows.insert(old, row)  # back in place until Qt has been told about the move
            if at != old:
                dest = at if at < old else at + 1  # Qt counts the destination before removal
                if self.beginMoveRows(QModelIndex(), old, old, QModelIndex(), dest):
                    self._rows.pop(old)
                    self._rows.insert(at, row)
                    lo, hi = min(old, at), max(old, at) + 1
                    self._reindex(lo, hi)
                    self.endMoveRows()
                    old = at
            self.dataChanged.emit(self.index(old, 0), self.index(old, len(COLUMNS) - 1))


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
    """Filters only; order comes from the source model (worklist order unless a header is clicked)."""

    def __init__(self, parent: Any = None) -> None:
        super().__init__(parent)
        self.filter = WorklistFilter()
        self.setDynamicSortFilter(True)

    def sort(self, column: int, order: Qt.SortOrder = Qt.SortOrder.AscendingOrder) -> None:
        """Header clicks sort the source model (fast); the proxy keeps source order."""
        model = self.sourceModel()
        if isinstance(model, WorklistModel):
            model.sort(column, order)

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
        i = model.index_of(study_uid)
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
        text = priority_text(row)
        if row.validated is False:
            text += " ⚠"
        painter.drawText(rect, Qt.AlignmentFlag.AlignCenter, text)
        painter.restore()

