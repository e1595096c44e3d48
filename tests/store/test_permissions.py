"""The data dir is private to the service user whatever the umask: directories 0700, files 0600.

(The end-to-end version through ``firstlook --headless`` is in test_security_headless.py.)
"""

from __future__ import annotations

import os
import stat
from pathlib import Path
from typing import Iterator

import pytest
from pydicom.uid import generate_uid

from app.core.audit import AuditLog
from app.core.results import AnalysisResult
from app.core.store import StudyStore
from tests.support.node_helpers import fresh_uids, pydicom_file
from tests.support.files import permissions


@pytest.fixture
def open_umask() -> Iterator[None]:
    """The worst case: a process started with umask 000 (e.g. a careless wrapper script)."""
    previous = os.umask(0)
    try:
        yield
    finally:
        os.umask(previous)


def test_everything_the_store_creates_is_private_under_umask_000(open_umask: None, tmp_path: Path) -> None:
    data_dir = tmp_path / "data"
    store = StudyStore(data_dir)
    study = generate_uid()
    first = fresh_uids(pydicom_file("CT_small.dcm"), tmp_path / "in", study=study)
    store.store_instance(first.read_bytes(), calling_ae="CT01")           # bytes (the SCP's path)
    store.store_instance(fresh_uids(pydicom_file("MR_small.dcm"), tmp_path / "in"))  # a file copied in
    import pydicom

    ds = pydicom.dcmread(first)
    ds.SeriesDescription = "corrected"
    changed = tmp_path / "changed.dcm"
    ds.save_as(changed)
    assert store.store_instance(changed.read_bytes()).outcome == "replaced"  # superseded/ gets the old one
    series = ds.SeriesInstanceUID
    overlay = store.result_overlay_dir(series) / "cam.npz"
    overlay.write_bytes(b"written by an analyser with the default mode")   # as np.savez would
    store.save_result(AnalysisResult(series_uid=series, study_uid=study, status="done", priority="routine",
                                     overlay_path=str(overlay.relative_to(data_dir))))
    AuditLog(data_dir).append("test.event")
    assert (data_dir / "index.sqlite3-wal").exists() and (data_dir / "index.sqlite3-shm").exists()
    assert list((data_dir / "superseded").iterdir())
    assert permissions(data_dir) == []
    store.close()
    rebuilt, count = StudyStore.rebuild(data_dir)
    assert count == 2
    assert permissions(data_dir) == []
    rebuilt.close()


def test_a_data_dir_left_readable_by_an_older_version_is_closed_on_open(tmp_path: Path) -> None:
    data_dir = tmp_path / "data"
    StudyStore(data_dir).close()
    for path in (data_dir, data_dir / "studies", data_dir / "index.sqlite3"):
        path.chmod(0o755 if path.is_dir() else 0o644)
    StudyStore(data_dir).close()
    assert stat.S_IMODE(data_dir.stat().st_mode) == 0o700
    assert stat.S_IMODE((data_dir / "studies").stat().st_mode) == 0o700
    assert stat.S_IMODE((data_dir / "index.sqlite3").stat().st_mode) == 0o600
