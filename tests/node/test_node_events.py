"""The node reports through typed events on the hub: what each carries, on which thread, in
which order, over real associations on 127.0.0.1 with pynetdicom as the peer."""

from __future__ import annotations

import threading
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import pydicom
from pydicom.uid import CTImageStorage, ExplicitVRLittleEndian, generate_uid
from pynetdicom import AE
from pynetdicom.association import Association

from app.core.config import Config
from app.core.events import AssociationEnded, DiskSpaceChanged, Event, InstanceStored
from app.core.store import StudyStore
from dicom_node.scp import StorageSCP
from dicom_node.scu import send_files
from dicom_node.statuses import STATUS_OUT_OF_RESOURCES, STATUS_SUCCESS
from tests.support import free_port
from tests.support.dicom_factory import make_ct_slice, write
from tests.support.node_helpers import Node, start_node, stop_node

NODE_EVENTS = (InstanceStored, AssociationEnded, DiskSpaceChanged)


@dataclass
class Recorder:
    """The node's events as a subscriber sees them, with the publishing thread and how many
    C-STORE responses the sender had received at that moment."""

    responses: int = 0
    seen: list[tuple[Event, str, int]] = field(default_factory=list)
    lock: threading.Lock = field(default_factory=threading.Lock)

    def __call__(self, event: Event) -> None:
        if isinstance(event, NODE_EVENTS):
            with self.lock:
                self.seen.append((event, threading.current_thread().name, self.responses))

    def events(self, kind: type | tuple[type, ...] = NODE_EVENTS) -> list:
        with self.lock:
            return [e for e, _, _ in self.seen if isinstance(e, kind)]


def ct_files(directory: Path, n: int, series_uid: str | None = None) -> list[Path]:
    study, series = generate_uid(), series_uid or generate_uid()
    return [write(make_ct_slice(np.full((8, 8), i, np.int16), (0.0, 0.0, float(i)), instance=i + 1,
                                study_uid=study, series_uid=series), directory) for i in range(n)]


def associate(node: Node, calling_ae: str = "MODALITY1") -> Association:
    ae = AE(ae_title=calling_ae)
    ae.add_requested_context(CTImageStorage, ExplicitVRLittleEndian)
    assoc = ae.associate("127.0.0.1", node.port, ae_title=node.ae)
    assert assoc.is_established
    return assoc


def send(assoc: Association, files: list[Path], recorder: Recorder) -> None:
    for path in files:
        status = assoc.send_c_store(pydicom.dcmread(path))
        assert status.Status == STATUS_SUCCESS
        with recorder.lock:
            recorder.responses += 1


def test_instances_then_the_release_are_published_on_the_association_thread_before_each_response(
        node: Node, tmp_path: Path) -> None:
    recorder = Recorder()
    node.hub.subscribe(recorder)
    files = ct_files(tmp_path / "in", 3)
    assoc = associate(node)
    send(assoc, files, recorder)
    assoc.release()
    assert node.wait_for(lambda: recorder.events(AssociationEnded) != [])

    stored = recorder.events(InstanceStored)
    sops = [pydicom.dcmread(p).SOPInstanceUID for p in files]
    assert [e.sop_uid for e in stored] == sops and {e.outcome for e in stored} == {"stored"}
    key = stored[0].association
    assert key is not None and not isinstance(key, Association) and hash(key) == hash(key)
    assert {e.association for e in stored} == {key}
    # each instance is published before the sender has its C-STORE response...
    assert [responses for e, _, responses in recorder.seen if isinstance(e, InstanceStored)] == [0, 1, 2]
    # ...and before the end of its association, which comes last, once, as a release
    assert recorder.events()[-1] == AssociationEnded(key, released=True)
    assert recorder.events(AssociationEnded) == [AssociationEnded(key, released=True)]
    # all from the association's own thread, not the sender's
    threads = {thread for _, thread, _ in recorder.seen}
    assert len(threads) == 1 and threading.current_thread().name not in threads
    # the readiness tracker, fed only by these events, closes the series on the release
    assert node.wait_for(lambda: len(node.ready) == 1)
    assert node.ready[0][1].series_uid == stored[0].series_uid and node.ready[0][1].why == "association released"


def test_concurrent_associations_have_their_own_keys(node: Node, tmp_path: Path) -> None:
    recorder = Recorder()
    node.hub.subscribe(recorder)
    first, second = associate(node, "CT01"), associate(node, "CT02")
    send(first, ct_files(tmp_path / "a", 2), recorder)
    send(second, ct_files(tmp_path / "b", 1), recorder)
    send(first, ct_files(tmp_path / "c", 1), recorder)
    second.release()
    first.release()
    assert node.wait_for(lambda: len(recorder.events(AssociationEnded)) == 2)
    keys = [e.association for e in recorder.events(InstanceStored)]
    assert keys[0] == keys[1] == keys[3] != keys[2]
    assert recorder.events(AssociationEnded) == [AssociationEnded(keys[2], True), AssociationEnded(keys[0], True)]


