"""Outbox files do not pile up: an object's file goes ``outbox_keep_days`` after it reached every
destination (its rows stay), files still needed stay, and "Send to PACS" on a released study
sends a new version through a real Storage SCP (new UIDs naming the ones they supersede),
never a second, different file under an old SOP Instance UID."""

from __future__ import annotations

import time
from pathlib import Path

import numpy as np
import pydicom
import pytest
from pydicom.uid import generate_uid

from app.core.audit import AuditLog
from app.core.config import ConfigError, load_config
from app.core.destinations import Destination
from app.core.outbox.result_outbox import ResultOutbox
from app.core.outbox.worker import OutboxWorker
from app.core.store import StudyStore
from dicom_node.sender import StoreSender
from tests.support import free_port, wait_until
from tests.support.dicom_factory import make_ct_slice, write
from tests.support.outbox_helpers import RecordingSCP, StandInBuilder, done_result

DAY = 86400.0



def _outbox(store: StudyStore, destinations: list[Destination], builder: StandInBuilder) -> ResultOutbox:
    return ResultOutbox(store, None, lambda: destinations, builder, uid_root="1.2.826.0.1.3680043.10.999",  # type: ignore[arg-type]
                        keep_days=30)


def _files(store: StudyStore) -> set[str]:
    return {o.sop_uid for o in store.outbox.objects() if (store.data_dir / o.path).is_file()}


def test_sent_files_go_after_keep_days_and_a_resend_is_a_new_version(store: StudyStore, stored_series) -> None:
    study, series = stored_series
    pacs = RecordingSCP("PACS").start()
    destinations = [Destination("pacs", "PACS", "127.0.0.1", pacs.port)]
    builder = StandInBuilder()
    outbox = _outbox(store, destinations, builder)
    result = done_result(series, study)
    staged = outbox.stage(result)
    assert staged is not None
    store.save_result(result, also=staged.record)
    first = {o.sop_uid for o in staged.objects}
    worker = OutboxWorker(store, destinations, StoreSender("FIRSTLOOK", timeout=5), AuditLog(store.data_dir),
                          "FIRSTLOOK", retry_s=0.2, retry_max_s=0.5)
    worker.start()
    try:
        assert wait_until(lambda: {r["state"] for r in store.outbox.rows()} == {"sent"})
        assert outbox.release_settled_files() == (0, 0) and _files(store) == first   # sent today: kept
        removed, freed = outbox.release_settled_files(now=time.time() + 31 * DAY)
        assert removed == 2 and freed > 0 and _files(store) == set()
        assert not (store.data_dir / "outbox" / study).exists()
        assert {r["state"] for r in store.outbox.rows()} == {"sent"} and store.outbox.study_states()[study].state == "sent"
        assert outbox.release_settled_files(now=time.time() + 32 * DAY) == (0, 0)   # nothing left to release

        # PACS lost them: "Send to PACS" builds version 2 (the old files are gone, not rebuilt under old UIDs).
        assert outbox.resend_study(study) == 2
        assert builder.calls[-1]["version"] == 2 and set(builder.calls[-1]["supersedes"]) == first
        worker.notify()
        assert wait_until(lambda: len(set(pacs.sop_uids())) == 4 and all(r["state"] == "sent" for r in store.outbox.rows()))
    finally:
        worker.stop()
        pacs.stop()
    second = set(pacs.sop_uids()) - first
    assert len(second) == 2 and _files(store) == second
    for o in store.outbox.objects():
        if o.sop_uid in second:
            ds = pydicom.dcmread(store.data_dir / o.path)
            assert o.version == 2 and "supersedes 2" in ds.SeriesDescription


def test_files_still_needed_stay(store: StudyStore, stored_series, tmp_path: Path) -> None:
    """Failing sends (a PACS that is down) and stopped ones keep their files however old; an
    object no destination takes (kind filter) has nothing to wait for and goes."""
    study, series = stored_series
    scp = RecordingSCP("SRONLY").start()
    down = Destination("down", "DOWN", "127.0.0.1", free_port())           # nothing listens there
    sr_only = Destination("sr-only", "SRONLY", "127.0.0.1", scp.port, objects=("sr",))
    builder = StandInBuilder()
    outbox = _outbox(store, [down, sr_only], builder)
    result = done_result(series, study)
    staged = outbox.stage(result)
    assert staged is not None
    store.save_result(result, also=staged.record)
    sr, sc = (next(o for o in staged.objects if o.kind == k) for k in ("sr", "sc"))
    worker = OutboxWorker(store, [down, sr_only], StoreSender("FIRSTLOOK", timeout=5), AuditLog(store.data_dir),
                          "FIRSTLOOK", retry_s=60, retry_max_s=60)
    worker.start()
    try:
        assert wait_until(lambda: sorted((r["kind"], r["destination"], r["state"]) for r in store.outbox.rows()) == [
            ("sc", "down", "failed"), ("sr", "down", "failed"), ("sr", "sr-only", "sent")])
    finally:
        worker.stop()
        scp.stop()
    later = time.time() + 400 * DAY
    assert outbox.release_settled_files(now=later) == (0, 0)   # both still owed to "down"
    assert _files(store) == {sr.sop_uid, sc.sop_uid}

    # "down" is removed from the configuration: its rows stop, and stopped rows still keep their files.
    assert store.outbox.stop_unconfigured(["sr-only"]) == 2
    assert outbox.release_settled_files(now=later) == (0, 0)

    # A result of another series whose SC no destination takes: nothing waits for that file.
    other_series = generate_uid()
    store.store_instance(write(make_ct_slice(np.zeros((16, 16), np.int16), (0, 0, 0), instance=1, study_uid=study,
                                             series_uid=other_series), tmp_path / "other").read_bytes())
    only_sr = _outbox(store, [sr_only], builder)
    other = done_result(other_series, study)
    staged2 = only_sr.stage(other)
    assert staged2 is not None
    store.save_result(other, also=staged2.record)
    (untaken,) = [o for o in staged2.objects if o.kind == "sc"]
    (taken,) = [o for o in staged2.objects if o.kind == "sr"]
    assert only_sr.release_settled_files(now=later) == (1, untaken.size)
    assert _files(store) == {sr.sop_uid, sc.sop_uid, taken.sop_uid}


@pytest.mark.parametrize("value", [-1, 40000, "forever", True])
def test_outbox_keep_days_is_validated(tmp_path: Path, value: object) -> None:
    with pytest.raises(ConfigError, match="outbox_keep_days must be a number of days from 0 to 36500"):
        load_config(tmp_path / "absent.toml", {"outbox_keep_days": value})
