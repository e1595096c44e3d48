"""Main window: the triage worklist and the viewer, the status bar and settings.

The window works before the service exists (it shows progress) and re-attaches when the
service is rebuilt after a settings change, so it never waits for the node or the models.
"""

from __future__ import annotations

import logging
from collections.abc import Iterable
from pathlib import Path
from typing import Any, Callable

from PySide6.QtCore import QItemSelectionModel, QModelIndex, Qt, Signal
from PySide6.QtGui import QAction, QCloseEvent, QKeyEvent, QKeySequence
from PySide6.QtWidgets import (
    QAbstractItemView,
    QComboBox,
    QHBoxLayout,
    QHeaderView,
    QLabel,
    QLineEdit,
    QMainWindow,
    QMessageBox,
    QPushButton,
    QTableView,
    QTabWidget,
    QVBoxLayout,
    QWidget,
)

from app.core.audit import STUDY_OPENED, AuditLog, os_user
from app.core.config import Config
from app.core.events import EventHub
from app.core.models import ModelSpecs, default_specs
from app.core.local_worklist import StoreWorklist
from app.core.service_api import ModelStatusView, StudyReader, WorklistSource
from app.core.store import StudyStore
from app.core.worklist import WorklistRow
from ui.bridge import EventBridge
from ui.settings_dialog import SettingsDialog
from ui.status_bar import FirstLookStatusBar, ModelState, StatusPoller
from ui.tasks import TaskRunner
from ui.viewer import ViewerWidget
from ui.worklist_feed import WorklistFeed
from ui.worklist_model import (
    COL_PRIORITY,
    COL_SUMMARY,
    PRIORITY_FILTERS,
    STATUS_FILTERS,
    UID_ROLE,
    PriorityBadgeDelegate,
    WorklistModel,
    WorklistProxy,
)

log = logging.getLogger(__name__)

SHORTCUTS_HTML = """<table cellpadding='2'>
<tr><th colspan='2' align='left'>Worklist</th></tr>
<tr><td>↑ ↓</td><td>move</td></tr><tr><td>Enter</td><td>open the study</td></tr>
<tr><td>Ctrl+R</td><td>mark reviewed (again: not reviewed)</td></tr><tr><td>Ctrl+F</td><td>filter</td></tr>
<tr><td>Ctrl+Shift+P</td><td>send the study's AI results to PACS (again)</td></tr>
<tr><th colspan='2' align='left'>Viewer</th></tr>
<tr><td>left drag</td><td>window / level</td></tr><tr><td>right / middle / Shift drag</td><td>pan</td></tr>
<tr><td>Ctrl+wheel, + −</td><td>zoom</td></tr><tr><td>F, double-click</td><td>fit</td></tr>
<tr><td>Backspace</td><td>reset (fit + stored window)</td></tr>
<tr><td>1–6, 0</td><td>CT presets: lung, mediastinum, bone, brain, subdural, stroke; 0 = as stored</td></tr>
<tr><td>wheel, ↑ ↓, PgUp PgDn, Home End</td><td>slices</td></tr>
<tr><td>H</td><td>AI overlay on/off</td></tr><tr><td>O</td><td>segmentation fill / outline</td></tr>
<tr><td>M</td><td>slice with the most haemorrhage</td></tr><tr><td>Esc</td><td>back to the worklist</td></tr>
</table>"""


def openvino_device_choices() -> list[str]:
    """Blocking (creates an OpenVINO Core): call it on a task thread."""
    import openvino as ov

    from inference.devices import device_choices

    return device_choices(ov.Core())


class WorklistView(QTableView):
    open_requested = Signal(str)   # study_uid

    def __init__(self, parent: QWidget | None = None) -> None:
        super().__init__(parent)
        self.setSelectionBehavior(QAbstractItemView.SelectionBehavior.SelectRows)
        self.setSelectionMode(QAbstractItemView.SelectionMode.SingleSelection)
        self.setEditTriggers(QAbstractItemView.EditTrigger.NoEditTriggers)
        self.setAlternatingRowColors(True)
        self.setSortingEnabled(True)
        self.setWordWrap(False)
        self.verticalHeader().setVisible(False)
        self.verticalHeader().setDefaultSectionSize(26)
        self.horizontalHeader().setStretchLastSection(False)
        self.setItemDelegateForColumn(COL_PRIORITY, PriorityBadgeDelegate(self))
        self.doubleClicked.connect(self._open_index)

    def current_study(self) -> str | None:
        index = self.currentIndex()
        return index.siblingAtColumn(0).data(UID_ROLE) if index.isValid() else None

    def _open_index(self, index: QModelIndex) -> None:
        uid = index.siblingAtColumn(0).data(UID_ROLE)
        if uid:
            self.open_requested.emit(uid)

    def keyPressEvent(self, event: QKeyEvent) -> None:
        if event.key() in (Qt.Key.Key_Return, Qt.Key.Key_Enter):
            if self.currentIndex().isValid():
                self._open_index(self.currentIndex())
            event.accept()
            return
        super().keyPressEvent(event)


