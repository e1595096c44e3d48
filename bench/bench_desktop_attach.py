"""Attached desktop vs embedded desktop (run by hand):

    python3 bench/bench_desktop_attach.py [--studies 10000] [--sends 50] [--slices 300] [--repeats 3] [--data DIR]

1. A 10,000-study worklist: time from attaching the window to all rows painted, embedded
   (rows from the local store) vs attached (rows over ``GET /api/v1/worklist`` from a real
   ``firstlook --headless``), alternated ``--repeats`` times on the same data dir.
2. storescu sends a chest radiograph -> the row with its result is in the desktop's worklist
   model: p50/p95 over ``--sends`` sends, alternating an embedded desktop (Service in this
   process) and a desktop attached to a headless service, both with the built packs.
3. A ``--slices``-slice 512x512 head CT with its overlay: "open" -> first image, embedded vs
   attached with an empty cache (WADO-RS of the series) vs attached again (the cache).

Real processes, real HTTP over loopback, real widgets (offscreen). Figures go to bench/README.md.
"""

from __future__ import annotations

import argparse
import os
import statistics
import subprocess
import sys
import tempfile
import time
from dataclasses import replace
from pathlib import Path

os.environ.setdefault("QT_QPA_PLATFORM", "offscreen")
HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE.parent))
sys.path.insert(0, str(HERE))

from PySide6.QtWidgets import QApplication  # noqa: E402

from app.client import RemoteService  # noqa: E402
from app.core.config import Config  # noqa: E402
from app.core.events import EventHub  # noqa: E402
from app.core.store import StudyStore  # noqa: E402
from bench_ui import fill_worklist, wait  # noqa: E402
from tests.support import free_port, packs_path, shared_path  # noqa: E402
from tests.support.api_service import HeadlessService  # noqa: E402
from tests.support.dicom_factory import make_cxr_dataset, write  # noqa: E402
from tests.support.node_helpers import dcmtk, dcmtk_env  # noqa: E402
from ui.main_window import MainWindow  # noqa: E402


def pct(values: list[float], q: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(round(q * (len(ordered) - 1))))]


def paint_worklist(app: QApplication, config: Config, attach, n: int) -> float:
    """Seconds from attach to n rows in the view, painted."""
    window = MainWindow(config, None, device_choices=None)
    window.show()
    app.processEvents()
    t = time.perf_counter()
    attach(window)
    wait(app, lambda: window.proxy.rowCount() == n, timeout=300)
    window.table.viewport().repaint()
    elapsed = time.perf_counter() - t
    window.shutdown()
    window.deleteLater()
    app.processEvents()
    return elapsed


def bench_worklist(app: QApplication, root: Path, n: int, repeats: int) -> dict[str, list[float]]:
    service = HeadlessService(root / f"worklist-{n}")
    store = StudyStore(service.data_dir)
    if len(store.list_studies()) != n:
        t = time.perf_counter()
        fill_worklist(store, n)
        print(f"  (filled {n} studies in {time.perf_counter() - t:.1f} s)")
    service.start()
    token = service.users_add(f"bench{time.time_ns()}")
    config = Config(data_dir=root / "desk-data", cache_dir=root / "desk-cache")
    out: dict[str, list[float]] = {"embedded": [], "attached": [], "api_only": []}
    try:
        for _ in range(repeats):
            out["embedded"].append(paint_worklist(app, config, lambda w: w.attach_backend(store, EventHub()), n))
            remote = RemoteService(service.url, token, root / "desk-cache")
            remote.start()
            t = time.perf_counter()
            remote.worklist.rows()
            out["api_only"].append(time.perf_counter() - t)
            out["attached"].append(paint_worklist(
                app, config, lambda w: w.attach_backend(remote.store, remote.hub, remote.models_status,
                                                        remote.queue_length, worklist=remote.worklist), n))
            remote.stop()
    finally:
        service.stop()
        store.close()
    return out


def send(app: QApplication, window: MainWindow, port: int, path: Path, study_uid: str) -> float:
    """storescu start -> the study's row with its result in the window's model."""
    t = time.perf_counter()
    proc = subprocess.Popen([dcmtk("storescu"), "-aec", "FIRSTLOOK", "127.0.0.1", str(port), str(path)],
                            env=dcmtk_env(), stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)

    def done() -> bool:
        row = window.model.row_for(study_uid)
        return row is not None and row.status in ("ready", "reviewed")

    wait(app, done, timeout=120)
    elapsed = time.perf_counter() - t
    if proc.wait(30) != 0:
        raise RuntimeError(proc.stderr.read().decode() if proc.stderr else "storescu failed")
    return elapsed


