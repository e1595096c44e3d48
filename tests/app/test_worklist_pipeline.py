"""Worklist order and the pipeline's persistent queue, on a real store with real DICOM files."""

from __future__ import annotations

import time
from dataclasses import replace
from pathlib import Path

import numpy as np

from app.core.config import Config
from app.core.events import EventHub, ResultStored
from app.core.pipeline import Pipeline
from app.core.results import AnalysisResult
from app.core.store import StudyStore
from app.core.worklist import build_rows
from tests.support.dicom_factory import make_ct_slice, make_cxr_dataset, write

PNGS = ["images/00000129_000.png", "images/00000211_000.png", "images/00000284_000.png"]


def _store_cxr(store: StudyStore, png: Path, tmp: Path, **kw) -> str:
    path = write(make_cxr_dataset(png, **kw), tmp)
    return store.store_instance(path.read_bytes(), "TESTSCU").header.series_uid


def _result(store: StudyStore, series_uid: str, priority: str, validated: bool = True) -> None:
    series = store.get_series(series_uid)
    store.save_result(AnalysisResult(series_uid=series_uid, study_uid=series.study_uid, status="done",
                                     priority=priority, validated=validated, summary=priority,
                                     timings={"arrival_to_result": 1.0}))


def test_worklist_orders_by_priority_then_arrival(data_dir: Path, cxr_dir: Path, tmp_path: Path) -> None:
    store = StudyStore(data_dir)
    uids = [_store_cxr(store, cxr_dir / png, tmp_path) for png in PNGS]
    time.sleep(0.01)
    rows = build_rows(store)
    assert [r.status for r in rows] == ["new"] * 3
    assert [r.study_uid for r in rows] == [store.get_series(u).study_uid for u in uids]  # oldest first
    _result(store, uids[0], "routine")
    _result(store, uids[2], "critical")
    store.enqueue_job(uids[1])
    rows = build_rows(store)
    assert [r.priority for r in rows] == ["critical", "analysing", "routine"]
    assert rows[0].status == "ready" and rows[1].status == "analysing"
    store.set_reviewed(rows[0].study_uid)
    assert build_rows(store)[0].status == "reviewed"


def test_unvalidated_result_is_marked_in_the_worklist(data_dir: Path, cxr_dir: Path, tmp_path: Path) -> None:
    store = StudyStore(data_dir)
    uid = _store_cxr(store, cxr_dir / PNGS[0], tmp_path)
    _result(store, uid, "routine", validated=False)
    assert build_rows(store)[0].validated is False


def _config(data_dir: Path, packs_dir: Path) -> Config:
    return replace(Config(), data_dir=data_dir, packs_dir=packs_dir, cache_dir=data_dir.parent / "cache")


def test_pipeline_not_analysed_and_unavailable_model_paths(data_dir: Path, cxr_dir: Path, tmp_path: Path) -> None:
    """Without model packs: an MR is not analysed, a chest film fails with a clear reason."""
    store = StudyStore(data_dir)
    mr = make_ct_slice(np.zeros((16, 16), np.int16), (0, 0, 0), modality="MR")
    mr_series = store.store_instance(write(mr, tmp_path / "mr").read_bytes()).header.series_uid
    lateral = _store_cxr(store, cxr_dir / PNGS[0], tmp_path / "lat", view="LL")
    frontal = _store_cxr(store, cxr_dir / PNGS[1], tmp_path / "pa")
    for uid in (mr_series, lateral, frontal):
        store.enqueue_job(uid)
    hub = EventHub()
    seen: list[ResultStored] = []
    hub.subscribe(lambda e: seen.append(e) if isinstance(e, ResultStored) else None)
    pipeline = Pipeline(_config(data_dir, tmp_path / "no-packs"), store, hub)
    pipeline.models.load()
    pipeline.run_until_idle()
    assert store.get_result(mr_series).summary == "not analysed: no model for MR images"
    assert "lateral" in store.get_result(lateral).reason
    failed = store.get_result(frontal)
    assert failed.status == "failed" and failed.priority == "failed"
    assert "chexnet unavailable" in failed.reason and "build-models" in failed.reason
    assert {e.series_uid for e in seen} == {mr_series, lateral, frontal}
    assert store.pending_jobs() == 0


