"""The Storage SCP against a real pynetdicom SCU over 127.0.0.1, with real files."""

from __future__ import annotations

import logging
import os
import subprocess
import threading
import time
from pathlib import Path

import numpy as np
import pydicom
import pytest
from pydicom.dataset import Dataset
from pydicom.uid import CTImageStorage, ExplicitVRLittleEndian, JPEG2000Lossless, RLELossless, generate_uid
from pynetdicom import AE

from app.core.events import InstanceStored
from dicom_node.statuses import (
    STATUS_BAD_UID,
    STATUS_CANNOT_UNDERSTAND,
    STATUS_MISSING_UID,
    STATUS_OUT_OF_RESOURCES,
)
from dicom_node.scu import ASSOCIATION_FAILED, echo, send_files, send_raw
from tests.support.dicom_factory import encode_body, make_ct_slice, write, write_cxr
from tests.support.node_helpers import (
    PYDICOM_FILES,
    Node,
    fresh_uids,
    jpegls_near_lossless,
    pydicom_file,
    start_node,
    stop_node,
)

IDENTIFYING = ("SOPClassUID", "SOPInstanceUID", "StudyInstanceUID", "SeriesInstanceUID", "PatientID",
               "PatientName", "Modality")


def stored_path(node: Node, ds: Dataset) -> Path:
    return node.store.studies_dir / ds.StudyInstanceUID / ds.SeriesInstanceUID / f"{ds.SOPInstanceUID}.dcm"


def assert_same_instance(sent: Path, stored: Path) -> None:
    a, b = pydicom.dcmread(sent), pydicom.dcmread(stored)
    assert b.file_meta.TransferSyntaxUID == a.file_meta.TransferSyntaxUID  # never transcoded
    for kw in IDENTIFYING:
        assert b.get(kw) == a.get(kw), kw
    assert b.PixelData == a.PixelData  # encapsulated fragments byte for byte, or native pixels


def ct_dataset(**kwargs: object) -> Dataset:
    pixels = np.random.default_rng(1).integers(-1000, 1000, (64, 64)).astype(np.int16)
    return make_ct_slice(pixels, (0.0, 0.0, 0.0), **kwargs)  # type: ignore[arg-type]


def test_echo(node: Node) -> None:
    assert echo("127.0.0.1", node.port, node.ae) == 0


def test_every_transfer_syntax_is_stored_as_sent(node: Node, tmp_path: Path, cxr_dir: Path) -> None:
    sent = [fresh_uids(pydicom_file(name), tmp_path / "send") for name in PYDICOM_FILES]
    sent.append(jpegls_near_lossless(tmp_path / "send"))
    pngs = sorted((cxr_dir / "images").glob("*.png"))[:2]
    sent.append(write_cxr(tmp_path / "send", pngs[0], modality="DX", photometric="MONOCHROME1",
                          transfer_syntax=JPEG2000Lossless))
    sent.append(write_cxr(tmp_path / "send", pngs[1], modality="CR", photometric="MONOCHROME2",
                          transfer_syntax=RLELossless))
    statuses = send_files("127.0.0.1", node.port, node.ae, sent, calling_ae="MODALITY1")
    assert statuses == [0] * len(sent)
    syntaxes = set()
    for path in sent:
        ds = pydicom.dcmread(path, stop_before_pixels=True)
        target = stored_path(node, ds)
        assert target.is_file(), path.name
        assert_same_instance(path, target)
        syntaxes.add(str(ds.file_meta.TransferSyntaxUID))
        # the dataset body on disk is exactly what the SCU encoded for the wire
        stored_meta = pydicom.dcmread(target, stop_before_pixels=True).file_meta
        assert stored_meta.SourceApplicationEntityTitle == "MODALITY1"
    assert set(PYDICOM_FILES.values()) | {"1.2.840.10008.1.2.4.81"} <= syntaxes
    rows = node.store.instance_rows()
    assert len(rows) == len(sent)
    assert {r["calling_ae"] for r in rows} == {"MODALITY1"}
    # decoding the stored radiographs gives back the 12-bit pixels that were sent
    for path in sent[-2:]:
        ds = pydicom.dcmread(path)
        stored = pydicom.dcmread(stored_path(node, ds))
        np.testing.assert_array_equal(stored.pixel_array, ds.pixel_array)
        assert stored.BitsStored == 12
    stored_events = [e for e in node.events if isinstance(e, InstanceStored)]
    assert len(stored_events) == len(sent) and {e.outcome for e in stored_events} == {"stored"}


