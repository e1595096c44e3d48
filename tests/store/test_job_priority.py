"""Clinical dispatch order under backlog (app/core/store/job_priority.py): the calling AE's level
from the config and the Priority a modality puts in its C-STORE requests, for the local backend."""

from __future__ import annotations

from pathlib import Path

import pydicom
from pynetdicom import AE

from app.core.config import Config
from app.core.events import AnalysisStarted, EventHub, InstanceStored
from app.core.pipeline import Pipeline
from app.core.store import StudyStore
from app.core.synthetic_dicom import synthetic_cxr, synthetic_head_ct
from app.core.store.job_priority import from_dimse, rank
from tests.support.node_helpers import start_node, stop_node
from tests.support.toy_model import TOY, build_toy_pack, mr_series, specs_with_toy


def _store(store: StudyStore, paths: list[Path], ae: str) -> str:
    uid = ""
    for path in paths:
        uid = store.store_instance(path.read_bytes(), ae).header.series_uid
    store.enqueue_job(uid)
    return uid


def test_an_emergency_ct_queued_behind_20_routine_films_is_dispatched_first(tmp_path: Path) -> None:
    store = StudyStore(tmp_path / "data", min_free_bytes=0)
    films = [_store(store, [synthetic_cxr(tmp_path / f"film{i}", size=64, seed=i)], "WARD_DX") for i in range(20)]
    ct = _store(store, synthetic_head_ct(tmp_path / "ct", n_slices=4, size=32), "ED_CT")
    # Without a configured level the queue is first come, first served: the CT would wait for 20 films.
    first = store.claim_job(None, {})
    assert first is not None and first.series_uid == films[0]
    store.jobs.requeue_interrupted()
    order = []
    while (job := store.claim_job(None, {"ED_CT": "high", "WARD_DX": "medium"})) is not None:
        order.append(job.series_uid)
    assert order == [ct, *films]  # the emergency CT first, then the films in arrival order
    store.close()


def test_levels_rank_as_dicom_names_them() -> None:
    assert [from_dimse(v) for v in (0, 1, 2, None, "x")] == [None, "high", "low", None, None]
    levels = {"ED_CT": "high", "CLINIC": "low"}
    assert rank("ED_CT", None, levels) < rank("OTHER", None, levels) < rank("CLINIC", None, levels)
    assert rank("CLINIC", "high", levels) == rank("ED_CT", None, levels)  # the request can only raise it


def test_a_high_priority_c_store_starts_first_in_the_pipeline(tmp_path: Path) -> None:
    """A real association sends three routine MR series, then one with C-STORE Priority HIGH; the
    real pipeline (toy model, one worker draining the backlog) starts the HIGH one first."""
    node = start_node(tmp_path / "data")
    seen: list[InstanceStored] = []
    node.hub.subscribe(lambda e: isinstance(e, InstanceStored) and seen.append(e))
    node.hub.subscribe(lambda e: isinstance(e, InstanceStored) and node.store.raise_job_priority(e.series_uid, e.priority))
    routine = [mr_series(tmp_path / "in", "MR", bright=False, patient=f"R{i}") for i in range(3)]
    urgent = mr_series(tmp_path / "in", "MR", bright=True, patient="URGENT")
    ae = AE(ae_title="MODALITY")
    ae.add_requested_context("1.2.840.10008.5.1.4.1.1.4")  # MR Image Storage
    assoc = ae.associate("127.0.0.1", node.port, ae_title=node.ae)
    assert assoc.is_established
    for paths, _ in routine:
        for p in paths:
            assert assoc.send_c_store(pydicom.dcmread(p), priority=0).Status == 0
    for p in urgent[0]:
        assert assoc.send_c_store(pydicom.dcmread(p), priority=1).Status == 0
    assoc.release()
    assert node.wait_for(lambda: len(seen) == 16)
    assert {e.priority for e in seen if e.series_uid == urgent[1]} == {"high"}
    assert {e.priority for e in seen if e.series_uid != urgent[1]} == {None}
    for _, series in [*routine, urgent]:  # the readiness tracker's job, done here in arrival order
        node.store.enqueue_job(series)
    packs = tmp_path / "packs"
    build_toy_pack(packs)
    config = Config(data_dir=tmp_path / "data", cache_dir=tmp_path / "cache", packs_dir=packs, min_free_mb=0)
    hub = EventHub()
    started: list[str] = []
    hub.subscribe(lambda e: isinstance(e, AnalysisStarted) and started.append(e.series_uid))
    pipeline = Pipeline(config, node.store, hub, specs=specs_with_toy())
    pipeline.models.load()
    pipeline.run_until_idle()
    assert started == [urgent[1], *(s for _, s in routine)]
    assert node.store.get_result(urgent[1]).model == TOY
    stop_node(node)


def test_a_requested_priority_survives_a_restart_and_is_cleared_when_done(tmp_path: Path) -> None:
    """The C-STORE Priority is kept with the job (schema 5): after a restart the HIGH series
    queued behind routine ones is still dispatched first; once analysed, a re-queue is routine."""
    store = StudyStore(tmp_path / "data", min_free_bytes=0)
    films = [_store(store, [synthetic_cxr(tmp_path / f"film{i}", size=64, seed=i)], "WARD_DX") for i in range(3)]
    paths = synthetic_head_ct(tmp_path / "ct", n_slices=4, size=32)
    ct = ""
    for path in paths:
        ct = store.store_instance(path.read_bytes(), "CT01").header.series_uid
        store.raise_job_priority(ct, "high")  # before the job exists: remembered, then written with it
    store.enqueue_job(ct)
    late = _store(store, [synthetic_cxr(tmp_path / "late", size=64, seed=9)], "WARD_DX")
    store.raise_job_priority(late, "low")
    store.close()

    store = StudyStore(tmp_path / "data", min_free_bytes=0)  # a restart: nothing in memory
    order = []
    while (job := store.claim_job(None, {})) is not None:
        order.append(job.series_uid)
        store.jobs.finish(job.series_uid)
    assert order == [ct, *films, late]
    assert store.index.conn().execute("SELECT requested_priority FROM jobs WHERE series_uid=?",
                                      (ct,)).fetchone()[0] is None
    store.close()
