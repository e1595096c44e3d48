"""Recovery after a crash, piece by piece (the end-to-end SIGKILL harness is test_crash_consistency.py)."""

from __future__ import annotations

import os
import time
from dataclasses import replace
from pathlib import Path

import numpy as np
from pydicom.uid import generate_uid

from app.core.config import Config
from app.core.crashpoints import ENV, crash_point
from app.core.events import EventHub
from app.core.pipeline import Pipeline
from app.service import Service
from app.core.store import StudyStore
from tests.support import free_port
from tests.support.dicom_factory import make_ct_slice, write


def _slices(tmp: Path, n: int, series: str | None = None, study: str | None = None, modality: str = "MR") -> list[bytes]:
    study, series = study or generate_uid(), series or generate_uid()
    return [write(make_ct_slice(np.zeros((16, 16), np.int16), (0, 0, float(i)), instance=i + 1, study_uid=study,
                                series_uid=series, modality=modality), tmp).read_bytes() for i in range(n)]


def test_instances_arriving_during_analysis_are_analysed_after_it(data_dir: Path, tmp_path: Path) -> None:
    """Before the fix a series that grew while its job ran was marked done with the old count
    and the new instances were never analysed."""
    store = StudyStore(data_dir)
    first, second = _slices(tmp_path / "a", 2), None
    series = store.store_instance(first[0]).header.series_uid
    study = store.get_series(series).study_uid
    assert store.enqueue_job(series)
    job = store.claim_job()
    assert job is not None and job.instance_count == 1
    second = _slices(tmp_path / "b", 1, series=series, study=study)[0]
    store.store_instance(second)                  # arrives while the job runs
    assert store.enqueue_job(series) is True      # ready again: noted on the running job
    store.finish_job(series, job.instance_count)
    assert store.job_state(series) == "pending"   # not 'done': the new instance is still unseen
    again = store.claim_job()
    assert again is not None and again.instance_count == 2 and again.attempts == 1
    store.finish_job(series, again.instance_count)
    assert store.job_state(series) == "done"
    assert store.enqueue_job(series) is False


def test_series_whose_readiness_died_with_the_process_is_analysed_after_restart(data_dir: Path, tmp_path: Path) -> None:
    """Instances stored, then SIGKILL before the release/quiet period made the series ready:
    nothing in the database said 'ready', so before the fix it was never analysed."""
    store = StudyStore(data_dir)
    for data in _slices(tmp_path, 3):
        stored = store.store_instance(data)
    series = stored.header.series_uid
    store.close()
    (data_dir / "service.running").write_text("1\n")  # the crashed run's marker
    config = Config(data_dir=data_dir, cache_dir=tmp_path / "cache", packs_dir=tmp_path / "no-packs",
                    port=free_port(), quiet_period_s=0.3, min_free_mb=0).validate()
    service = Service(config)
    assert service.store.series_needing_analysis() == [(stored.header.study_uid, series)]
    assert service.start()
    try:
        end = time.monotonic() + 20
        while service.store.get_result(series) is None and time.monotonic() < end:
            time.sleep(0.05)
        result = service.store.get_result(series)
        assert result is not None and result.status == "not_analysed"  # MR: no model, with a reason
        assert service.store.job_state(series) == "done"
        assert service.store.series_needing_analysis() == []
    finally:
        service.stop()


def test_overlay_is_written_atomically_and_tmp_cleared(data_dir: Path, tmp_path: Path) -> None:
    from app.core.series_analysis import save_npz_atomically

    store = StudyStore(data_dir)
    target = store.result_overlay_dir("1.2.3") / "cam.npz"
    save_npz_atomically(store, target, cam=np.zeros((2, 4, 4), np.uint8))
    assert np.load(target)["cam"].shape == (2, 4, 4)
    assert list(store.tmp_dir.iterdir()) == []
    (store.tmp_dir / "dead.part").write_bytes(b"half an overlay")  # a crash mid-write
    store.close()
    assert list(StudyStore(data_dir).tmp_dir.iterdir()) == []