def test_stored_bytes_are_the_wire_bytes(node: Node, tmp_path: Path) -> None:
    """Nothing on the receive path re-encodes: the body after the File Meta is what was sent."""
    ds = ct_dataset()
    body = encode_body(ds)
    status = send_raw("127.0.0.1", node.port, node.ae, ds.SOPClassUID, ds.SOPInstanceUID, body)
    assert status == 0
    data = stored_path(node, ds).read_bytes()
    assert data.endswith(body)
    assert data[128:132] == b"DICM"


def test_refused_calling_ae_is_rejected_at_association(data_dir: Path, tmp_path: Path,
                                                       caplog: pytest.LogCaptureFixture) -> None:
    n = start_node(data_dir, allow_ae=["CT01", "CR01"])
    try:
        path = write(ct_dataset(), tmp_path)
        with caplog.at_level(logging.WARNING, logger="dicom_node.scp"):
            assert send_files("127.0.0.1", n.port, n.ae, [path], calling_ae="INTRUDER") == [ASSOCIATION_FAILED]
        assert n.store.instance_rows() == []
        assert not any(n.store.studies_dir.iterdir())
        rejected = [r.getMessage() for r in caplog.records if "rejected" in r.getMessage()]
        assert rejected and "calling AE title not recognised" in rejected[0] and "127.0.0.1" in rejected[0]
        assert send_files("127.0.0.1", n.port, n.ae, [path], calling_ae="CT01") == [0]
    finally:
        stop_node(n)


def test_peer_ip_allow_list(data_dir: Path, tmp_path: Path) -> None:
    path = write(ct_dataset(), tmp_path)
    n = start_node(data_dir, allow_ip=["10.0.0.0/8"])
    try:
        assert send_files("127.0.0.1", n.port, n.ae, [path]) == [ASSOCIATION_FAILED]
        assert n.store.instance_rows() == []
    finally:
        stop_node(n)
    n = start_node(data_dir, allow_ip=["127.0.0.0/8"])
    try:
        assert send_files("127.0.0.1", n.port, n.ae, [path]) == [0]
    finally:
        stop_node(n)


def test_unparsable_dataset_fails_and_node_keeps_serving(node: Node, tmp_path: Path) -> None:
    garbage = b"\x08\x00\x16\x00UI\xff\xff" + os.urandom(300)  # element claims 65535 bytes
    status = send_raw("127.0.0.1", node.port, node.ae, CTImageStorage, generate_uid(), garbage)
    assert status == STATUS_CANNOT_UNDERSTAND
    assert node.store.instance_rows() == []
    assert list(node.store.tmp_dir.iterdir()) == []
    assert send_files("127.0.0.1", node.port, node.ae, [write(ct_dataset(), tmp_path)]) == [0]


def test_missing_uids_fail(node: Node) -> None:
    for keyword in ("StudyInstanceUID", "SeriesInstanceUID", "SOPInstanceUID"):
        ds = ct_dataset()
        sop = ds.SOPInstanceUID
        delattr(ds, keyword)
        status = send_raw("127.0.0.1", node.port, node.ae, CTImageStorage, sop, encode_body(ds))
        assert status == STATUS_MISSING_UID, keyword
    assert node.store.instance_rows() == []


@pytest.mark.parametrize("evil", ["../../../../tmp/firstlook-escape", "1.2.3/../../4", "/etc/passwd",
                                  "1.2.840..5", "1.2.03"])
