"""End to end through ``firstlook --headless`` (a real process, started with umask 000):

* a radiograph with a distinctive patient name and ID is received, replaced by a corrected
  version and analysed by CheXNet; the name and ID appear nowhere in the process's log output
  (at DEBUG), while the audit log has the UIDs and the counts;
* every directory the service created in its data dir is 0700 and every file 0600 (index,
  its -wal/-shm, instances, superseded version, overlay, audit log, run marker), while it runs
  and after it stopped.
"""

from __future__ import annotations

import os
import signal
import sqlite3
import subprocess
import sys
import time
import warnings
from pathlib import Path

import numpy as np
import pydicom
from pydicom.dataelem import DataElement

from app.core.audit import ASSOCIATION, ASSOCIATION_REJECTED, AuditLog
from dicom_node.scu import ASSOCIATION_FAILED, echo, send_files
from tests.support import REPO, free_port
from tests.support.dicom_factory import make_ct_slice, make_cxr_dataset, write
from tests.support.files import permissions

NAME = "Quixotica^Zebulon^Marchbanks"
PATIENT_ID = "PIDQX77310"


def result_row(data_dir: Path, series_uid: str) -> tuple[str, str | None] | None:
    conn = sqlite3.connect(f"file:{data_dir / 'index.sqlite3'}?mode=ro", uri=True, timeout=5)
    try:
        return conn.execute("SELECT status, overlay_path FROM results WHERE series_uid=?", (series_uid,)).fetchone()
    except sqlite3.OperationalError:
        return None
    finally:
        conn.close()


def test_patient_identity_stays_out_of_logs_and_the_data_dir_is_private(tmp_path: Path, packs_dir: Path,
                                                                       cxr_dir: Path) -> None:
    data_dir, port = tmp_path / "data", free_port()
    config = tmp_path / "firstlook.toml"
    config.write_text(f'data_dir = "{data_dir}"\ncache_dir = "{tmp_path / "cache"}"\npacks_dir = "{packs_dir}"\n'
                      f'port = {port}\napi_port = {free_port()}\nallow_ae = ["CR01"]\nquiet_period_s = 0.5\nmin_free_mb = 0\n'
                      'log_level = "DEBUG"\n')
    png = sorted((cxr_dir / "images").glob("*.png"))[0]
    ds = make_cxr_dataset(png, modality="CR", patient_name=NAME, patient_id=PATIENT_ID)
    first = write(ds, tmp_path / "send")
    ds.SeriesDescription = "PA (corrected)"  # same SOP Instance UID, different bytes: a replacement
    corrected = write(ds, tmp_path / "corrected")
    # An odd sender: Cyrillic character set and the patient elements with wrong VRs. pydicom's
    # value validation would quote them in a warning ("Invalid value for VR DA: '...'").
    odd = make_ct_slice(np.zeros((16, 16), np.int16), (0.0, 0.0, 0.0), modality="MR", study_uid=ds.StudyInstanceUID)
    odd.SpecificCharacterSet = "ISO_IR 144"
    with warnings.catch_warnings():  # pydicom warns here, in the sender, about the wrong VRs
        warnings.simplefilter("ignore")
        odd.add(DataElement(0x00100010, "CS", NAME.upper()))
        odd.add(DataElement(0x00100020, "DA", PATIENT_ID))
    odd_path = write(odd, tmp_path / "odd")
    stderr_path = tmp_path / "stderr.log"
    with open(stderr_path, "wb") as stderr:
        proc = subprocess.Popen([sys.executable, "-m", "app", "--config", str(config), "--headless"], cwd=REPO,
                                stdout=stderr, stderr=stderr, umask=0,
                                env={**os.environ, "HOME": str(tmp_path), "FIRSTLOOK_LOG_DIR": str(tmp_path / "logs")})
    try:
        end = time.monotonic() + 60
        while echo("127.0.0.1", port, "FIRSTLOOK", calling_ae="CR01", timeout=2) != 0:
            assert proc.poll() is None and time.monotonic() < end, stderr_path.read_text()[-3000:]
            time.sleep(0.3)
        assert send_files("127.0.0.1", port, "FIRSTLOOK", [first], calling_ae="INTRUDER") == [ASSOCIATION_FAILED]
        assert send_files("127.0.0.1", port, "FIRSTLOOK", [first], calling_ae="CR01") == [0]
        assert send_files("127.0.0.1", port, "FIRSTLOOK", [corrected], calling_ae="CR01") == [0]
        assert send_files("127.0.0.1", port, "FIRSTLOOK", [odd_path], calling_ae="CR01") == [0]
        end = time.monotonic() + 120
        while (row := result_row(data_dir, ds.SeriesInstanceUID)) is None:
            assert proc.poll() is None and time.monotonic() < end, stderr_path.read_text()[-3000:]
            time.sleep(0.3)
        assert row[0] == "done", stderr_path.read_text()[-3000:]
        assert row[1] and (data_dir / row[1]).is_file()  # the CAM overlay
        assert list((data_dir / "superseded").iterdir())  # the replaced version is kept
        for suffix in ("-wal", "-shm"):
            assert (data_dir / f"index.sqlite3{suffix}").exists()
        assert permissions(data_dir) == []  # while running (WAL files exist only now)
    finally:
        proc.send_signal(signal.SIGTERM)
        proc.wait(60)
    assert proc.returncode == 0, stderr_path.read_text()[-3000:]
    assert permissions(data_dir) == []

    log = stderr_path.read_text(errors="replace")
    assert "DEBUG" in log and "listening on 127.0.0.1" in log and ds.SeriesInstanceUID in log  # it did log
    assert "replaced" in log and "INTRUDER" in log
    for needle in (NAME, *NAME.split("^"), PATIENT_ID):
        assert needle.lower() not in log.lower(), f"{needle!r} appears in the log output"

    records = list(AuditLog(data_dir).records())
    stores = [r for r in records if r["event"] == ASSOCIATION and r["c_store"]]
    assert len(stores) == 3 and all(r["ae"] == "CR01" and r["ip"] == "127.0.0.1" for r in stores)
    assert all(r["studies"] == [{"study_uid": ds.StudyInstanceUID, "series": 1, "instances": 1}] for r in stores)
    assert [r["ae"] for r in records if r["event"] == ASSOCIATION_REJECTED] == ["INTRUDER"]
    audit_text = (data_dir / "audit.log").read_text()
    for needle in (*NAME.split("^"), PATIENT_ID):
        assert needle not in audit_text
    assert pydicom.dcmread(data_dir / "studies" / ds.StudyInstanceUID / ds.SeriesInstanceUID
                           / f"{ds.SOPInstanceUID}.dcm").PatientName == NAME  # the data itself is intact