def test_crash_points_do_nothing_unless_asked(monkeypatch) -> None:
    monkeypatch.delenv(ENV, raising=False)
    crash_point("after-rename")
    monkeypatch.setenv(ENV, "after-rename:0")
    crash_point("after-rename")
    pid = os.fork()
    if pid == 0:  # child: asked to die at this point, it must SIGKILL itself
        os.environ[ENV] = "mid-analysis:1"
        crash_point("mid-analysis")
        os._exit(0)
    _, status = os.waitpid(pid, 0)
    assert os.WIFSIGNALED(status) and os.WTERMSIG(status) == 9


def test_pipeline_requeues_a_grown_series(data_dir: Path, tmp_path: Path) -> None:
    """Through the real pipeline: the instance count at claim time is what finish_job checks."""
    store = StudyStore(data_dir)
    data = _slices(tmp_path, 2)
    series = store.store_instance(data[0]).header.series_uid
    store.enqueue_job(series)
    config = replace(Config(), data_dir=data_dir, packs_dir=tmp_path / "no-packs", cache_dir=tmp_path / "c")
    pipeline = Pipeline(config, store, EventHub())
    pipeline.models.load()
    job = store.claim_job()
    store.store_instance(data[1])
    store.enqueue_job(series)
    pipeline._process(job)
    assert store.job_state(series) == "pending"
    pipeline.run_until_idle()
    assert store.job_state(series) == "done" and len(store.all_results()) == 1


def test_worker_survives_a_job_whose_result_cannot_be_saved(data_dir: Path, tmp_path: Path, monkeypatch) -> None:
    """An exception while recording a result (e.g. disk full) ended the worker thread: every
    later series waited forever. Now the worker logs it and takes the next job."""
    import sqlite3

    store = StudyStore(data_dir)
    first = store.store_instance(_slices(tmp_path / "a", 1)[0]).header.series_uid
    second = store.store_instance(_slices(tmp_path / "b", 1)[0]).header.series_uid
    store.enqueue_job(first)
    config = replace(Config(), data_dir=data_dir, packs_dir=tmp_path / "no-packs", cache_dir=tmp_path / "c")
    pipeline = Pipeline(config, store, EventHub())
    real_save = store.save_result

    def save(result, also=None):  # type: ignore[no-untyped-def]
        if result.series_uid == first:
            raise sqlite3.OperationalError("database or disk is full")
        real_save(result, also)

    monkeypatch.setattr(store, "save_result", save)
    pipeline.start()
    try:
        end = time.monotonic() + 20
        while store.job_state(first) != "running" and time.monotonic() < end:
            time.sleep(0.05)
        time.sleep(0.3)
        store.enqueue_job(second)
        pipeline.submit(second)
        while store.get_result(second) is None and time.monotonic() < end:
            time.sleep(0.05)
        assert store.get_result(second) is not None
        assert store.get_result(first) is None and store.job_state(first) == "running"  # re-queued at next start
    finally:
        pipeline.stop()


def _crash_while_replacing(data_dir: Path, first: bytes, second: bytes, point: str) -> None:
    """Store ``first``, then die (SIGKILL) at ``point`` while ``second`` replaces it."""
    pid = os.fork()
    if pid == 0:
        try:
            store = StudyStore(data_dir)
            store.store_instance(first)
            os.environ[ENV] = f"{point}:1"
            store.store_instance(second)
        finally:
            os._exit(3)  # not reached when the crash point fires
    _, status = os.waitpid(pid, 0)
    assert os.WIFSIGNALED(status) and os.WTERMSIG(status) == 9


def _two_versions(tmp_path: Path) -> tuple[bytes, bytes, object]:
    ds = make_ct_slice(np.zeros((16, 16), np.int16), (0, 0, 0))
    first = write(ds, tmp_path / "v1").read_bytes()
    ds.SeriesDescription = "corrected"
    return first, write(ds, tmp_path / "v2").read_bytes(), ds


def test_replacement_interrupted_after_the_rename_is_completed_at_start(data_dir: Path, tmp_path: Path) -> None:
    """Crash after the new version was renamed in, before the index commit: the index still had
    the old hash (verify() failed) and nothing recorded the replacement."""
    import hashlib

    first, second, ds = _two_versions(tmp_path)
    _crash_while_replacing(data_dir, first, second, "after-rename")
    store = StudyStore(data_dir)
    target = store.studies_dir / ds.StudyInstanceUID / ds.SeriesInstanceUID / f"{ds.SOPInstanceUID}.dcm"
    assert target.read_bytes() == second
    assert store.verify() != []  # the state the crash left
    assert store.reconcile_superseded() == 1
    assert store.verify() == []
    (rep,) = store.replacements()
    assert rep["old_sha256"] == hashlib.sha256(first).hexdigest()
    assert rep["new_sha256"] == hashlib.sha256(second).hexdigest()
    assert (data_dir / rep["superseded_path"]).read_bytes() == first  # the old version kept
    assert store.reconcile_superseded() == 0