def test_an_aborted_association_ends_as_aborted(node: Node, tmp_path: Path) -> None:
    recorder = Recorder()
    node.hub.subscribe(recorder)
    assoc = associate(node)
    send(assoc, ct_files(tmp_path / "in", 1), recorder)
    assoc.abort()
    assert node.wait_for(lambda: recorder.events(AssociationEnded) != [])
    (stored,) = recorder.events(InstanceStored)
    assert recorder.events(AssociationEnded) == [AssociationEnded(stored.association, released=False)]
    (record,) = [r for r in node.scp.audit.records() if r["event"] == "dicom.association"]
    assert record["outcome"] == "aborted" and record["c_store"] == 1


def test_stopping_the_node_ends_open_associations_after_their_instances(data_dir: Path, tmp_path: Path) -> None:
    n = start_node(data_dir)
    recorder = Recorder()
    n.hub.subscribe(recorder)
    try:
        assoc = associate(n)
        send(assoc, ct_files(tmp_path / "in", 2), recorder)
    finally:
        stop_node(n)
    stored = recorder.events(InstanceStored)
    ended = recorder.events(AssociationEnded)
    assert len(stored) == 2 and ended and set(ended) == {AssociationEnded(stored[0].association, released=False)}
    assert isinstance(recorder.events()[-1], AssociationEnded)
    assert not assoc.is_established


def test_a_rejected_association_never_ends(data_dir: Path, tmp_path: Path) -> None:
    """Only accepted associations were announced (by their instances), so only they end."""
    n = start_node(data_dir, allow_ae=["CT01"])
    recorder = Recorder()
    n.hub.subscribe(recorder)
    try:
        statuses = send_files("127.0.0.1", n.port, n.ae, ct_files(tmp_path / "in", 1), calling_ae="INTRUDER")
        assert statuses != [STATUS_SUCCESS]
        assert send_files("127.0.0.1", n.port, n.ae, ct_files(tmp_path / "ok", 1), calling_ae="CT01") == [0]
        assert n.wait_for(lambda: recorder.events(AssociationEnded) != [])
    finally:
        stop_node(n)
    (stored,) = recorder.events(InstanceStored)
    assert recorder.events(AssociationEnded) == [AssociationEnded(stored.association, True)]


def test_disk_space_refusal_and_recovery_are_published_once_each_over_the_wire(data_dir: Path,
                                                                                 tmp_path: Path) -> None:
    n = start_node(data_dir, min_free_mb=1 << 30)  # a petabyte: always below it
    recorder = Recorder()
    n.hub.subscribe(recorder)
    try:
        refused = send_files("127.0.0.1", n.port, n.ae, ct_files(tmp_path / "refused", 3))
        assert refused == [STATUS_OUT_OF_RESOURCES] * 3
        (change,) = recorder.events(DiskSpaceChanged)
        assert change.refusing and "below the watermark" in change.message
        assert n.wait_for(lambda: len(recorder.events(AssociationEnded)) == 1)
        n.store.min_free_bytes = 0  # space freed
        assert send_files("127.0.0.1", n.port, n.ae, ct_files(tmp_path / "ok", 2)) == [0, 0]
        assert n.wait_for(lambda: len(recorder.events(AssociationEnded)) == 2)
    finally:
        stop_node(n)
    assert recorder.events(DiskSpaceChanged) == [change, DiskSpaceChanged(refusing=False, message="")]
    kinds = [type(e).__name__ for e in recorder.events()]
    # the refused association stored nothing; recovery is said before the first instance is announced
    assert kinds == ["DiskSpaceChanged", "AssociationEnded", "DiskSpaceChanged", "InstanceStored", "InstanceStored",
                     "AssociationEnded"]


def test_a_node_without_a_hub_still_serves(data_dir: Path, tmp_path: Path) -> None:
    """The self-test and the benchmarks run a bare node: its events simply reach no one."""
    port = free_port()
    config = Config(data_dir=data_dir, port=port, min_free_mb=0).validate()
    store = StudyStore(data_dir)
    scp = StorageSCP(config, store)
    scp.start()
    try:
        assert send_files("127.0.0.1", port, config.ae_title, ct_files(tmp_path / "in", 2)) == [0, 0]
        assert len(store.instance_rows()) == 2
    finally:
        scp.stop(timeout=10)
        store.close()
