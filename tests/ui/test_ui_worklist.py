"""Worklist: order, live insertion and re-ordering from events published on other threads,
filters, keyboard open, mark reviewed (persisted), the not-validated marking."""

from __future__ import annotations

import os

os.environ.setdefault("QT_QPA_PLATFORM", "offscreen")

import threading
import time
from pathlib import Path

import pytest
from PySide6.QtCore import Qt

from app.core.config import Config
from app.core.events import EventHub, InstanceStored, ResultStored
from app.core.store import StudyStore
from app.core.worklist import build_rows
from tests.support import ui_data
from ui.main_window import MainWindow
from ui.worklist_model import COL_STATUS, COL_SUMMARY, UID_ROLE


@pytest.fixture
def pngs(cxr_dir: Path) -> list[Path]:
    return sorted((cxr_dir / "images").glob("*.png"))


def make_window(qtbot, store: StudyStore, tmp_path: Path) -> tuple[MainWindow, EventHub]:
    window = MainWindow(Config(data_dir=store.data_dir), tmp_path / "firstlook.toml", device_choices=None)
    qtbot.addWidget(window)
    hub = EventHub()
    window.attach_backend(store, hub)
    window.show()
    return window, hub


def proxy_uids(window: MainWindow) -> list[str]:
    return [window.proxy.index(r, 0).data(UID_ROLE) for r in range(window.proxy.rowCount())]


def publish_from_thread(hub: EventHub, *events: object) -> None:
    """Events come from the node/pipeline threads in production; never from the GUI thread."""
    thread = threading.Thread(target=lambda: [hub.publish(e) for e in events])  # type: ignore[func-returns-value]
    thread.start()
    thread.join()


def mixed_worklist(store: StudyStore, pngs: list[Path]) -> dict[str, ui_data.Stored]:
    t0 = time.time() - 3600
    s = {
        "routine_old": ui_data.add_cxr(store, pngs[0], "ROUTINE^OLD", received_at=t0),
        "new": ui_data.add_cxr(store, pngs[1], "NEW^ONE", received_at=t0 + 1),
        "not_analysed": ui_data.add_cxr(store, pngs[2], "LATERAL^FILM", received_at=t0 + 2),
        "urgent": ui_data.add_cxr(store, pngs[3], "URGENT^EFFUSION", received_at=t0 + 5),
        "critical": ui_data.add_cxr(store, pngs[4], "CRITICAL^PTX", received_at=t0 + 10),
        "failed": ui_data.add_cxr(store, pngs[5], "FAILED^DECODE", received_at=t0 + 3),
    }
    ui_data.save_chexnet(store, s["routine_old"], {"Atelectasis": 0.2}, "routine", validated=True)
    ui_data.save_status(store, s["not_analysed"], "not_analysed", "lateral view")
    ui_data.save_chexnet(store, s["urgent"], {"Effusion": 0.8}, "urgent")
    ui_data.save_chexnet(store, s["critical"], {"Pneumothorax": 0.93}, "critical")
    ui_data.save_status(store, s["failed"], "failed", "InferenceError: decoder crashed")
    return s


def test_order_is_priority_then_arrival(qtbot, store, pngs, tmp_path):
    s = mixed_worklist(store, pngs)
    window, _ = make_window(qtbot, store, tmp_path)
    qtbot.waitUntil(lambda: window.proxy.rowCount() == 6, timeout=5000)
    expected = [s[k].study_uid for k in ("critical", "urgent", "new", "routine_old", "not_analysed", "failed")]
    assert proxy_uids(window) == expected
    assert proxy_uids(window) == [r.study_uid for r in build_rows(store)]  # same rules as the headless list
    # The top row is selected so arrows + Enter work at once.
    assert window.table.current_study() == s["critical"].study_uid
    # User re-sorts by patient, then back to priority.
    window.table.sortByColumn(1, Qt.SortOrder.AscendingOrder)
    names = [window.proxy.index(r, 1).data() for r in range(6)]
    assert names == sorted(names, key=str.casefold)
    window.table.sortByColumn(0, Qt.SortOrder.AscendingOrder)
    assert proxy_uids(window) == expected