def test_interrupted_job_is_rerun_once_after_restart(data_dir: Path, tmp_path: Path) -> None:
    store = StudyStore(data_dir)
    mr = make_ct_slice(np.zeros((16, 16), np.int16), (0, 0, 0), modality="MR")
    series_uid = store.store_instance(write(mr, tmp_path).read_bytes()).header.series_uid
    store.enqueue_job(series_uid)
    assert store.claim_job().series_uid == series_uid  # then the process "dies"
    store.close()
    store = StudyStore(data_dir)                         # restart
    pipeline = Pipeline(_config(data_dir, tmp_path / "no-packs"), store, EventHub())
    assert store.requeue_interrupted_jobs() == 1
    pipeline.models.load()
    pipeline.run_until_idle()
    pipeline.run_until_idle()
    assert len(store.all_results()) == 1
    assert store.job_state(series_uid) == "done"
    # Re-announcing the same unchanged series does not analyse it again.
    assert store.enqueue_job(series_uid) is False


def test_job_that_keeps_crashing_is_given_up(data_dir: Path, tmp_path: Path) -> None:
    store = StudyStore(data_dir)
    mr = make_ct_slice(np.zeros((16, 16), np.int16), (0, 0, 0), modality="MR")
    series_uid = store.store_instance(write(mr, tmp_path).read_bytes()).header.series_uid
    store.enqueue_job(series_uid)
    for _ in range(3):  # three crashes mid-analysis
        store.claim_job()
        store.requeue_interrupted_jobs()
    pipeline = Pipeline(_config(data_dir, tmp_path / "no-packs"), store, EventHub())
    pipeline.models.load()
    pipeline.run_until_idle()
    result = store.get_result(series_uid)
    assert result.status == "failed" and "given up" in result.reason


def test_lanes_keep_radiographs_from_waiting_behind_a_ct(data_dir: Path, cxr_dir: Path, tmp_path: Path) -> None:
    store = StudyStore(data_dir)
    ct = make_ct_slice(np.zeros((16, 16), np.int16), (0, 0, 0))
    ct_series = store.store_instance(write(ct, tmp_path / "ct").read_bytes()).header.series_uid
    cxr_series = _store_cxr(store, cxr_dir / PNGS[0], tmp_path / "cxr")
    store.enqueue_job(ct_series)       # older
    store.enqueue_job(cxr_series)
    assert store.claim_job("image").series_uid == cxr_series
    assert store.claim_job("image") is None
    assert store.claim_job("volume").series_uid == ct_series


def test_running_pipeline_drains_both_lanes(data_dir: Path, cxr_dir: Path, tmp_path: Path) -> None:
    store = StudyStore(data_dir)
    ct = make_ct_slice(np.zeros((16, 16), np.int16), (0, 0, 0))
    ct_series = store.store_instance(write(ct, tmp_path / "ct").read_bytes()).header.series_uid
    mr = make_ct_slice(np.zeros((16, 16), np.int16), (0, 0, 0), modality="MR")
    mr_series = store.store_instance(write(mr, tmp_path / "mr").read_bytes()).header.series_uid
    cxr_series = _store_cxr(store, cxr_dir / PNGS[0], tmp_path / "cxr", view="LL")
    hub = EventHub()
    pipeline = Pipeline(_config(data_dir, tmp_path / "no-packs"), store, hub)
    pipeline.start()
    try:
        for uid in (ct_series, mr_series, cxr_series):
            store.enqueue_job(uid)
            pipeline.submit(uid)
        deadline = time.time() + 60
        while store.pending_jobs() and time.time() < deadline:
            time.sleep(0.05)
    finally:
        pipeline.stop()
    assert {r.series_uid for r in store.all_results()} == {ct_series, mr_series, cxr_series}
    assert "blast-ct unavailable" in store.get_result(ct_series).reason
    assert store.get_result(mr_series).status == "not_analysed"
    assert "lateral" in store.get_result(cxr_series).reason
