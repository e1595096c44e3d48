"""The node's parts on their own: the status table, the association policy, the disk-space state
and the intake gate. Real objects (pynetdicom AE, event hub, threads); no network."""

from __future__ import annotations

import ipaddress
import logging
import threading
import time
from pathlib import Path

import pytest
from pynetdicom import AE

from app.core.config import Config
from app.core.events import DiskSpaceChanged, Event, EventHub
from app.core.store import BadUID, InvalidDataset, LowDiskSpace, MissingUID, OutOfResources, UnreadableDataset
from app.core.store.errors import StoreError
from dicom_node.disk_space import DiskSpaceState
from dicom_node.intake import Intake
from dicom_node.policy import NOT_IN_ALLOW_AE, OVER_LIMIT, AssociationPolicy
from dicom_node.statuses import (
    STATUS_BAD_UID,
    STATUS_CANNOT_UNDERSTAND,
    STATUS_MISSING_UID,
    STATUS_OUT_OF_RESOURCES,
    STATUS_PROCESSING_FAILURE,
    status_for,
)


# -- statuses -----------------------------------------------------------------------------------
@pytest.mark.parametrize(("error", "status"), [
    (UnreadableDataset("not DICOM"), STATUS_CANNOT_UNDERSTAND),
    (MissingUID("no SOP Instance UID"), STATUS_MISSING_UID),
    (BadUID("1.2/../3"), STATUS_BAD_UID),
    (OutOfResources("write error"), STATUS_OUT_OF_RESOURCES),
    (LowDiskSpace("below the watermark"), STATUS_OUT_OF_RESOURCES),
    # what the store did not anticipate is never Success, and never mistaken for a known refusal
    (InvalidDataset("abstract"), STATUS_PROCESSING_FAILURE),
    (StoreError("abstract"), STATUS_PROCESSING_FAILURE),
    (RuntimeError("bug"), STATUS_PROCESSING_FAILURE),
    (OSError("EIO"), STATUS_PROCESSING_FAILURE),
])
def test_each_store_error_maps_to_its_dimse_status(error: Exception, status: int) -> None:
    assert status_for(error) == status


# -- policy -------------------------------------------------------------------------------------
def _config(tmp_path: Path, **kwargs: object) -> Config:
    return Config(data_dir=tmp_path, **kwargs).validate()  # type: ignore[arg-type]


def test_policy_without_allow_lists_admits_everyone_and_says_so(tmp_path: Path,
                                                                  caplog: pytest.LogCaptureFixture) -> None:
    policy = AssociationPolicy.from_config(_config(tmp_path))
    assert policy.ip_allowed("192.0.2.7") and policy.ip_allowed("::1") and policy.ip_allowed("not-an-ip")
    with caplog.at_level(logging.INFO):
        policy.warn_if_open("0.0.0.0", 11112)
    assert any("NO CALLING-AE ALLOW-LIST" in r.getMessage() and r.levelno == logging.WARNING for r in caplog.records)
    assert any("no peer-IP allow-list" in r.getMessage() for r in caplog.records)


def test_policy_refuses_addresses_outside_allow_ip(tmp_path: Path) -> None:
    policy = AssociationPolicy.from_config(_config(tmp_path, allow_ip=["10.1.2.0/24", "127.0.0.1", "fd00::/8"]))
    assert policy.allow_ip[0] == ipaddress.ip_network("10.1.2.0/24")
    assert policy.ip_allowed("10.1.2.200") and policy.ip_allowed("127.0.0.1") and policy.ip_allowed("fd00::5")
    assert not policy.ip_allowed("10.1.3.1") and not policy.ip_allowed("127.0.0.2") and not policy.ip_allowed("fe80::1")
    assert not policy.ip_allowed("localhost")  # a name is not an address: refused, not resolved