def test_live_insertion_and_reordering_from_worker_threads(qtbot, store, pngs, tmp_path):
    s = mixed_worklist(store, pngs)
    window, hub = make_window(qtbot, store, tmp_path)
    qtbot.waitUntil(lambda: window.proxy.rowCount() == 6, timeout=5000)

    arriving = ui_data.add_cxr(store, pngs[6], "LATE^ARRIVAL")
    publish_from_thread(hub, InstanceStored(arriving.study_uid, arriving.series_uid, arriving.sop_uids[0], "stored"))
    qtbot.waitUntil(lambda: window.proxy.rowCount() == 7, timeout=5000)
    row = window.model.row_for(arriving.study_uid)
    assert row is not None and row.priority == "new" and row.status == "new"
    # An unanalysed study sorts just below urgent (it could still be critical), after the older new one.
    assert proxy_uids(window)[2:4] == [s["new"].study_uid, arriving.study_uid]

    # The pipeline finds a pneumothorax: the row moves up to the critical group, below the
    # older critical study (same priority sorts by arrival).
    ui_data.save_chexnet(store, arriving, {"Pneumothorax": 0.97}, "critical")
    publish_from_thread(hub, ResultStored(arriving.study_uid, arriving.series_uid, "critical"))
    qtbot.waitUntil(lambda: (r := window.model.row_for(arriving.study_uid)) is not None
                    and r.priority == "critical", timeout=5000)
    assert proxy_uids(window)[:2] == [s["critical"].study_uid, arriving.study_uid]
    summary = window.proxy.index(1, COL_SUMMARY).data()
    assert "Pneumothorax 0.97" in summary and "not for diagnosis" in summary

    # A re-run downgrades the older critical study to routine: it drops below the unanalysed ones.
    ui_data.save_chexnet(store, s["critical"], {"Pneumothorax": 0.1}, "routine", validated=True)
    publish_from_thread(hub, ResultStored(s["critical"].study_uid, s["critical"].series_uid, "routine"))
    qtbot.waitUntil(lambda: proxy_uids(window)[0] == arriving.study_uid, timeout=5000)
    assert proxy_uids(window) == [r.study_uid for r in build_rows(store)]


def test_burst_of_instance_events_is_coalesced(qtbot, store, tmp_path):
    window, hub = make_window(qtbot, store, tmp_path)
    ct = ui_data.add_ct(store, n=20, size=32)
    events = [InstanceStored(ct.study_uid, ct.series_uid, sop, "stored") for sop in ct.sop_uids]
    updates: list[int] = []
    window._feed.rows_updated.connect(lambda rows: updates.append(len(rows)))
    publish_from_thread(hub, *events)
    qtbot.waitUntil(lambda: window.proxy.rowCount() == 1, timeout=5000)
    qtbot.wait(200)
    assert window.model.row_for(ct.study_uid).n_instances == 20
    assert len(updates) <= 3, f"20 events caused {len(updates)} row refreshes"


def test_filters(qtbot, store, pngs, tmp_path):
    s = mixed_worklist(store, pngs)
    window, _ = make_window(qtbot, store, tmp_path)
    qtbot.waitUntil(lambda: window.proxy.rowCount() == 6, timeout=5000)
    qtbot.keyClicks(window.search, "effusion")
    assert proxy_uids(window) == [s["urgent"].study_uid]
    window.search.clear()
    qtbot.keyClicks(window.search, "ptx")   # patient name
    assert proxy_uids(window) == [s["critical"].study_uid]
    window.search.clear()
    assert window.proxy.rowCount() == 6
    window.priority_filter.setCurrentText("Critical + urgent")
    assert proxy_uids(window) == [s["critical"].study_uid, s["urgent"].study_uid]
    window.priority_filter.setCurrentText("Not analysed / failed")
    assert set(proxy_uids(window)) == {s["not_analysed"].study_uid, s["failed"].study_uid}
    window.priority_filter.setCurrentText("All priorities")
    window.status_filter.setCurrentText("New")
    assert proxy_uids(window) == [s["new"].study_uid]
    assert window.count_label.text() == "1 of 6 studies"