def test_uid_crafted_to_escape_the_data_dir(node: Node, evil: str, tmp_path: Path) -> None:
    for keyword in ("StudyInstanceUID", "SeriesInstanceUID", "SOPInstanceUID"):
        ds = ct_dataset()
        setattr(ds, keyword, evil)
        status = send_raw("127.0.0.1", node.port, node.ae, CTImageStorage, generate_uid(), encode_body(ds))
        assert status == STATUS_BAD_UID, (keyword, evil)
    assert node.store.instance_rows() == []
    assert not any(node.store.studies_dir.iterdir())
    assert not Path("/tmp/firstlook-escape.dcm").exists()
    files = [p for p in node.store.data_dir.rglob("*") if p.is_file()]
    assert all(p.name.startswith("index.sqlite3") or p.name == "audit.log" for p in files)


def test_below_free_space_watermark_is_out_of_resources(data_dir: Path, tmp_path: Path) -> None:
    n = start_node(data_dir, min_free_mb=1 << 30)  # a petabyte: never available
    try:
        path = write(ct_dataset(), tmp_path)
        assert send_files("127.0.0.1", n.port, n.ae, [path]) == [STATUS_OUT_OF_RESOURCES]
        assert n.store.instance_rows() == []
        n.store.min_free_bytes = 0  # space freed: the same node, same association policy, serves again
        assert send_files("127.0.0.1", n.port, n.ae, [path]) == [0]
    finally:
        stop_node(n)


def test_write_error_is_out_of_resources_and_node_keeps_serving(node: Node, tmp_path: Path) -> None:
    path = write(ct_dataset(), tmp_path)
    # A real failing write: the temporary directory is replaced by a plain file (ENOTDIR),
    # which even root cannot write into.
    tmp_dir = node.store.tmp_dir
    tmp_dir.rmdir()
    tmp_dir.write_bytes(b"not a directory")
    assert send_files("127.0.0.1", node.port, node.ae, [path]) == [STATUS_OUT_OF_RESOURCES]
    assert node.store.instance_rows() == []
    tmp_dir.unlink()
    tmp_dir.mkdir()
    assert send_files("127.0.0.1", node.port, node.ae, [path]) == [0]


def _mount_tmpfs(where: Path, size_kib: int) -> bool:
    where.mkdir(parents=True, exist_ok=True)
    if os.geteuid() != 0:
        return False
    done = subprocess.run(["mount", "-t", "tmpfs", "-o", f"size={size_kib}k,mode=0700", "tmpfs", str(where)],
                          capture_output=True)
    return done.returncode == 0


def test_full_filesystem_is_out_of_resources(tmp_path: Path) -> None:
    """A really full filesystem (a 4 MiB tmpfs), not a watermark: ENOSPC on write -> 0xA700."""
    mnt = tmp_path / "small"
    if not _mount_tmpfs(mnt, 4096):
        pytest.skip("cannot mount a tmpfs here (needs root); the watermark and write-error tests cover 0xA700")
    try:
        n = start_node(mnt / "data")
        try:
            big = [write(make_ct_slice(np.zeros((512, 512), np.int16), (0, 0, float(i)), instance=i), tmp_path / "s")
                   for i in range(3)]
            filler = mnt / "filler"
            with open(filler, "wb") as fh:  # leave ~300 KiB: less than one 512 KiB slice
                while os.statvfs(mnt).f_bavail * os.statvfs(mnt).f_frsize > 300 << 10:
                    fh.write(b"\0" * (64 << 10))
            statuses = send_files("127.0.0.1", n.port, n.ae, big)
            assert statuses == [STATUS_OUT_OF_RESOURCES] * 3
            assert n.store.instance_rows() == []
            assert list(n.store.tmp_dir.iterdir()) == []  # no partial file left behind
            filler.unlink()
            assert send_files("127.0.0.1", n.port, n.ae, big) == [0, 0, 0]
            assert len(n.store.instance_rows()) == 3
        finally:
            stop_node(n)
    finally:
        subprocess.run(["umount", str(mnt)], capture_output=True)


