"""The outbox worker and the C-STORE sender against real Storage SCPs (pynetdicom on 127.0.0.1,
real associations): accepted, accepted with a warning, refused with a failure status (retried,
then accepted), a destination down at first (the outbox drains when it comes up), and the audit
log saying what went where with which status."""

from __future__ import annotations

from app.core.audit import AuditLog
from app.core.destinations import Destination
from app.core.outbox.result_outbox import ResultOutbox
from app.core.outbox.worker import OBJECTS_SENT, OutboxWorker, backoff_delay, classify_status
from app.core.store import StudyStore
from dicom_node.sender import StoreSender
from tests.support import free_port, wait_until
from tests.support.outbox_helpers import RecordingSCP, StandInBuilder, done_result



def _queue(store: StudyStore, series: str, study: str, destinations: list[Destination]) -> set[str]:
    outbox = ResultOutbox(store, None, lambda: destinations, StandInBuilder())  # type: ignore[arg-type]
    staged = outbox.stage(done_result(series, study))
    assert staged is not None
    store.save_result(done_result(series, study), also=staged.record)
    return {o.sop_uid for o in staged.objects}


def _worker(store: StudyStore, destinations: list[Destination]) -> OutboxWorker:
    return OutboxWorker(store, destinations, StoreSender("FIRSTLOOK", timeout=5), AuditLog(store.data_dir),
                        "FIRSTLOOK", retry_s=0.2, retry_max_s=0.5)


def test_status_classes_and_backoff() -> None:
    assert classify_status(0) == "success"
    assert [classify_status(s) for s in (0xB000, 0xB007, 0xB006, 0x0107)] == ["warning"] * 4
    assert [classify_status(s) for s in (0xA700, 0xA900, 0xC000, 0x0110, None)] == ["failure"] * 5
    assert [backoff_delay(n, 10, 600) for n in (1, 2, 3, 6, 7, 50)] == [10, 20, 40, 320, 600, 600]


def test_objects_reach_two_destinations_with_firstlooks_ae_title(store: StudyStore, stored_series) -> None:
    study, series = stored_series
    pacs, warn = RecordingSCP("PACS").start(), RecordingSCP("WARNS", status=0xB000).start()
    destinations = [Destination("pacs", "PACS", "127.0.0.1", pacs.port),
                    Destination("warns", "WARNS", "127.0.0.1", warn.port, objects=("sr",))]
    sops = _queue(store, series, study, destinations)
    worker = _worker(store, destinations)
    worker.start()
    try:
        assert wait_until(lambda: {r["state"] for r in store.outbox.rows()} == {"sent"})
    finally:
        worker.stop()
        pacs.stop()
        warn.stop()
    assert set(pacs.sop_uids()) == sops and len(pacs.sop_uids()) == 2
    assert {r[0] for r in pacs.received + warn.received} == {"FIRSTLOOK"}
    (warned,) = [r for r in store.outbox.rows() if r["destination"] == "warns"]
    assert warned["kind"] == "sr" and warned["last_status"] == 0xB000 and "warning" in warned["last_error"]
    assert store.outbox.study_states()[study].state == "sent"
    audit = [r for r in AuditLog(store.data_dir).records() if r["event"] == OBJECTS_SENT]
    assert {(r["destination"], r["called_ae"], r["port"]) for r in audit} == {
        ("pacs", "PACS", pacs.port), ("warns", "WARNS", warn.port)}
    statuses = {(r["destination"], o["sop_uid"], o["status"], o["outcome"]) for r in audit for o in r["objects"]}
    assert {(d, st, out) for d, _, st, out in statuses} == {("pacs", "0x0000", "sent"), ("warns", "0xB000", "sent")}


def test_a_failure_status_is_retried_and_a_destination_down_at_first_drains(store: StudyStore,
                                                                            stored_series) -> None:
    study, series = stored_series
    refusing = RecordingSCP("FULL", status=0xA700).start()
    down_port = free_port()
    destinations = [Destination("full", "FULL", "127.0.0.1", refusing.port),
                    Destination("later", "LATER", "127.0.0.1", down_port)]
    sops = _queue(store, series, study, destinations)
    worker = _worker(store, destinations)
    worker.start()
    later = RecordingSCP("LATER", port=down_port)
    try:
        snapshot: dict[str, dict] = {}

        def both_failed_twice() -> bool:
            rows = store.outbox.rows()
            snapshot.update({r["destination"]: r for r in rows if r["state"] == "failed" and r["attempts"] >= 2})
            return {"full", "later"} <= set(snapshot)

        assert wait_until(both_failed_twice)
        assert snapshot["full"]["last_status"] == 0xA700 and "0xA700" in snapshot["full"]["last_error"]
        assert snapshot["later"]["last_status"] is None and "connection refused" in snapshot["later"]["last_error"]
        assert wait_until(lambda: store.outbox.study_states()[study].state == "failing")
        later.start()               # the destination comes up: its queue drains
        refusing.status = 0x0000    # the full one has room again
        assert wait_until(lambda: {r["state"] for r in store.outbox.rows()} == {"sent"})
    finally:
        worker.stop()
        refusing.stop()
        later.stop()
    assert set(later.sop_uids()) == sops and len(later.sop_uids()) == 2
    assert set(refusing.sop_uids()) == sops  # same UIDs on every attempt
    assert all(r["attempts"] >= 2 for r in store.outbox.rows())
