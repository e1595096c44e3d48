"""Desktop benchmark (run by hand): ``python3 bench/bench_ui.py [--studies 10000] [--slices 300]``.

Figures, with their targets:
  * worklist of 10,000 studies: time to show (store -> rows painted), time to re-sort   (<= 1 s each)
  * 300-slice 512x512 head CT: time from "open" to the first image                      (<= 1 s)
  * slice scrolling, windowed + BLAST-CT overlay, painted on screen                       (>= 30 fps)

Real store (SQLite + files written through StudyStore.store_instance), real DICOM, real
widgets (offscreen platform unless a display is set).
"""

from __future__ import annotations

import argparse
import logging
import os
import sys
import tempfile
import time
from pathlib import Path

os.environ.setdefault("QT_QPA_PLATFORM", "offscreen")
sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

import numpy as np  # noqa: E402
from PySide6.QtCore import Qt  # noqa: E402
from PySide6.QtWidgets import QApplication  # noqa: E402

from app.core.config import Config  # noqa: E402
from app.core.events import EventHub, ResultStored  # noqa: E402
from app.core.results import AnalysisResult
from app.core.store import StudyStore  # noqa: E402
from tests.support import ui_data  # noqa: E402
from tests.support.dicom_factory import make_ct_slice  # noqa: E402
from ui.main_window import MainWindow  # noqa: E402

PRIORITIES = ("critical", "urgent", "routine", "routine", "routine", "not_analysed", "failed")


def wait(app: QApplication, condition, timeout: float = 60.0) -> None:
    end = time.perf_counter() + timeout
    while not condition():
        if time.perf_counter() > end:
            raise TimeoutError("condition not met")
        app.processEvents()
        time.sleep(0.0005)


def fill_worklist(store: StudyStore, n: int) -> None:
    """n single-instance studies (tiny CT slices: the worklist reads the index, not pixels)."""
    t0 = time.time() - n
    pixels = np.zeros((8, 8))
    for i in range(n):
        ds = make_ct_slice(pixels, (0.0, 0.0, 0.0), patient_id=f"P{i:05d}")
        ds.PatientName = f"PATIENT^{i:05d}"
        store.store_instance(ui_data.encode(ds), calling_ae="CT01", received_at=t0 + i)
        if i % 3 == 0:
            priority = PRIORITIES[i % len(PRIORITIES)]
            store.save_result(AnalysisResult(
                series_uid=str(ds.SeriesInstanceUID), study_uid=str(ds.StudyInstanceUID),
                status="done" if priority not in ("not_analysed", "failed") else priority, priority=priority,
                summary=f"IPH {i % 17:.1f} mL", validated=False, timings={"arrival_to_result": 30.0 + i % 50}))


def bench_worklist(app: QApplication, root: Path, n: int) -> dict[str, float]:
    store = StudyStore(root / f"worklist-{n}")
    if len(store.list_studies()) != n:  # reuse a kept data dir (--data) when it already has them
        t = time.perf_counter()
        fill_worklist(store, n)
        print(f"  (filled {n} studies in {time.perf_counter() - t:.1f} s)")
    window = MainWindow(Config(data_dir=store.data_dir), None, device_choices=None)
    window.show()
    app.processEvents()
    hub = EventHub()
    t = time.perf_counter()
    window.attach_backend(store, hub)
    wait(app, lambda: window.proxy.rowCount() == n)
    window.table.viewport().repaint()
    show = time.perf_counter() - t
    t = time.perf_counter()
    window.table.sortByColumn(1, Qt.SortOrder.DescendingOrder)
    window.table.viewport().repaint()
    resort = time.perf_counter() - t
    t = time.perf_counter()
    window.table.sortByColumn(0, Qt.SortOrder.AscendingOrder)
    window.table.viewport().repaint()
    back = time.perf_counter() - t
    t = time.perf_counter()
    window.search.setText("PATIENT, 0999")
    app.processEvents()
    filt = time.perf_counter() - t
    window.search.setText("")
    # A result lands for the newest study: time until the row is on top.
    last = window.proxy.study_uid_at(window.proxy.rowCount() - 1)
    series = store.list_series(last)[0]
    store.save_result(AnalysisResult(series_uid=series.series_uid, study_uid=last, status="done",
                                     priority="critical", summary="IPH 40.0 mL"))
    arrival = window.model.row_for(last).arrival
    n_critical = sum(1 for r in range(window.model.rowCount())
                     if window.model.row_at(r).priority == "critical" and window.model.row_at(r).arrival < arrival)
    t = time.perf_counter()
    hub.publish(ResultStored(last, series.series_uid, "critical"))
    # The bottom study becomes critical: it moves up into the critical group, ordered by arrival.
    wait(app, lambda: window.proxy.row_of(last) == n_critical)
    live = time.perf_counter() - t
    window.shutdown()
    store.close()
    return {"show": show, "resort": resort, "resort_back": back, "filter": filt, "live_result": live}


