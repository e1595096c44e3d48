"""The durable store on its own: restart, rebuild, unindexed files, replacements."""

from __future__ import annotations

import sqlite3
from pathlib import Path

import numpy as np
import pydicom
import pytest
from pydicom.uid import generate_uid

from app.core.store import BadUID, MissingUID, OutOfResources, StudyStore, UnreadableDataset
from tests.support.dicom_factory import make_ct_slice, write


def ct_files(directory: Path, n: int, **kwargs: object) -> list[Path]:
    study, series = generate_uid(), generate_uid()
    return [write(make_ct_slice(np.full((32, 32), i, np.int16), (0, 0, float(i)), instance=i + 1,
                                study_uid=study, series_uid=series, **kwargs), directory)  # type: ignore[arg-type]
            for i in range(n)]


def test_restart_index_and_files_agree(data_dir: Path, tmp_path: Path) -> None:
    files = ct_files(tmp_path / "in", 5)
    store = StudyStore(data_dir)
    for f in files:
        store.store_instance(f.read_bytes(), calling_ae="CT01", peer="127.0.0.1:1")
    store.close()
    again = StudyStore(data_dir)
    assert again.verify() == []
    (study,) = again.list_studies()
    assert (study.n_series, study.n_instances, study.calling_ae) == (1, 5, "CT01")
    series = again.list_series(study.study_uid)[0]
    assert [p.read_bytes() for p in again.series_files(series.series_uid)] == [f.read_bytes() for f in files]


def test_rebuild_after_index_deleted_or_corrupted(data_dir: Path, tmp_path: Path) -> None:
    files = ct_files(tmp_path / "in", 4)
    store = StudyStore(data_dir)
    for f in files:
        store.store_instance(f)
    store.close()
    for part in data_dir.glob("index.sqlite3*"):
        part.unlink()
    rebuilt, count = StudyStore.rebuild(data_dir)
    assert count == 4 and rebuilt.verify() == [] and rebuilt.list_studies()[0].n_instances == 4
    rebuilt.close()
    db = data_dir / "index.sqlite3"
    db.write_bytes(b"this is not a database" * 100)
    for part in data_dir.glob("index.sqlite3-*"):
        part.unlink()
    rebuilt, count = StudyStore.rebuild(data_dir)
    assert count == 4 and rebuilt.verify() == []
    assert list(data_dir.glob("index.sqlite3.damaged-*"))  # the damaged index is kept aside, not deleted


def test_adopt_unindexed_files_after_a_lost_commit(data_dir: Path, tmp_path: Path) -> None:
    files = ct_files(tmp_path / "in", 3)
    store = StudyStore(data_dir)
    stored = [store.store_instance(f) for f in files]
    # simulate a power cut that kept the fsynced file but not the last index commit
    conn = sqlite3.connect(data_dir / "index.sqlite3")
    conn.execute("DELETE FROM instances WHERE sop_uid=?", (stored[2].header.sop_uid,))
    conn.commit()
    conn.close()
    assert store.verify()  # disagreement detected
    assert store.adopt_unindexed() == 1
    assert store.verify() == []
    assert store.adopt_unindexed() == 0


def test_unindexed_file_is_never_overwritten_blindly(data_dir: Path, tmp_path: Path) -> None:
    ds = make_ct_slice(np.zeros((16, 16), np.int16), (0, 0, 0))
    store = StudyStore(data_dir)
    first = store.store_instance(write(ds, tmp_path / "a").read_bytes())
    original = first.path.read_bytes()
    conn = sqlite3.connect(data_dir / "index.sqlite3")
    conn.execute("DELETE FROM instances")
    conn.commit()
    conn.close()
    ds.SeriesDescription = "other bytes"
    again = store.store_instance(write(ds, tmp_path / "b").read_bytes())
    assert again.outcome == "replaced"
    (rep,) = store.replacements()
    assert (data_dir / rep["superseded_path"]).read_bytes() == original


def test_resent_under_another_series_moves_the_instance(data_dir: Path, tmp_path: Path) -> None:
    ds = make_ct_slice(np.zeros((16, 16), np.int16), (0, 0, 0))
    store = StudyStore(data_dir)
    old = store.store_instance(write(ds, tmp_path / "a"))
    ds.SeriesInstanceUID = generate_uid()
    new = store.store_instance(write(ds, tmp_path / "b"))
    assert new.outcome == "replaced" and not old.path.exists() and new.path.exists()
    (row,) = store.instance_rows()
    assert row["series_uid"] == ds.SeriesInstanceUID
    assert store.verify() == []


def test_failures_are_classified(data_dir: Path, tmp_path: Path) -> None:
    store = StudyStore(data_dir)
    with pytest.raises(UnreadableDataset):
        store.store_instance(b"\0" * 128 + b"DICM" + b"\x08\x00\x18\x00UI\xff\x00" + b"1.2")
    ds = make_ct_slice(np.zeros((8, 8), np.int16), (0, 0, 0))
    del ds.SeriesInstanceUID
    with pytest.raises(MissingUID):
        store.store_instance(write(ds, tmp_path / "m"))
    ds = make_ct_slice(np.zeros((8, 8), np.int16), (0, 0, 0))
    ds.SOPInstanceUID = "1.2.3/../../../x"
    with pytest.raises(BadUID):
        store.store_instance(write(ds, tmp_path / "b", name="bad.dcm"))
    small = StudyStore(data_dir, min_free_bytes=1 << 60)
    with pytest.raises(OutOfResources):
        small.store_instance(ct_files(tmp_path / "ok", 1)[0])
    assert store.instance_rows() == [] and list(store.tmp_dir.iterdir()) == []


def test_stored_file_is_a_part10_file_with_the_header_indexed(data_dir: Path, tmp_path: Path) -> None:
    (f,) = ct_files(tmp_path / "in", 1)
    store = StudyStore(data_dir)
    stored = store.store_instance(f.read_bytes(), calling_ae="CT01")
    ds = pydicom.dcmread(stored.path)
    assert stored.path == data_dir / "studies" / ds.StudyInstanceUID / ds.SeriesInstanceUID / f"{ds.SOPInstanceUID}.dcm"
    (row,) = store.instance_rows()
    assert row["transfer_syntax"] == "1.2.840.10008.1.2.1" and row["instance_number"] == 1
    assert oct(stored.path.parent.parent.parent.stat().st_mode & 0o777) == "0o700"


def test_identical_resend_is_recognised_before_writing(data_dir: Path, tmp_path: Path) -> None:
    (f,) = ct_files(tmp_path / "in", 1)
    data = f.read_bytes()
    store = StudyStore(data_dir)
    first = store.store_instance(data)
    before = first.path.stat()
    # A tmp dir that cannot be written proves the duplicate path writes nothing.
    store.tmp_dir.rmdir()
    store.tmp_dir.write_bytes(b"")
    again = store.store_instance(data, sop_uid_hint=first.header.sop_uid)
    assert again.outcome == "duplicate" and again.path == first.path
    assert first.path.stat().st_mtime_ns == before.st_mtime_ns
    with pytest.raises(OutOfResources):  # without the hint the bytes are written first
        store.store_instance(data)