def test_enter_opens_and_mark_reviewed_persists(qtbot, store, pngs, tmp_path):
    s = mixed_worklist(store, pngs)
    window, _ = make_window(qtbot, store, tmp_path)
    qtbot.waitUntil(lambda: window.proxy.rowCount() == 6, timeout=5000)
    window.table.setFocus()
    qtbot.keyClick(window.table, Qt.Key.Key_Down)       # critical -> urgent
    assert window.table.current_study() == s["urgent"].study_uid
    qtbot.keyClick(window.table, Qt.Key.Key_Return)
    assert window.tabs.currentWidget() is window.viewer
    qtbot.waitUntil(lambda: window.viewer.rendered is not None, timeout=5000)
    assert window.viewer.study_uid == s["urgent"].study_uid

    qtbot.keyClick(window.viewer.canvas, Qt.Key.Key_R, Qt.KeyboardModifier.ControlModifier)
    qtbot.waitUntil(lambda: store.get_study(s["urgent"].study_uid).reviewed_at is not None, timeout=5000)
    qtbot.waitUntil(lambda: window.model.row_for(s["urgent"].study_uid).status == "reviewed", timeout=5000)
    qtbot.keyClick(window.viewer.canvas, Qt.Key.Key_Escape)
    assert window.tabs.currentIndex() == 0
    window.status_filter.setCurrentText("Reviewed")
    assert proxy_uids(window) == [s["urgent"].study_uid]
    row = window.proxy.row_of(s["urgent"].study_uid)
    assert window.proxy.index(row, COL_STATUS).data() == "reviewed"
    # Survives a restart of the window: it is in the store, not in the view.
    window.shutdown()
    again, _ = make_window(qtbot, store, tmp_path)
    qtbot.waitUntil(lambda: again.proxy.rowCount() == 6, timeout=5000)
    assert again.model.row_for(s["urgent"].study_uid).status == "reviewed"
    again.shutdown()


def test_not_validated_rows_are_marked(qtbot, store, pngs, tmp_path):
    s = mixed_worklist(store, pngs)
    window, _ = make_window(qtbot, store, tmp_path)
    qtbot.waitUntil(lambda: window.proxy.rowCount() == 6, timeout=5000)

    def summary(key: str) -> str:
        return window.proxy.index(window.proxy.row_of(s[key].study_uid), COL_SUMMARY).data()

    assert summary("critical").startswith("⚠")
    assert "not for diagnosis" in summary("critical")
    assert not summary("routine_old").startswith("⚠")
    assert "not for diagnosis" not in summary("routine_old")
    fg = window.proxy.index(window.proxy.row_of(s["critical"].study_uid), COL_SUMMARY).data(
        Qt.ItemDataRole.ForegroundRole)
    assert fg is not None and fg.color().red() > 150


def test_model_keeps_order_through_random_updates_and_sorts(qtbot):
    """Rows inserted/moved one at a time must always equal a full sort (any column, any order),
    and the proxy must show the same order with the selection following its study."""
    import random

    from app.core.worklist import WorklistRow
    from ui.worklist_model import WorklistModel, WorklistProxy

    rng = random.Random(4)
    priorities = ["critical", "urgent", "analysing", "new", "routine", "not_analysed", "failed"]

    def row(i: int) -> WorklistRow:
        return WorklistRow(study_uid=f"1.2.3.{i}", patient_name=f"P^{rng.randint(0, 50)}", patient_id=str(i),
                           study_date="20260101", study_time=f"{rng.randint(0, 235959):06d}", modalities="DX",
                           description="", priority=rng.choice(priorities), validated=None, summary="",
                           arrival=float(rng.randint(0, 1000)), result_at=None,
                           arrival_to_result_s=rng.choice([None, float(rng.randint(1, 99))]), status="ready",
                           n_series=1, n_instances=1)

    model = WorklistModel()
    proxy = WorklistProxy()
    proxy.setSourceModel(model)
    model.set_rows([row(i) for i in range(50)])
    tracked = proxy.index(proxy.row_of("1.2.3.7"), 0)
    from PySide6.QtCore import QPersistentModelIndex

    keep = QPersistentModelIndex(tracked)
    for col, order in [(0, Qt.SortOrder.AscendingOrder), (1, Qt.SortOrder.DescendingOrder),
                       (7, Qt.SortOrder.AscendingOrder), (0, Qt.SortOrder.AscendingOrder)]:
        proxy.sort(col, order)
        for _ in range(60):
            model.upsert_rows([row(rng.randint(0, 70))])
            rows = [model.row_at(i) for i in range(model.rowCount())]
            keys = [WorklistModel.sort_value(r, col) for r in rows]
            assert keys == sorted(keys, reverse=order == Qt.SortOrder.DescendingOrder)
            assert all(model.index_of(r.study_uid) == i for i, r in enumerate(rows))
            assert [proxy.study_uid_at(i) for i in range(proxy.rowCount())] == [r.study_uid for r in rows]
            assert keep.isValid() and keep.data(UID_ROLE) == "1.2.3.7"