def test_policy_explains_a_rejection_and_hands_pynetdicom_what_it_enforces(tmp_path: Path,
                                                                             caplog: pytest.LogCaptureFixture) -> None:
    policy = AssociationPolicy.from_config(_config(tmp_path, allow_ae=[" CT01 ", "CR01"], max_associations=3))
    assert policy.allow_ae == ("CT01", "CR01")
    assert policy.rejection_reason("INTRUDER") == NOT_IN_ALLOW_AE
    assert policy.rejection_reason("CT01") == OVER_LIMIT  # allowed AE, so it was the limit
    assert AssociationPolicy().rejection_reason("ANY") == OVER_LIMIT
    ae = AE(ae_title="FIRSTLOOK")
    policy.apply_to(ae)
    assert ae.require_calling_aet == ["CT01", "CR01"] and ae.maximum_associations == 3
    assert ae.require_called_aet is False
    with caplog.at_level(logging.INFO):
        policy.warn_if_open("0.0.0.0", 11112)
    assert not any("NO CALLING-AE ALLOW-LIST" in r.getMessage() for r in caplog.records)


# -- disk space ---------------------------------------------------------------------------------
def test_disk_space_event_fires_once_per_change(caplog: pytest.LogCaptureFixture) -> None:
    hub = EventHub()
    events: list[Event] = []
    hub.subscribe(events.append)
    state = DiskSpaceState(hub)
    with caplog.at_level(logging.WARNING):
        state.note(None)  # already accepting: nothing to say
        assert events == [] and not state.refusing
        for _ in range(3):
            state.note(LowDiskSpace("free space 3 MiB is below the watermark"))
        assert state.refusing
        assert events == [DiskSpaceChanged(refusing=True, message="free space 3 MiB is below the watermark")]
        state.note(None)
        state.note(None)
        assert not state.refusing
        assert events[1:] == [DiskSpaceChanged(refusing=False, message="")]
    assert [r.getMessage() for r in caplog.records if "REFUSING NEW INSTANCES" in r.getMessage()] == [
        "REFUSING NEW INSTANCES (0xA700) until disk space is freed: free space 3 MiB is below the watermark"]
    assert len([r for r in caplog.records if "accepting instances" in r.getMessage()]) == 1


def test_disk_space_changes_from_racing_threads_are_published_once_each() -> None:
    hub = EventHub()
    events: list[Event] = []
    hub.subscribe(events.append)
    state = DiskSpaceState(hub)
    start = threading.Barrier(8)

    def refuse() -> None:
        start.wait()
        state.note(LowDiskSpace("disk full"))

    threads = [threading.Thread(target=refuse) for _ in range(8)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert events == [DiskSpaceChanged(True, "disk full")]


# -- intake -------------------------------------------------------------------------------------
def test_intake_refuses_new_work_on_close_and_waits_for_writes_in_flight() -> None:
    intake = Intake()
    assert intake.admit("127.0.0.1") and intake.enter_store()
    left_at: list[float] = []

    def finish_write() -> None:
        time.sleep(0.3)
        left_at.append(time.monotonic())
        intake.leave_store()

    writer = threading.Thread(target=finish_write)
    writer.start()
    intake.close(timeout=5)
    closed_at = time.monotonic()
    writer.join()
    assert left_at and closed_at >= left_at[0]  # close returned only once the write finished
    assert intake.closed and not intake.admit("127.0.0.1") and not intake.enter_store()
    intake.open()
    assert intake.admit("127.0.0.1") and intake.enter_store()
    intake.leave_store()


def test_intake_close_gives_up_after_its_timeout(caplog: pytest.LogCaptureFixture) -> None:
    intake = Intake()
    assert intake.enter_store()  # a write that never finishes
    t0 = time.monotonic()
    with caplog.at_level(logging.ERROR):
        intake.close(timeout=0.2)
    assert 0.15 <= time.monotonic() - t0 < 2
    assert any("1 C-STORE write(s) still running" in r.getMessage() for r in caplog.records)
