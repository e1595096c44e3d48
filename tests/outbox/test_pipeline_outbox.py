"""The pipeline and the outbox together (the toy MR model: real analysis, fast): a result's objects
are queued with it and sent; a corrected instance re-analyses the series and sends version 2 in new
series that names what it supersedes; a result an urgent-only destination does not take sends
nothing there."""

from __future__ import annotations

import time
from pathlib import Path

import pydicom

from app.core.audit import AuditLog
from app.core.config import Config
from app.core.destinations import Destination
from app.core.events import EventHub
from app.core.outbox.result_outbox import ResultOutbox
from app.core.outbox.worker import OutboxWorker
from app.core.pipeline import Pipeline
from app.core.store import StudyStore
from dicom_node.sender import StoreSender
from tests.support.outbox_helpers import RecordingSCP, StandInBuilder
from tests.support.toy_model import build_toy_pack, mr_series, specs_with_toy, store_series


def _settled(store: StudyStore, timeout: float = 30) -> None:
    end = time.monotonic() + timeout
    while time.monotonic() < end:
        if {r["state"] for r in store.outbox.rows()} <= {"sent", "superseded"}:
            return
        time.sleep(0.05)
    raise AssertionError(store.outbox.rows())


def test_results_are_sent_and_a_corrected_instance_sends_a_new_version(tmp_path: Path) -> None:
    specs = specs_with_toy()
    build_toy_pack(tmp_path / "packs")
    pacs, urgent_only = RecordingSCP("PACS").start(), RecordingSCP("URGENT").start()
    destinations = [Destination("pacs", "PACS", "127.0.0.1", pacs.port),
                    Destination("urgent", "URGENT", "127.0.0.1", urgent_only.port, when="urgent")]
    config = Config(data_dir=tmp_path / "data", cache_dir=tmp_path / "cache", packs_dir=tmp_path / "packs",
                    min_free_mb=0, destinations=destinations).validate(specs.names)
    store = StudyStore(config.data_dir)
    builder = StandInBuilder()
    outbox = ResultOutbox(store, specs, lambda: destinations, builder)
    pipeline = Pipeline(config, store, EventHub(), specs=specs, outbox=outbox)
    worker = OutboxWorker(store, destinations, StoreSender("FIRSTLOOK", timeout=5), AuditLog(store.data_dir),
                          "FIRSTLOOK", retry_s=0.2, retry_max_s=0.5)
    try:
        pipeline.models.load()
        worker.start()
        bright_paths, bright = mr_series(tmp_path / "in", "MR", bright=True, patient="BRIGHT")
        store_series(store, bright_paths)
        dark = store_series(store, mr_series(tmp_path / "in", "MR", bright=False, patient="DARK")[0])
        pipeline.run_until_idle()
        worker.notify()
        _settled(store)
        assert store.get_result(bright).priority == "urgent" and store.get_result(dark).priority == "routine"
        assert store.job_state(bright) == store.job_state(dark) == "done"  # committed with the result
        v1 = {r["sop_uid"]: r for r in store.outbox.rows() if r["source_series_uid"] == bright}
        assert {r["destination"] for r in store.outbox.rows() if r["source_series_uid"] == dark} == {"pacs"}
        assert len(pacs.sop_uids()) == 4 and sorted(urgent_only.sop_uids()) == sorted({u for u in v1})

        corrected = pydicom.dcmread(bright_paths[1])
        corrected.SeriesDescription = "corrected by the modality"
        corrected.save_as(tmp_path / "corrected.dcm", enforce_file_format=True)
        assert store.store_instance((tmp_path / "corrected.dcm").read_bytes(), "MR01").outcome == "replaced"
        assert store.enqueue_job(bright)
        pipeline.run_until_idle()
        worker.notify()
        _settled(store)
        v2 = store.outbox.latest_objects(bright)
        assert {o.version for o in v2} == {2} and all(set(o.supersedes) == set(v1) for o in v2)
        assert not {o.sop_uid for o in v2} & set(v1) and not {o.series_uid for o in v2} & {
            r["series_uid"] for r in v1.values()}
        received = set(pacs.sop_uids())
        assert {o.sop_uid for o in v2} <= received and set(v1) <= received and len(pacs.sop_uids()) == 6
        assert builder.calls[-1]["version"] == 2 and set(builder.calls[-1]["supersedes"]) == set(v1)
    finally:
        worker.stop()
        pipeline.stop()
        pacs.stop()
        urgent_only.stop()
        store.close()


def test_only_the_final_result_of_a_progressive_model_is_sent(tmp_path: Path) -> None:
    """Preliminary results (a partial ensemble) stay inside FirstLook: the destination receives the
    objects of the final result only, built once (version 1), with its priority."""
    from app.core.events import ResultStored
    from tests.support.toy_progressive import specs_with_toy_ensemble

    specs = specs_with_toy_ensemble()
    build_toy_pack(tmp_path / "packs")
    pacs = RecordingSCP("PACS").start()
    destinations = [Destination("pacs", "PACS", "127.0.0.1", pacs.port)]
    config = Config(data_dir=tmp_path / "data", cache_dir=tmp_path / "cache", packs_dir=tmp_path / "packs",
                    min_free_mb=0, destinations=destinations).validate(specs.names)
    store = StudyStore(config.data_dir)
    builder = StandInBuilder()
    hub = EventHub()
    stored: list[ResultStored] = []
    hub.subscribe(lambda e: stored.append(e) if isinstance(e, ResultStored) else None)
    pipeline = Pipeline(config, store, hub, specs=specs, outbox=ResultOutbox(store, specs, lambda: destinations,
                                                                             builder))
    worker = OutboxWorker(store, destinations, StoreSender("FIRSTLOOK", timeout=5), AuditLog(store.data_dir),
                          "FIRSTLOOK", retry_s=0.2, retry_max_s=0.5)
    try:
        pipeline.models.load()
        worker.start()
        dark = store_series(store, mr_series(tmp_path / "in", "MR", bright=False, patient="DARK")[0])
        pipeline.run_until_idle()
        worker.notify()
        _settled(store)
        assert [e.preliminary for e in stored] == [True, True, False]   # two preliminary results were stored
        assert len(builder.calls) == 1 and builder.calls[0]["version"] == 1
        final = store.get_result(dark)
        assert not final.preliminary and final.priority == "routine"
        objects = store.outbox.latest_objects(dark)
        assert objects and sorted(pacs.sop_uids()) == sorted(o.sop_uid for o in objects)
    finally:
        worker.stop()
        pipeline.stop()
        pacs.stop()
        store.close()
