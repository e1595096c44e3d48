"""The desktop shows a preliminary result as preliminary: the worklist row (priority, status,
arrival → result) and the viewer (banner over the image, findings panel) say "preliminary (1/12)";
the final result replaces it, the row moves down with its "priority changed" note, and
``firstlook worklist --json`` lists the studies in the desktop's order."""

from __future__ import annotations

import dataclasses
import json
import os
import threading
import time
from pathlib import Path

os.environ.setdefault("QT_QPA_PLATFORM", "offscreen")

import numpy as np

from app.core.config import Config
from app.core.events import EventHub, ResultStored
from app.core.models import default_specs
from app.core.store import StudyStore
from tests.support import ui_data
from ui.main_window import MainWindow
from ui.viewer import ViewerWidget
from ui.worklist_model import COL_PRIORITY, COL_STATUS, COL_SUMMARY, COL_TURNAROUND, UID_ROLE


def _publish(hub: EventHub, event: object) -> None:
    thread = threading.Thread(target=hub.publish, args=(event,))  # the pipeline's thread, not the GUI's
    thread.start()
    thread.join()


def _uids(window: MainWindow) -> list[str]:
    return [window.proxy.index(r, 0).data(UID_ROLE) for r in range(window.proxy.rowCount())]


def test_preliminary_marking_in_worklist_and_viewer_then_the_final_result(qtbot, store: StudyStore, tmp_path: Path,
                                                                          capsys) -> None:
    t0 = time.time() - 600
    older = ui_data.add_ct(store, n=4, size=32, patient_id="OLDER", received_at=t0)
    bleed = ui_data.add_ct(store, n=4, size=32, patient_id="PRELIM", received_at=t0 + 60)
    ui_data.save_blastct(store, older, np.zeros((4, 32, 32), np.uint8), "routine", validated=True)
    labels = np.zeros((4, 32, 32), np.uint8)
    labels[1:3, 8:20, 8:20] = 1
    pre = ui_data.save_blastct(store, bleed, labels, "critical", validated=True)
    pre = dataclasses.replace(pre, preliminary=True, members_done=1, members_total=12,
                              summary=f"preliminary (1/12): {pre.summary}")
    pre.timings["arrival_to_result"] = 41.0
    store.save_result(pre)

    window = MainWindow(Config(data_dir=store.data_dir), tmp_path / "firstlook.toml", device_choices=None)
    qtbot.addWidget(window)
    hub = EventHub()
    window.attach_backend(store, hub)
    window.show()
    qtbot.waitUntil(lambda: window.proxy.rowCount() == 2, timeout=30000)
    assert _uids(window) == [bleed.study_uid, older.study_uid]        # the preliminary "critical" sorts first
    cells = {c: window.proxy.index(0, c).data() for c in (COL_PRIORITY, COL_STATUS, COL_SUMMARY, COL_TURNAROUND)}
    assert cells[COL_PRIORITY] == "CRITICAL prelim."
    assert cells[COL_STATUS] == "ready · preliminary (1/12)"
    assert cells[COL_SUMMARY].startswith("preliminary (1/12): IPH")
    assert cells[COL_TURNAROUND] == "41 s to preliminary (1/12)"
    assert window.proxy.index(1, COL_PRIORITY).data() == "routine"  # a final result carries no mark

    from app.cli import main                                         # the headless listing agrees
    assert main(["worklist", "--json", "--data-dir", str(store.data_dir)]) == 0
    listed = json.loads(capsys.readouterr().out)
    assert [r["study_uid"] for r in listed] == _uids(window)
    assert [(r["preliminary"], r["text"]["priority"]) for r in listed] == [(True, "CRITICAL prelim."),
                                                                           (False, "routine")]

    viewer = ViewerWidget(specs=default_specs())
    qtbot.addWidget(viewer)
    viewer.resize(900, 700)
    viewer.show()
    viewer.open_study(store, bleed.study_uid, bleed.series_uid)
    qtbot.waitUntil(lambda: viewer.opened is not None and viewer.overlays_ready and viewer.rendered is not None,
                    timeout=30000)
    assert viewer.preliminary_banner.isVisible()
    assert viewer.preliminary_banner.text().startswith("PRELIMINARY (1/12): first ensemble member(s) only")
    assert viewer.canvas.banner == "PRELIMINARY (1/12)"               # on the image itself
    assert "PRELIMINARY (1/12)" in viewer.findings.toPlainText()
    assert viewer.opened.labels is not None and viewer.opened.labels.voxels["IPH"][1:3] == [144, 144]  # its overlay

    # The full ensemble clears it: same row, final, the note; the worklist moves it down.
    final = dataclasses.replace(pre, priority="routine", preliminary=False, members_done=12, summary="no haemorrhage "
                                "or oedema above threshold", priority_note="priority changed: critical in preliminary "
                                "(1/12) → routine (final)")
    store.save_result(final)
    _publish(hub, ResultStored(bleed.study_uid, bleed.series_uid, "routine"))
    qtbot.waitUntil(lambda: _uids(window) == [older.study_uid, bleed.study_uid], timeout=30000)
    assert window.proxy.index(1, COL_PRIORITY).data() == "routine"
    assert window.proxy.index(1, COL_SUMMARY).data().startswith("⚠ priority changed: critical in preliminary (1/12)")
    assert len(store.results_for_study(bleed.study_uid)) == 1

    viewer.reload_result()
    qtbot.waitUntil(lambda: viewer.opened is not None and not viewer.opened.result.preliminary, timeout=30000)
    assert not viewer.preliminary_banner.isVisible() and viewer.canvas.banner == ""
    assert "priority changed: critical in preliminary (1/12) → routine (final)" in viewer.findings.toPlainText()
