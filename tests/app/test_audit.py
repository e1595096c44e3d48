"""The audit log: append-only JSON lines, one per association / rejection / study opened."""

from __future__ import annotations

import json
import os
import threading
import time
from pathlib import Path

os.environ.setdefault("QT_QPA_PLATFORM", "offscreen")

import pydicom
from pydicom.uid import generate_uid

from app.core.audit import ASSOCIATION, STUDY_OPENED, AuditLog, os_user
from app.core.events import EventHub
from app.core.store import StudyStore
from dicom_node.scu import send_files
from tests.support.node_helpers import Node, fresh_uids, node, pydicom_file  # noqa: F401  (fixture)


def test_records_are_appended_never_rewritten(tmp_path: Path) -> None:
    audit = AuditLog(tmp_path)
    audit.append("test.first", ae="A")
    before = audit.path.read_bytes()
    threads = [threading.Thread(target=lambda i=i: [audit.append("test.many", n=i, k=k) for k in range(20)])
               for i in range(4)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    AuditLog(tmp_path).append("test.last")  # a second writer on the same file (e.g. the desktop)
    data = audit.path.read_bytes()
    assert data.startswith(before)
    lines = data.decode("ascii").splitlines()
    assert len(lines) == 82 and all(json.loads(line)["time"].endswith("+00:00") for line in lines)
    assert [json.loads(line)["event"] for line in (lines[0], lines[-1])] == ["test.first", "test.last"]
    assert os.stat(audit.path).st_mode & 0o777 == 0o600
    # rotation by renaming (never truncation): the next record starts a new private file
    audit.path.rename(tmp_path / "audit.log.1")
    audit.append("test.after_rotation")
    assert [r["event"] for r in audit.records()] == ["test.after_rotation"]


def test_an_unwritable_audit_log_is_an_error_not_a_crash(tmp_path: Path, caplog) -> None:
    (tmp_path / "audit.log").mkdir()  # something that cannot be opened for appending
    record = AuditLog(tmp_path).append("test.lost", ae="A")
    assert record["event"] == "test.lost"
    assert any("cannot write the audit log" in r.getMessage() for r in caplog.records)


def test_association_record_counts_studies_series_and_instances(node: Node, tmp_path: Path) -> None:  # noqa: F811
    study = generate_uid()
    series = [generate_uid(), generate_uid()]
    files = [fresh_uids(pydicom_file("CT_small.dcm"), tmp_path / "a", study=study, series=series[i % 2])
             for i in range(5)]
    other = fresh_uids(pydicom_file("MR_small.dcm"), tmp_path / "b")
    assert send_files("127.0.0.1", node.port, node.ae, [*files, files[0], other], calling_ae="CT01") == [0] * 7
    end = time.monotonic() + 5
    while not list(node.scp.audit.records()) and time.monotonic() < end:
        time.sleep(0.05)
    (record,) = node.scp.audit.records()
    assert record["event"] == ASSOCIATION
    assert (record["ae"], record["called_ae"], record["ip"], record["transport"], record["outcome"]) == \
        ("CT01", node.ae, "127.0.0.1", "plain", "released")
    assert record["c_store"] == 7 and record["statuses"] == {"0x0000": 7}   # the re-send is counted as a C-STORE
    studies = {s["study_uid"]: s for s in record["studies"]}
    assert studies[study] == {"study_uid": study, "series": 2, "instances": 5}  # ... but not as a new instance
    assert studies[str(pydicom.dcmread(other).StudyInstanceUID)]["instances"] == 1
    text = node.scp.audit.path.read_text()
    for ds in (pydicom.dcmread(files[0]), pydicom.dcmread(other)):
        assert str(ds.PatientName) not in text and str(ds.PatientID) not in text


def test_opening_a_study_in_the_viewer_is_audited_with_the_os_user(qtbot, data_dir: Path, tmp_path: Path) -> None:
    from app.core.config import Config
    from ui.main_window import MainWindow

    store = StudyStore(data_dir)
    study = generate_uid()
    for _ in range(3):
        store.store_instance(fresh_uids(pydicom_file("CT_small.dcm"), tmp_path, study=study).read_bytes())
    window = MainWindow(Config(data_dir=data_dir), None, device_choices=None)
    qtbot.addWidget(window)
    window.attach_backend(store, EventHub())
    window.open_study(study)
    (record,) = [r for r in AuditLog(data_dir).records() if r["event"] == STUDY_OPENED]
    assert record["user"] == os_user() and record["study_uid"] == study
    assert (record["series"], record["instances"]) == (3, 3)
    window.shutdown()
    store.close()


def test_listing_studies_from_the_command_line_is_audited(tmp_path: Path) -> None:
    import subprocess
    import sys

    from app.core.audit import STUDIES_LISTED
    from tests.support import REPO

    data = tmp_path / "data"
    store = StudyStore(data)
    store.store_instance(fresh_uids(pydicom_file("CT_small.dcm"), tmp_path / "in").read_bytes())
    store.close()
    done = subprocess.run([sys.executable, "-m", "app", "--config", str(tmp_path / "none.toml"), "--data-dir",
                           str(data), "studies"], cwd=REPO, capture_output=True, text=True, timeout=60,
                          env={**os.environ, "SUDO_USER": "it.admin"})
    assert done.returncode == 0, done.stderr
    (record,) = [r for r in AuditLog(data).records() if r["event"] == STUDIES_LISTED]
    assert (record["user"], record["sudo_user"], record["studies"]) == (os_user(), "it.admin", 1)