def fill_ct(store: StudyStore, n: int, size: int = 512) -> ui_data.Stored:
    from pydicom.uid import generate_uid

    study, series = generate_uid(), generate_uid()
    yy, xx = np.mgrid[0:size, 0:size]
    r = np.hypot(yy - size / 2, xx - size / 2)
    base = np.full((size, size), -1000.0)
    base[r < size * 0.42] = 900.0
    base[r < size * 0.38] = 35.0
    sops = []
    for k in range(n):
        img = base + (k % 7)
        ds = make_ct_slice(img, (0.0, 0.0, k * 0.625), spacing=(0.45, 0.45), thickness=0.625, instance=k + 1,
                           study_uid=study, series_uid=series)
        store.store_instance(ui_data.encode(ds), calling_ae="CT01")
        sops.append(str(ds.SOPInstanceUID))
    stored = ui_data.Stored(study, series, sops)
    labels = np.zeros((n, size, size), np.uint8)
    labels[n // 3: n // 2, 200:260, 280:340] = 1
    labels[n // 3: n // 2, 300:320, 200:260] = 4
    ui_data.save_blastct(store, stored, labels, "urgent")
    return stored


def bench_ct(app: QApplication, root: Path, n: int) -> dict[str, float]:
    store = StudyStore(root / f"ct-{n}")
    existing = store.list_studies()
    if existing:
        series = store.list_series(existing[0].study_uid)[0]
        stored = ui_data.Stored(existing[0].study_uid, series.series_uid, [])
    else:
        t = time.perf_counter()
        stored = fill_ct(store, n)
        print(f"  (stored a {n}-slice CT in {time.perf_counter() - t:.1f} s)")
    window = MainWindow(Config(data_dir=store.data_dir), None, device_choices=None)
    window.resize(1600, 1000)
    window.show()
    window.attach_backend(store, EventHub())
    wait(app, lambda: window.model.rowCount() == 1)
    viewer = window.viewer
    shown: list[float] = []
    viewer.image_shown.connect(shown.append)
    t = time.perf_counter()
    window.open_study(stored.study_uid)
    wait(app, lambda: bool(shown))
    first = time.perf_counter() - t
    wait(app, lambda: viewer.pixels is not None and viewer.pixels.loaded_count == n, timeout=120)
    all_loaded = time.perf_counter() - t
    viewer.set_slice(0)
    frames = 0
    t = time.perf_counter()
    for i in list(range(n)) + list(range(n - 1, -1, -1)):
        viewer.set_slice(i)
        viewer.canvas.repaint()   # synchronous paint: the frame is on screen when this returns
        frames += 1
    fps = frames / (time.perf_counter() - t)
    for box in viewer.class_boxes.values():
        box.setChecked(False)
    frames = 0
    t = time.perf_counter()
    for i in range(n):
        viewer.set_slice(i)
        viewer.canvas.repaint()
        frames += 1
    fps_plain = frames / (time.perf_counter() - t)
    window.shutdown()
    store.close()
    return {"first_image": first, "all_slices": all_loaded, "fps_overlay": fps, "fps_plain": fps_plain}


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--studies", type=int, default=10_000)
    parser.add_argument("--slices", type=int, default=300)
    parser.add_argument("--data", type=Path, help="keep the generated studies here and reuse them next run")
    args = parser.parse_args()
    logging.basicConfig(level=logging.WARNING)
    app = QApplication.instance() or QApplication(sys.argv[:1])
    with tempfile.TemporaryDirectory(prefix="firstlook-bench-") as tmp:
        root = args.data or Path(tmp)
        print(f"worklist, {args.studies} studies:")
        w = bench_worklist(app, root, args.studies)
        print(f"  time to show          {w['show']:.3f} s   (target <= 1 s)")
        print(f"  re-sort (patient)     {w['resort']:.3f} s   (target <= 1 s)")
        print(f"  re-sort (priority)    {w['resort_back']:.3f} s")
        print(f"  text filter           {w['filter']:.3f} s")
        print(f"  result -> row moved   {w['live_result']:.3f} s")
        print(f"head CT, {args.slices} slices of 512x512:")
        c = bench_ct(app, root, args.slices)
        print(f"  time to first image   {c['first_image']:.3f} s   (target <= 1 s)")
        print(f"  all slices decoded    {c['all_slices']:.3f} s   (background)")
        print(f"  scrolling, overlay on {c['fps_overlay']:.1f} fps  (target >= 30 fps)")
        print(f"  scrolling, plain      {c['fps_plain']:.1f} fps")
    return 0


if __name__ == "__main__":
    sys.exit(main())