def test_duplicates_same_and_different_bytes(node: Node, tmp_path: Path) -> None:
    ds = ct_dataset()
    first = write(ds, tmp_path / "a")
    assert send_files("127.0.0.1", node.port, node.ae, [first]) == [0]
    target = stored_path(node, ds)
    original = target.read_bytes()
    assert send_files("127.0.0.1", node.port, node.ae, [first]) == [0]  # identical: no-op Success
    assert target.read_bytes() == original
    assert len(node.store.instance_rows()) == 1 and node.store.replacements() == []
    ds.SeriesDescription = "HEAD axial (corrected)"  # same SOP Instance UID, different bytes
    second = write(ds, tmp_path / "b")
    assert send_files("127.0.0.1", node.port, node.ae, [second]) == [0]
    assert pydicom.dcmread(target).SeriesDescription == "HEAD axial (corrected)"  # newer wins
    (rep,) = node.store.replacements()
    kept = node.store.data_dir / rep["superseded_path"]
    assert kept.read_bytes() == original  # older version kept, not dropped
    assert len(node.store.instance_rows()) == 1
    outcomes = [e.outcome for e in node.events if isinstance(e, InstanceStored)]
    assert outcomes == ["stored", "duplicate", "replaced"]
    assert node.store.verify() == []


def test_eight_simultaneous_associations(data_dir: Path, tmp_path: Path) -> None:
    n = start_node(data_dir, max_associations=8)
    try:
        study = generate_uid()
        series = [generate_uid() for _ in range(8)]
        files = [[write(ct_dataset(study_uid=study, series_uid=series[i]), tmp_path / f"s{i}") for _ in range(3)]
                 for i in range(8)]
        barrier = threading.Barrier(8, timeout=20)
        results: dict[int, list[int]] = {}
        peak: list[int] = []

        def sender(i: int) -> None:
            ae = AE(ae_title=f"SENDER{i}")
            ae.add_requested_context(CTImageStorage, ExplicitVRLittleEndian)
            assoc = ae.associate("127.0.0.1", n.port, ae_title=n.ae)
            assert assoc.is_established
            barrier.wait()  # all eight are open at once before anyone sends
            peak.append(len(n.scp._server.active_associations) if n.scp._server else 0)
            results[i] = [int(assoc.send_c_store(pydicom.dcmread(p)).Status) for p in files[i]]
            barrier.wait()
            assoc.release()

        threads = [threading.Thread(target=sender, args=(i,)) for i in range(8)]
        for t in threads:
            t.start()
        for t in threads:
            t.join(60)
        assert max(peak) == 8
        assert results == {i: [0, 0, 0] for i in range(8)}
        assert len(n.store.instance_rows()) == 24
        assert n.wait_for(lambda: len(n.ready) == 8, 5)
    finally:
        stop_node(n)


def test_stop_finishes_in_flight_writes_and_loses_nothing_acknowledged(data_dir: Path, tmp_path: Path) -> None:
    n = start_node(data_dir)
    files = [write(make_ct_slice(np.full((512, 512), i, np.int16), (0, 0, float(i)), instance=i), tmp_path)
             for i in range(40)]
    statuses: list[int] = []
    sender = threading.Thread(target=lambda: statuses.extend(send_files("127.0.0.1", n.port, n.ae, files, timeout=5)))
    sender.start()
    assert n.wait_for(lambda: len(n.store.instance_rows()) >= 5, 20)
    n.scp.stop(timeout=10)
    sender.join(30)
    n.tracker.stop()
    acked = [f for f, s in zip(files, statuses) if s == 0]
    assert 5 <= len(acked) < 40
    assert statuses[:len(acked)] == [0] * len(acked)  # acknowledged ones form a prefix
    rows = n.store.instance_rows()
    for f in acked:
        ds = pydicom.dcmread(f, stop_before_pixels=True)
        assert stored_path(n, ds).is_file()
    assert len(rows) >= len(acked)  # at most the one in flight at the stop was stored unacknowledged
    assert n.store.verify() == []
    assert echo("127.0.0.1", n.port, n.ae) == ASSOCIATION_FAILED  # really stopped
    n.store.close()