class MainWindow(QMainWindow):
    settings_saved = Signal(object, bool, bool)   # config, restart node, reload models

    def __init__(self, config: Config, config_path: Path | None = None,
                 device_choices: Callable[[], list[str]] | None = openvino_device_choices,
                 specs: ModelSpecs | None = None) -> None:
        super().__init__()
        self.config = config
        self.specs = specs if specs is not None else default_specs()  # the wiring's models
        self.config_path = config_path
        self.store: StudyReader | None = None
        self._server = ""   # the attached service's URL; empty: the embedded one
        self._feed: WorklistFeed | None = None
        self._bridge: EventBridge | None = None
        self._poller: StatusPoller | None = None
        self._send_study: Callable[[str], int] | None = None
        self._tasks = TaskRunner("window-tasks", self)
        self.device_choices: list[str] | None = None
        self.setWindowTitle("FirstLook – AI first look")
        self.resize(1400, 860)

        self.model = WorklistModel(self)
        self.proxy = WorklistProxy(self)
        self.proxy.setSourceModel(self.model)
        self.table = WorklistView()
        self.table.setModel(self.proxy)
        self.table.sortByColumn(COL_PRIORITY, Qt.SortOrder.AscendingOrder)
        header = self.table.horizontalHeader()
        header.setSectionResizeMode(QHeaderView.ResizeMode.Interactive)
        for col, width in enumerate((130, 190, 100, 130, 70, 160, 380, 110, 90, 80)):
            self.table.setColumnWidth(col, width)
        header.setSectionResizeMode(COL_SUMMARY, QHeaderView.ResizeMode.Stretch)
        self.table.open_requested.connect(self.open_study)
        self.proxy.rowsInserted.connect(self._update_count)
        self.proxy.rowsRemoved.connect(self._update_count)
        self.proxy.modelReset.connect(self._on_reset)

        self.search = QLineEdit()
        self.search.setPlaceholderText("Filter: patient, ID, description, finding… (Ctrl+F)")
        self.search.setClearButtonEnabled(True)
        self.search.textChanged.connect(self.proxy.set_text)
        self.status_filter = QComboBox()
        self.status_filter.addItems(list(STATUS_FILTERS))
        self.priority_filter = QComboBox()
        self.priority_filter.addItems(list(PRIORITY_FILTERS))
        self.status_filter.currentTextChanged.connect(self._apply_filters)
        self.priority_filter.currentTextChanged.connect(self._apply_filters)
        self.count_label = QLabel()
        open_button = QPushButton("Open (Enter)")
        open_button.clicked.connect(self._open_current)
        reviewed_button = QPushButton("Mark reviewed (Ctrl+R)")
        reviewed_button.clicked.connect(self.mark_current_reviewed)
        bar = QHBoxLayout()
        bar.addWidget(self.search, 2)
        bar.addWidget(self.status_filter)
        bar.addWidget(self.priority_filter)
        bar.addWidget(self.count_label)
        bar.addStretch(1)
        bar.addWidget(open_button)
        bar.addWidget(reviewed_button)
        page = QWidget()
        page_layout = QVBoxLayout(page)
        page_layout.addLayout(bar)
        page_layout.addWidget(self.table, 1)

        self.viewer = ViewerWidget(specs=self.specs)
        self.viewer.back_requested.connect(self.show_worklist)
        self.viewer.mark_reviewed.connect(self.mark_reviewed)
        self.tabs = QTabWidget()
        self.tabs.addTab(page, "Worklist")
        self.tabs.addTab(self.viewer, "Viewer")
        self.setCentralWidget(self.tabs)
        self.status = FirstLookStatusBar()
        self.setStatusBar(self.status)
        self._actions()
        self._update_count()
        if device_choices is not None:
            self._tasks.submit(device_choices, self._got_devices,
                               lambda exc: log.warning("cannot list OpenVINO devices: %s", exc))

    def _actions(self) -> None:
        def action(text: str, shortcut: QKeySequence | str, slot: Callable[[], Any]) -> QAction:
            act = QAction(text, self)
            act.setShortcut(QKeySequence(shortcut))
            act.setShortcutContext(Qt.ShortcutContext.WindowShortcut)
            act.triggered.connect(slot)
            self.addAction(act)
            return act

        menu = self.menuBar().addMenu("&File")
        menu.addAction(action("&Settings…", "Ctrl+,", self.open_settings))
        menu.addSeparator()
        menu.addAction(action("&Quit", QKeySequence.StandardKey.Quit, self.close))
        view = self.menuBar().addMenu("&View")
        view.addAction(action("&Worklist", "Ctrl+1", self.show_worklist))
        view.addAction(action("&Viewer", "Ctrl+2", lambda: self.tabs.setCurrentWidget(self.viewer)))
        view.addAction(action("&Find", QKeySequence.StandardKey.Find, self._focus_search))
        study = self.menuBar().addMenu("&Study")
        self.review_action = action("Mark &reviewed", "Ctrl+R", self.mark_current_reviewed)
        study.addAction(self.review_action)
        self.send_action = action("Send to &PACS", "Ctrl+Shift+P", self.send_current_to_pacs)
        study.addAction(self.send_action)
        self.table.setContextMenuPolicy(Qt.ContextMenuPolicy.ActionsContextMenu)
        self.table.addAction(self.review_action)
        self.table.addAction(self.send_action)
        help_menu = self.menuBar().addMenu("&Help")
        help_menu.addAction(action("&Keyboard shortcuts", QKeySequence.StandardKey.HelpContents,
                                   self.show_shortcuts))

    def show_shortcuts(self) -> QMessageBox:
        box = QMessageBox(QMessageBox.Icon.Information, "Keyboard shortcuts", SHORTCUTS_HTML,
                          QMessageBox.StandardButton.Close, self)
        box.setTextFormat(Qt.TextFormat.RichText)
        box.setModal(False)
        box.show()
        return box

    # -- backend --------------------------------------------------------------------------
    def attach_backend(self, store: StudyReader, hub: EventHub,
                       models_status: Callable[[], Iterable[ModelStatusView]] | None = None,
                       queue_length: Callable[[], int] | None = None,
                       send_study: Callable[[str], int] | None = None,
                       worklist: WorklistSource | None = None, server: str = "") -> None:
        """Start following a store and its event hub (again, after a service restart).
        ``send_study`` is the service's "Send to PACS" (``DesktopService.send_study``);
        ``worklist``: the service's rows (the API for an attached desktop); by default the store's.
        ``server``: the URL of the service this desktop is attached to (empty: embedded)."""
        self.detach_backend()
        self.store = store
        self._server = server
        self._send_study = send_study
        if worklist is None:
            if not isinstance(store, StudyStore):
                raise TypeError("a store that is not local needs its worklist source")
            worklist = StoreWorklist(store)
        feed = WorklistFeed(worklist, parent=self)
        feed.rows_loaded.connect(self._on_rows_loaded, Qt.ConnectionType.QueuedConnection)
        feed.rows_updated.connect(self.model.upsert_rows, Qt.ConnectionType.QueuedConnection)
        feed.failed.connect(self.status.set_service_message, Qt.ConnectionType.QueuedConnection)
        feed.attach(hub)
        feed.start()
        self._feed = feed
        bridge = EventBridge(hub, self)
        bridge.node_status.connect(self.status.set_node, Qt.ConnectionType.QueuedConnection)
        bridge.connection.connect(self.status.set_connection, Qt.ConnectionType.QueuedConnection)
        bridge.result_stored.connect(self._on_result, Qt.ConnectionType.QueuedConnection)
        self._bridge = bridge
        if models_status is None:
            self.status.set_models_unknown()
        poller = StatusPoller(models_status, queue_length or store.pending_jobs, parent=self)
        poller.polled.connect(self._on_polled, Qt.ConnectionType.QueuedConnection)
        poller.start()
        self._poller = poller

    def detach_backend(self) -> None:
        if self._bridge is not None:
            self._bridge.detach()
            self._bridge = None
        if self._feed is not None:
            self._feed.stop()
            self._feed = None
        if self._poller is not None:
            self._poller.stop()
            self._poller = None

    def _on_polled(self, models: list[ModelState] | None, queue: int | None) -> None:
        if models is not None:
            self.status.set_models(models)
        if queue is not None:
            self.status.set_queue(queue)

    def _on_rows_loaded(self, rows: list[WorklistRow]) -> None:
        keep = self.table.current_study()
        self.model.set_rows(rows)
        self._select(keep)

    def _on_reset(self) -> None:
        self._update_count()

    def _on_result(self, study_uid: str, series_uid: str, priority: str) -> None:
        if self.viewer.study_uid == study_uid:
            self.viewer.reload_result()

    def _got_devices(self, choices: list[str]) -> None:
        self.device_choices = choices

    # -- worklist ------------------------------------------------------------------------
    def _select(self, study_uid: str | None) -> None:
        row = self.proxy.row_of(study_uid) if study_uid else None
        if row is None:
            row = 0 if self.proxy.rowCount() else None
        if row is None:
            return
        index = self.proxy.index(row, 0)
        self.table.selectionModel().setCurrentIndex(
            index, QItemSelectionModel.SelectionFlag.ClearAndSelect | QItemSelectionModel.SelectionFlag.Rows)

    def _apply_filters(self) -> None:
        self.proxy.set_filter(statuses=STATUS_FILTERS[self.status_filter.currentText()],
                              priorities=PRIORITY_FILTERS[self.priority_filter.currentText()],
                              text=self.search.text())
        self._update_count()

    def _update_count(self, *args: Any) -> None:
        self.count_label.setText(f"{self.proxy.rowCount()} of {self.model.rowCount()} studies")

    def _focus_search(self) -> None:
        self.show_worklist()
        self.search.setFocus()
        self.search.selectAll()

    def _open_current(self) -> None:
        uid = self.table.current_study()
        if uid:
            self.open_study(uid)

    def open_study(self, study_uid: str) -> None:
        if self.store is None:
            self.status.set_service_message("The study store is not open yet.")
            return
        if isinstance(self.store, StudyStore):
            self._audit_opened(self.store, study_uid)
        # else attached: the service records the opening with the reader's API user (and asking it
        # for the counts here would block the GUI thread on the network)
        self.viewer.open_study(self.store, study_uid)
        self.tabs.setCurrentWidget(self.viewer)
        self.viewer.canvas.setFocus()

    @staticmethod
    def _audit_opened(store: StudyStore, study_uid: str) -> None:
        """Who opened which study (audit log, synchronous: a queued record could be lost when
        the window closes; one small fsynced append per opening is imperceptible)."""
        try:
            study = store.get_study(study_uid)
        except Exception as exc:  # the audit record must not stop the radiologist from reading
            log.warning("cannot read study counts for the audit log: %s", exc)
            study = None
        AuditLog(store.data_dir).append(STUDY_OPENED, user=os_user(), study_uid=study_uid,
                                        series=study.n_series if study else None,
                                        instances=study.n_instances if study else None)

    def show_worklist(self) -> None:
        self.tabs.setCurrentIndex(0)
        self.table.setFocus()

    def mark_current_reviewed(self) -> None:
        uid = self.viewer.study_uid if self.tabs.currentWidget() is self.viewer else self.table.current_study()
        if uid:
            self.mark_reviewed(uid)

    def mark_reviewed(self, study_uid: str) -> None:
        """Toggle: a reviewed study can be put back (persisted either way, off the GUI thread)."""
        if self._feed is None:
            return
        row = self.model.row_for(study_uid)
        reviewed = not (row is not None and row.status == "reviewed")
        self._feed.set_reviewed(study_uid, reviewed)

    def send_current_to_pacs(self) -> None:
        uid = self.viewer.study_uid if self.tabs.currentWidget() is self.viewer else self.table.current_study()
        if uid:
            self.send_to_pacs(uid)

    def send_to_pacs(self, study_uid: str) -> None:
        """Queue the study's result objects to every destination, off the GUI thread (building
        them may take a few seconds); the PACS column follows the outbox."""
        send = self._send_study
        if send is None:
            self.status.set_service_message("The service is not running: nothing can be sent yet.")
            return

        def done(queued: int) -> None:
            self.status.set_service_message(
                f"Queued {queued} object(s) for PACS." if queued else
                "Nothing to send: no destination is configured (Settings → Destinations) or the study has "
                "no analysed series.")

        self._tasks.submit(lambda: send(study_uid), done,
                           lambda exc: self.status.set_service_message(f"Send to PACS failed: {exc}"))

    # -- settings ------------------------------------------------------------------------
    def open_settings(self) -> SettingsDialog:
        dialog = SettingsDialog(self.config, self.config_path, self.device_choices, self, specs=self.specs,
                                attached_to=self._server)
        dialog.saved.connect(self._on_settings_saved)
        dialog.setModal(True)
        dialog.show()
        return dialog

    def _on_settings_saved(self, config: Config, restart_node: bool, reload_models: bool) -> None:
        self.config = config
        if restart_node or reload_models:
            self.status.set_service_message("Settings saved; restarting the DICOM node and models…")
        else:
            self.status.set_service_message("Settings saved.")
        self.settings_saved.emit(config, restart_node, reload_models)

    # -- shutdown ------------------------------------------------------------------------
    def shutdown(self) -> None:
        self.detach_backend()
        self.viewer.shutdown()
        self._tasks.shutdown(wait=True)  # as the viewer: nothing may still read the store after this

    def closeEvent(self, event: QCloseEvent) -> None:
        self.shutdown()
        super().closeEvent(event)
