"""Make the README screenshots from real data, under Xvfb:

    xvfb-run -a -s "-screen 0 1600x1000x24" python3 docs/screenshots/make_screenshots.py

Studies: NIH chest radiographs and the gantry-tilted GE head CT from ../shared (copied into
a temporary data dir through StudyStore, never into the repository), analysed by the real
pipeline with the built model packs. Two things are staged and say so on screen:
  * rows with patient names DEMO^... carry hand-written results (model "screenshot-demo"),
    because an unvalidated pack never raises priority, so the real packs alone would give
    a worklist of routine rows only;
  * when the BLAST-CT pack is not built, the head CT gets a hand-drawn label volume
    (model "screenshot-demo", summary "DEMO overlay") so the overlay rendering can be seen.
"""

from __future__ import annotations

import logging
import os
import sys
import tempfile
import time
from dataclasses import replace
from pathlib import Path

REPO = Path(__file__).resolve().parents[2]
sys.path.insert(0, str(REPO))

import numpy as np  # noqa: E402
from PySide6.QtWidgets import QApplication  # noqa: E402

from app.core.config import Config  # noqa: E402
from app.core.model_registry import ModelRegistry  # noqa: E402
from app.core.events import EventHub  # noqa: E402
from app.core.results import AnalysisResult
from app.core.store import StudyStore  # noqa: E402
from tests.support import ui_data  # noqa: E402
from tests.support.dicom_factory import make_cxr_dataset  # noqa: E402
from ui.viewing.image_loader import read_series_geometry  # noqa: E402
from ui.main_window import MainWindow  # noqa: E402

OUT = Path(__file__).resolve().parent
SHARED = Path(os.environ.get("FIRSTLOOK_SHARED", REPO.parent / "shared"))
PACKS = Path(os.environ.get("FIRSTLOOK_PACKS", REPO / "build" / "model-packs"))
log = logging.getLogger("screenshots")


def wait(app: QApplication, condition, timeout: float = 60.0) -> None:
    end = time.time() + timeout
    while not condition():
        if time.time() > end:
            raise TimeoutError("screenshot state not reached")
        app.processEvents()
        time.sleep(0.01)


def settle(app: QApplication, seconds: float = 0.4) -> None:
    end = time.time() + seconds
    while time.time() < end:
        app.processEvents()
        time.sleep(0.01)


def store_headct(store: StudyStore, received_at: float) -> str:
    folder = SHARED / "data" / "headct" / "dcm_qa_ct_GE_HiSpeed_head" / "dicom"
    series = ""
    for path in sorted(folder.glob("*.dcm")):
        series = store.store_instance(path.read_bytes(), calling_ae="CT01", received_at=received_at).header.series_uid
    return series


def analyse(config: Config, store: StudyStore, series_uids: list[str]) -> ModelRegistry:
    """The real pipeline, run to completion on this thread (as `firstlook analyze` does)."""
    from app.core.pipeline import Pipeline

    for uid in series_uids:
        store.mark_series_ready(uid)
        store.enqueue_job(uid)
    models = ModelRegistry(config)
    models.load()
    Pipeline(config, store, EventHub(), models=models).run_until_idle()
    return models