def test_replacement_interrupted_before_the_rename_leaves_the_old_version(data_dir: Path, tmp_path: Path) -> None:
    """Crash after the old version was linked into superseded/, before the rename: before the
    fix a replacements row (committed on its own) claimed a replacement that never happened."""
    first, second, ds = _two_versions(tmp_path)
    _crash_while_replacing(data_dir, first, second, "after-link")
    store = StudyStore(data_dir)
    assert store.replacements() == []
    assert len(list(store.superseded_dir.iterdir())) == 1
    assert store.reconcile_superseded() == 1
    assert list(store.superseded_dir.iterdir()) == []  # the extra name of the current bytes
    assert store.verify() == []
    target = store.studies_dir / ds.StudyInstanceUID / ds.SeriesInstanceUID / f"{ds.SOPInstanceUID}.dcm"
    assert target.read_bytes() == first
    assert store.store_instance(second).outcome == "replaced"  # the sender re-sends it
    assert len(store.replacements()) == 1 and store.verify() == []


def test_a_corrected_instance_is_analysed_again(data_dir: Path, tmp_path: Path) -> None:
    """A replaced instance (same count, different bytes) was never re-analysed: enqueue_job only
    compared instance counts, so the result kept describing the superseded version."""
    first, second, _ = _two_versions(tmp_path)
    store = StudyStore(data_dir)
    series = store.store_instance(first).header.series_uid
    assert store.enqueue_job(series)
    job = store.claim_job()
    store.finish_job(series, job.instance_count, job.enqueued_at)
    assert store.job_state(series) == "done"
    store.store_instance(first)                    # an identical re-send changes nothing
    assert store.enqueue_job(series) is False
    time.sleep(0.01)
    assert store.store_instance(second).outcome == "replaced"
    assert store.enqueue_job(series) is True       # the corrected version is analysed
    assert store.job_state(series) == "pending"


def test_a_correction_arriving_during_analysis_requeues_the_job(data_dir: Path, tmp_path: Path) -> None:
    first, second, _ = _two_versions(tmp_path)
    store = StudyStore(data_dir)
    series = store.store_instance(first).header.series_uid
    store.enqueue_job(series)
    job = store.claim_job()
    time.sleep(0.01)
    store.store_instance(second)                   # replaced while the job runs
    assert store.enqueue_job(series) is True
    store.finish_job(series, job.instance_count, job.enqueued_at)
    assert store.job_state(series) == "pending"
    again = store.claim_job()
    store.finish_job(series, again.instance_count, again.enqueued_at)
    assert store.job_state(series) == "done" and store.series_needing_analysis() == []


def test_instance_moved_to_another_series_interrupted_is_completed(data_dir: Path, tmp_path: Path) -> None:
    """Same SOP Instance UID re-sent under another series, crash after the new name was renamed
    in: adopting the new name left the old one on disk and unindexed (verify() failed)."""
    ds = make_ct_slice(np.zeros((16, 16), np.int16), (0, 0, 0))
    first = write(ds, tmp_path / "v1").read_bytes()
    old_series = ds.SeriesInstanceUID
    ds.SeriesInstanceUID = "1.2.826.0.1.3680043.10.1234.77"
    second = write(ds, tmp_path / "v2").read_bytes()
    _crash_while_replacing(data_dir, first, second, "after-rename")
    store = StudyStore(data_dir)
    assert store.adopt_unindexed() == 1
    assert store.verify() != []  # the old name is still there, no longer indexed
    assert store.reconcile_superseded() == 1
    assert store.verify() == []
    assert not (store.studies_dir / ds.StudyInstanceUID / old_series / f"{ds.SOPInstanceUID}.dcm").exists()
    (rep,) = store.replacements()
    assert (data_dir / rep["superseded_path"]).read_bytes() == first