def test_series_ready_on_release_and_after_quiet_period(data_dir: Path, tmp_path: Path) -> None:
    n = start_node(data_dir, quiet_period_s=1.0)
    try:
        study, s1, s2 = generate_uid(), generate_uid(), generate_uid()
        burst = [write(ct_dataset(study_uid=study, series_uid=s1), tmp_path / "a") for _ in range(3)]
        sent_at = time.monotonic()
        assert send_files("127.0.0.1", n.port, n.ae, burst) == [0, 0, 0]
        assert n.wait_for(lambda: len(n.ready) == 1, 3)
        when, event = n.ready[0]
        assert (event.series_uid, event.study_uid, event.why) == (s1, study, "association released")
        assert when - sent_at < 0.9  # released: no need to wait for the quiet period

        # An association kept open: the quiet period decides.
        ae = AE(ae_title="HOLDS_OPEN")
        ae.add_requested_context(CTImageStorage, ExplicitVRLittleEndian)
        assoc = ae.associate("127.0.0.1", n.port, ae_title=n.ae)
        try:
            ds = ct_dataset(study_uid=study, series_uid=s2)
            assert int(assoc.send_c_store(ds).Status) == 0
            last = time.monotonic()
            time.sleep(0.6)
            assert int(assoc.send_c_store(ct_dataset(study_uid=study, series_uid=s2)).Status) == 0
            last = time.monotonic()
            assert n.wait_for(lambda: len(n.ready) == 2, 3)
            when, event = n.ready[1]
            assert (event.series_uid, event.why) == (s2, "quiet period")
            assert 0.95 <= when - last < 2.5  # one quiet period after the *last* instance
        finally:
            assoc.release()
        time.sleep(0.3)
        assert len(n.ready) == 2  # released after it was already emitted: no second event
    finally:
        stop_node(n)


def test_association_beyond_the_limit_is_rejected_and_logged(data_dir: Path, tmp_path: Path,
                                                             caplog: pytest.LogCaptureFixture) -> None:
    n = start_node(data_dir, max_associations=2)
    held = []
    try:
        for i in range(2):
            ae = AE(ae_title=f"HOLD{i}")
            ae.add_requested_context(CTImageStorage, ExplicitVRLittleEndian)
            assoc = ae.associate("127.0.0.1", n.port, ae_title=n.ae)
            assert assoc.is_established
            held.append(assoc)
        with caplog.at_level(logging.WARNING, logger="dicom_node.scp"):
            assert echo("127.0.0.1", n.port, n.ae) == ASSOCIATION_FAILED
        assert any("local limit exceeded" in r.getMessage() for r in caplog.records)
        held.pop().release()
        assert n.wait_for(lambda: echo("127.0.0.1", n.port, n.ae) == 0, 5)
    finally:
        for assoc in held:
            assoc.release()
        stop_node(n)


def test_chunked_receive_mode_stores_the_same(data_dir: Path, tmp_path: Path) -> None:
    """The benchmark's alternative receive path (pynetdicom spools to a temp file)."""
    from pynetdicom import _config as pynetdicom_config

    n = start_node(data_dir, chunked=True)
    try:
        sent = [fresh_uids(pydicom_file(name), tmp_path) for name in ("CT_small.dcm", "JPEG2000.dcm")]
        assert send_files("127.0.0.1", n.port, n.ae, sent) == [0, 0]
        for path in sent:
            assert_same_instance(path, stored_path(n, pydicom.dcmread(path, stop_before_pixels=True)))
    finally:
        stop_node(n)
    assert pynetdicom_config.STORE_RECV_CHUNKED_DATASET is False  # the process-wide flag is restored