def demo_ct_overlay(store: StudyStore, series_uid: str) -> None:
    """Only when no BLAST-CT result exists: a hand-drawn label volume, labelled as a demo."""
    geometry = read_series_geometry(store.series_files(series_uid))
    n, rows, cols = geometry.n_slices, geometry.rows, geometry.cols
    yy, xx = np.mgrid[0:rows, 0:cols]
    labels = np.zeros((n, rows, cols), np.uint8)
    for k in range(n // 2 - 3, n // 2 + 3):
        grow = 1.0 - abs(k - n // 2) / 4
        labels[k][((yy - 220) / 38) ** 2 + ((xx - 330) / 28) ** 2 < grow] = 1             # IPH
        ring = ((yy - 220) / 52) ** 2 + ((xx - 330) / 42) ** 2 < grow
        labels[k][ring & (labels[k] == 0)] = 3                                          # oedema
        labels[k][((yy - 260) / 10) ** 2 + ((xx - 240) / 16) ** 2 < grow] = 4           # IVH
    sops = [s.sop_uid for s in geometry.slices]
    series = store.get_series(series_uid)
    assert series is not None
    stored = ui_data.Stored(series.study_uid, series_uid, sops)
    result = ui_data.save_blastct(store, stored, labels, "urgent", validated=False)
    result.model = "screenshot-demo"
    result.summary = "DEMO overlay (BLAST-CT pack not built): " + result.summary.split(": ", 1)[-1]
    store.save_result(result)


def demo_result(store: StudyStore, stored: ui_data.Stored, priority: str, summary: str) -> None:
    store.save_result(AnalysisResult(
        series_uid=stored.series_uid, study_uid=stored.study_uid, status="done", priority=priority,
        model="screenshot-demo", validated=True, summary=summary + " (demo result)",
        timings={"arrival_to_result": 38.0}))


def build(root: Path) -> tuple[Config, StudyStore, ModelRegistry, dict[str, str]]:
    config = replace(Config(), data_dir=root / "data", cache_dir=root / "cache", packs_dir=PACKS)
    store = StudyStore(config.data_dir)
    pngs = sorted((SHARED / "data" / "cxr" / "images").glob("*.png"))
    now = time.time()
    real = [ui_data.add_cxr(store, pngs[i], name, received_at=now - 400 + 30 * i)
            for i, name in enumerate(("SMITH^ANNA", "OKAFOR^CHIDI", "LINDQVIST^EVA", "NGUYEN^BAO"))]
    lateral = make_cxr_dataset(pngs[5], view="LL", patient_name="MORALES^LUIS")
    store.store_instance(ui_data.encode(lateral), calling_ae="CR01", received_at=now - 250)
    ct_series = store_headct(store, now - 200)
    models = analyse(config, store, [s.series_uid for s in real] + [str(lateral.SeriesInstanceUID), ct_series])
    ct = store.get_result(ct_series)
    if ct is None or ct.status != "done":
        log.warning("no BLAST-CT result (%s); drawing a demo overlay", ct.reason if ct else "no result")
        demo_ct_overlay(store, ct_series)
    demo_result(store, ui_data.add_cxr(store, pngs[6], "DEMO^CRITICAL", received_at=now - 150), "critical",
                "Pneumothorax 0.91")
    demo_result(store, ui_data.add_cxr(store, pngs[7], "DEMO^URGENT", received_at=now - 140), "urgent",
                "Effusion 0.74, Cardiomegaly 0.66")
    waiting = ui_data.add_cxr(store, pngs[8], "PATEL^RAVI", received_at=now - 60)
    store.mark_series_ready(waiting.series_uid)
    store.enqueue_job(waiting.series_uid)                    # shows as "analysing"
    ui_data.add_cxr(store, pngs[9], "KOWALSKI^JAN", received_at=now - 20)   # just arrived: "new"
    store.set_reviewed(real[3].study_uid)
    return config, store, models, {"cxr": real[0].study_uid, "ct": store.get_series(ct_series).study_uid}


def main() -> int:
    logging.basicConfig(level=logging.INFO, format="%(levelname)s %(name)s: %(message)s")
    app = QApplication.instance() or QApplication(sys.argv[:1])
    with tempfile.TemporaryDirectory(prefix="firstlook-shots-") as tmp:
        config, store, models, studies = build(Path(tmp))
        window = MainWindow(config, None, device_choices=None)
        window.resize(1500, 900)
        window.show()
        window.attach_backend(store, EventHub(), models.status)
        window.status.set_node(True, f"{config.ae_title} on {config.bind}:{config.port}")
        wait(app, lambda: window.model.rowCount() >= 10)
        settle(app)
        window.grab().save(str(OUT / "worklist.png"))

        window.open_study(studies["cxr"])
        viewer = window.viewer
        wait(app, lambda: viewer.rendered is not None and viewer.opened is not None)
        viewer.opacity.setValue(55)
        settle(app)
        window.grab().save(str(OUT / "viewer_cxr_heatmap.png"))

        window.open_study(studies["ct"])
        wait(app, lambda: viewer.opened is not None and viewer.opened.labels is not None and viewer.rendered is not None)
        viewer.apply_preset("Brain")
        viewer.jump_to_max()
        settle(app)
        window.grab().save(str(OUT / "viewer_headct_overlay.png"))
        viewer.mode_combo.setCurrentText("outline")
        settle(app)
        window.grab().save(str(OUT / "viewer_headct_outline.png"))
        window.shutdown()
        store.close()
    for name in ("worklist.png", "viewer_cxr_heatmap.png", "viewer_headct_overlay.png", "viewer_headct_outline.png"):
        log.info("wrote %s", OUT / name)
    return 0


if __name__ == "__main__":
    sys.exit(main())