def bench_e2e(app: QApplication, root: Path, sends: int, packs: Path) -> dict[str, list[float]]:
    from app.service import Service

    pngs = sorted((shared_path() / "data" / "cxr" / "images").glob("*.png"))
    embedded_port = free_port()
    config = replace(Config(), data_dir=root / "e2e-embedded", cache_dir=root / "e2e-cache", packs_dir=packs,
                     port=embedded_port, api_port=free_port(), quiet_period_s=0.5, min_free_mb=0)
    embedded = Service(config)
    embedded.start()
    emb_window = MainWindow(config, None, device_choices=None)
    emb_window.show()
    emb_window.attach_backend(embedded.store, embedded.hub, embedded.models_status, embedded.queue_length,
                              worklist=embedded.worklist)
    service = HeadlessService(root / "e2e-server", packs_dir=packs).start()
    remote = RemoteService(service.url, service.users_add("bench"), root / "e2e-desk-cache")
    remote.start()
    att_window = MainWindow(config, None, device_choices=None)
    att_window.show()
    att_window.attach_backend(remote.store, remote.hub, remote.models_status, remote.queue_length,
                              worklist=remote.worklist)
    out: dict[str, list[float]] = {"embedded": [], "attached": []}
    try:
        wait(app, lambda: all(m.ready for m in _models(embedded)), timeout=120)
        for i in range(sends + 1):  # the first pair warms both (model compile, caches): not counted
            for name, window, port in (("embedded", emb_window, embedded_port), ("attached", att_window, service.port)):
                ds = make_cxr_dataset(pngs[i % len(pngs)], modality="DX" if i % 2 else "CR")
                path = write(ds, root / "send" / name)
                elapsed = send(app, window, port, path, str(ds.StudyInstanceUID))
                if i:
                    out[name].append(elapsed)
    finally:
        emb_window.shutdown()
        att_window.shutdown()
        remote.stop()
        service.stop()
        embedded.stop()
    return out


def first_image(app: QApplication, window: MainWindow, study_uid: str) -> float:
    """Seconds from "open" to the first real image on screen."""
    shown: list[float] = []
    window.viewer.image_shown.connect(shown.append)
    t = time.perf_counter()
    window.open_study(study_uid)
    wait(app, lambda: bool(shown), timeout=300)
    elapsed = time.perf_counter() - t
    window.viewer.image_shown.disconnect(shown.append)
    window.viewer.close_series()
    return elapsed


def bench_ct(app: QApplication, root: Path, n: int, repeats: int) -> dict[str, list[float]]:
    """A n-slice 512x512 CT with its BLAST-CT overlay: first image embedded, attached with an
    empty cache (WADO-RS of the whole series), attached again (cache hit)."""
    from bench_ui import fill_ct

    service = HeadlessService(root / f"ct-{n}")
    store = StudyStore(service.data_dir)
    studies = store.list_studies()
    study_uid = studies[0].study_uid if studies else fill_ct(store, n).study_uid
    service.start()
    token = service.users_add(f"bench{time.time_ns()}")
    config = Config(data_dir=root / "desk-data", cache_dir=root / "desk-cache")
    out: dict[str, list[float]] = {"embedded": [], "attached_cold": [], "attached_warm": []}
    try:
        for k in range(repeats):
            window = MainWindow(config, None, device_choices=None)
            window.resize(1600, 1000)
            window.show()
            window.attach_backend(store, EventHub())
            wait(app, lambda: window.model.rowCount() == 1)
            out["embedded"].append(first_image(app, window, study_uid))
            window.shutdown()
            remote = RemoteService(service.url, token, root / f"ct-cache-{time.time_ns()}")  # empty cache
            remote.start()
            window = MainWindow(config, None, device_choices=None)
            window.resize(1600, 1000)
            window.show()
            window.attach_backend(remote.store, remote.hub, worklist=remote.worklist)
            wait(app, lambda: window.model.rowCount() == 1)
            out["attached_cold"].append(first_image(app, window, study_uid))
            out["attached_warm"].append(first_image(app, window, study_uid))
            window.shutdown()
            remote.stop()
    finally:
        service.stop()
        store.close()
    return out


def _models(service):
    from ui.status_bar import to_model_states

    return to_model_states(service.models_status())


def main() -> int:
    ap = argparse.ArgumentParser()
    ap.add_argument("--studies", type=int, default=10_000)
    ap.add_argument("--sends", type=int, default=50)
    ap.add_argument("--repeats", type=int, default=3)
    ap.add_argument("--data", type=Path, help="keep data here (the 10,000-study store is reused)")
    ap.add_argument("--slices", type=int, default=300)
    ap.add_argument("--skip", choices=["worklist", "e2e", "ct"], action="append", default=[])
    args = ap.parse_args()
    root = args.data or Path(tempfile.mkdtemp(prefix="firstlook-attach-"))
    root.mkdir(parents=True, exist_ok=True)
    app = QApplication.instance() or QApplication(sys.argv[:1])
    if "worklist" not in args.skip:
        figures = bench_worklist(app, root, args.studies, args.repeats)
        print(f"worklist of {args.studies} studies, attach -> all rows painted (s), {args.repeats} alternated runs:")
        for name, values in figures.items():
            print(f"  {name:9} median {statistics.median(values):.3f}  runs {', '.join(f'{v:.3f}' for v in values)}")
        ratio = statistics.median(figures["attached"]) / statistics.median(figures["embedded"])
        print(f"  attached / embedded: {ratio:.2f}x")
    if "ct" not in args.skip:
        figures = bench_ct(app, root, args.slices, args.repeats)
        print(f"{args.slices}-slice 512x512 CT, open -> first image (s), {args.repeats} runs:")
        for name, values in figures.items():
            print(f"  {name:13} median {statistics.median(values):.3f}  runs {', '.join(f'{v:.3f}' for v in values)}")
    if "e2e" not in args.skip:
        figures = bench_e2e(app, root, args.sends, packs_path())
        print(f"storescu chest radiograph -> row with result in the desktop, {args.sends} sends each (s):")
        for name, values in figures.items():
            print(f"  {name:9} p50 {pct(values, 0.5):.3f}  p95 {pct(values, 0.95):.3f}  "
                  f"min {min(values):.3f}  max {max(values):.3f}")
        ratio = pct(figures["attached"], 0.5) / pct(figures["embedded"], 0.5)
        print(f"  attached / embedded p50: {ratio:.2f}x")
    return 0


if __name__ == "__main__":
    sys.exit(main())
