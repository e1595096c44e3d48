"""The versioned index schema: a data dir written by the last release without schema versions
(4c3338c, ``app/store.py``) opens with everything intact; a fresh one gets the latest version;
an index from a newer release is refused; a failed upgrade leaves the index as it was.

The old data dir is made by the old release's own code (``git archive`` of 4c3338c, run in a
subprocess), not by a copy of its schema, so what is tested is what clinics have on disk.
"""

from __future__ import annotations

import dataclasses
import shutil
import sqlite3
import textwrap
from pathlib import Path
from typing import Any

import numpy as np
import pytest
from pydicom import dcmread
from pydicom.uid import generate_uid

from app.core.audit import AuditLog
from app.core.results import AnalysisResult
from app.core.store import MigrationFailed, SchemaTooNew, StudyStore
from app.core.store.migrations import (
    Migration,
    bundled_migrations,
    latest_version,
    migrate,
)
from tests.support.dicom_factory import make_ct_slice, write
from tests.support.previous_release import written_by_release

OLD_RELEASE = "4c3338c"  # the landed release whose store was app/store.py, with no schema version

OLD_WRITER = textwrap.dedent("""
    import json, sys
    from pathlib import Path

    import app.store
    from app.audit import AuditLog
    from app.store import AnalysisResult, StudyStore

    old_root, data_dir, spec = Path(sys.argv[1]), Path(sys.argv[2]), json.loads(Path(sys.argv[3]).read_text())
    assert Path(app.store.__file__).resolve().is_relative_to(old_root.resolve()), app.store.__file__
    store = StudyStore(data_dir)
    for name in spec["sent"]:
        store.store_instance(Path(name).read_bytes(), calling_ae="CT01", peer="10.0.0.7:40001")
    store.store_instance(Path(spec["copied_in"]))                                   # a file copied in
    assert store.store_instance(Path(spec["corrected"]).read_bytes(), calling_ae="CT02").outcome == "replaced"
    ct, mr = spec["ct_series"], spec["mr_series"]
    store.mark_series_ready(ct, 1700000000.5)
    assert store.enqueue_job(ct)
    job = store.claim_job()
    store.save_result(AnalysisResult(
        series_uid=ct, study_uid=spec["study"], status="done", priority="urgent", model="blast_ct",
        model_version="1.0", device="CPU", device_note="int8", validated=True, summary="haemorrhage 0.4 mL",
        findings={"volumes_ml": {"iph": 0.4}, "flags": ["urgent"]}, timings={"total_s": 12.5},
        overlay_path=None, arrival_at=1700000000.25))
    store.finish_job(job.series_uid, job.instance_count, job.enqueued_at)           # a finished job
    assert store.enqueue_job(mr)                                                    # a queued job
    store.save_result(AnalysisResult(series_uid=mr, study_uid=spec["study"], status="not_analysed",
                                     priority="not_analysed", reason="no model for MR"))
    store.set_reviewed(spec["study"])
    audit = AuditLog(data_dir)
    audit.append("dicom.association", ae="CT01", ip="10.0.0.7", c_store=len(spec["sent"]))
    audit.append("viewer.study_opened", study_uid=spec["study"], user="radiologist")
    store.close()
""")


def _slices(directory: Path, n: int, study: str, series: str, modality: str) -> list[Path]:
    return [write(make_ct_slice(np.full((16, 16), i, np.int16), (0, 0, float(i)), instance=i + 1, study_uid=study,
                                series_uid=series, modality=modality), directory) for i in range(n)]


@dataclasses.dataclass(frozen=True)
class OldDataDir:
    path: Path
    study: str
    ct_series: str
    mr_series: str


@pytest.fixture(scope="module")
def old_data_dir(tmp_path_factory: pytest.TempPathFactory) -> OldDataDir:
    """A pristine data dir written by the old release; tests work on copies."""
    work = tmp_path_factory.mktemp("old-release")
    study, ct, mr = generate_uid(), generate_uid(), generate_uid()
    ct_files = _slices(work / "in", 3, study, ct, "CT")
    mr_files = _slices(work / "in", 2, study, mr, "MR")
    other_study = _slices(work / "other", 1, generate_uid(), generate_uid(), "CT")
    corrected = ct_files[0].parent / "corrected.dcm"
    ds = dcmread(ct_files[0])
    ds.SeriesDescription = "corrected by the modality"
    ds.save_as(corrected, enforce_file_format=True)
    spec = {"sent": [str(p) for p in ct_files + mr_files], "copied_in": str(other_study[0]),
            "corrected": str(corrected), "study": study, "ct_series": ct, "mr_series": mr}
    data_dir = written_by_release(OLD_RELEASE, work, OLD_WRITER, spec)
    return OldDataDir(data_dir, study, ct, mr)


def _copy(old: OldDataDir, tmp_path: Path) -> Path:
    target = tmp_path / "data"
    shutil.copytree(old.path, target)
    return target


def _raw(db: Path) -> dict[str, Any]:
    """Every row of every table, the schema and the version, read without the store."""
    conn = sqlite3.connect(db)
    try:
        tables = [r[0] for r in conn.execute("SELECT name FROM sqlite_master WHERE type='table' ORDER BY name")]
        return {
            "user_version": conn.execute("PRAGMA user_version").fetchone()[0],
            "schema": sorted(conn.execute("SELECT type, name, tbl_name, sql FROM sqlite_master").fetchall(),
                             key=repr),
            "rows": {t: sorted(conn.execute(f"SELECT * FROM {t}").fetchall(), key=repr) for t in tables},
        }
    finally:
        conn.close()


def _columns(db: Path) -> dict[str, list[str]]:
    conn = sqlite3.connect(db)
    try:
        tables = [r[0] for r in conn.execute("SELECT name FROM sqlite_master WHERE type='table'")]
        return {t: [r[1] for r in conn.execute(f"PRAGMA table_info({t})")] for t in tables}
    finally:
        conn.close()


def _old_columns_only(db: Path, columns: dict[str, list[str]]) -> dict[str, list[tuple]]:
    """Every row of the given tables, read as those columns only (later migrations may add columns)."""
    conn = sqlite3.connect(db)
    try:
        return {t: sorted(conn.execute(f"SELECT {', '.join(c)} FROM {t}").fetchall(), key=repr)
                for t, c in columns.items()}
    finally:
        conn.close()


def _files(data_dir: Path) -> dict[str, bytes]:
    return {str(p.relative_to(data_dir)): p.read_bytes() for p in sorted(data_dir.rglob("*"))
            if p.is_file() and not p.name.startswith("index.sqlite3")}


def test_a_data_dir_from_the_release_before_schema_versions_opens_intact(old_data_dir: OldDataDir,
                                                                        tmp_path: Path) -> None:
    data_dir = _copy(old_data_dir, tmp_path)
    before, files_before = _raw(data_dir / "index.sqlite3"), _files(data_dir)
    assert before["user_version"] == 0  # the old release recorded no version
    assert {t: len(before["rows"][t]) for t in ("studies", "series", "instances", "replacements", "jobs", "results")} \
        == {"studies": 2, "series": 3, "instances": 6, "replacements": 1, "jobs": 2, "results": 2}
    audit_before = list(AuditLog(data_dir).records())

    store = StudyStore(data_dir)
    after = _raw(data_dir / "index.sqlite3")
    assert after["user_version"] == latest_version()  # recorded as schema 1, then the later files ran ...
    old_tables = set(before["rows"])
    old_columns, new_columns = _columns(old_data_dir.path / "index.sqlite3"), _columns(data_dir / "index.sqlite3")
    assert all(new_columns[t][:len(c)] == c for t, c in old_columns.items())  # ... that only add tables and columns ...
    assert _old_columns_only(data_dir / "index.sqlite3", old_columns) == before["rows"]  # ... and change no row
    assert all(not r for t, r in after["rows"].items() if t not in old_tables)  # later tables start empty
    assert _files(data_dir) == files_before           # the files, superseded copy and audit log untouched

    studies = {s.study_uid: s for s in store.list_studies()}
    assert len(studies) == 2
    study = studies[old_data_dir.study]
    assert (study.n_series, study.n_instances, study.calling_ae) == (2, 5, "CT01")
    assert study.reviewed_at is not None and study.modalities == "CT\\MR"
    ct = store.get_series(old_data_dir.ct_series)
    assert ct is not None and ct.n_instances == 3 and ct.ready_at == 1700000000.5
    assert len(store.instance_rows()) == 6 and store.verify() == []
    assert all(p.is_file() for p in store.series_files(old_data_dir.ct_series))
    (replacement,) = store.replacements()
    assert replacement["calling_ae"] == "CT02" and (data_dir / replacement["superseded_path"]).is_file()

    done = store.get_result(old_data_dir.ct_series)
    assert done == AnalysisResult(
        series_uid=old_data_dir.ct_series, study_uid=old_data_dir.study, status="done", priority="urgent",
        model="blast_ct", model_version="1.0", device="CPU", device_note="int8", validated=True,
        summary="haemorrhage 0.4 mL", findings={"volumes_ml": {"iph": 0.4}, "flags": ["urgent"]},
        timings={"total_s": 12.5}, overlay_path=None, arrival_at=1700000000.25, created_at=done.created_at)
    not_analysed = store.get_result(old_data_dir.mr_series)
    assert not_analysed is not None and not_analysed.reason == "no model for MR"
    assert len(store.results_for_study(old_data_dir.study)) == 2

    assert store.job_state(old_data_dir.ct_series) == "done"
    assert store.pending_jobs() == 1
    job = store.claim_job()                            # the queued job is still there and runs
    assert job is not None and job.series_uid == old_data_dir.mr_series and job.instance_count == 2
    store.finish_job(job.series_uid, job.instance_count, job.enqueued_at)
    assert store.job_state(old_data_dir.mr_series) == "done"

    assert list(AuditLog(data_dir).records()) == audit_before
    assert [r["event"] for r in audit_before] == ["dicom.association", "viewer.study_opened"]
    store.close()

    again = StudyStore(data_dir)                       # a second open changes nothing
    assert _raw(data_dir / "index.sqlite3")["user_version"] == latest_version() and len(again.list_studies()) == 2
    again.close()


def test_a_fresh_data_dir_gets_the_latest_schema_and_the_old_releases_tables(old_data_dir: OldDataDir,
                                                                              tmp_path: Path) -> None:
    data_dir = tmp_path / "fresh"
    StudyStore(data_dir).close()
    fresh = _raw(data_dir / "index.sqlite3")
    assert fresh["user_version"] == latest_version() == len(bundled_migrations())
    if latest_version() == 1:  # until 0002 exists, schema 1 is exactly what the old release created
        assert fresh["schema"] == _raw(old_data_dir.path / "index.sqlite3")["schema"]


def test_an_index_from_a_newer_release_is_refused(tmp_path: Path) -> None:
    data_dir = tmp_path / "data"
    StudyStore(data_dir).close()
    newer = latest_version() + 1
    conn = sqlite3.connect(data_dir / "index.sqlite3")
    conn.execute(f"PRAGMA user_version = {newer}")
    conn.close()
    with pytest.raises(SchemaTooNew, match=f"newer FirstLook \\(schema version {newer}; this version knows up to"):
        StudyStore(data_dir)
    with pytest.raises(SchemaTooNew):
        StudyStore.rebuild(data_dir)                   # a healthy newer index is not rebuilt over either
    assert _raw(data_dir / "index.sqlite3")["user_version"] == newer
    assert not list(data_dir.glob("index.sqlite3.damaged-*"))


def test_a_failed_upgrade_leaves_the_index_as_it_was(tmp_path: Path) -> None:
    data_dir = tmp_path / "data"
    store = StudyStore(data_dir)
    (f,) = _slices(tmp_path / "in", 1, generate_uid(), generate_uid(), "CT")
    store.store_instance(f.read_bytes(), calling_ae="CT01")
    store.close()
    db = data_dir / "index.sqlite3"
    before = _raw(db)
    n = latest_version()  # the tests add the next two numbers, whatever the bundled schema reached
    good = Migration(n + 1, f"{n + 1:04d}_sent_results.sql", "-- results sent to PACS\nCREATE TABLE sent_results (\n"
                     "    series_uid TEXT PRIMARY KEY, sent_at REAL NOT NULL\n);\n")
    broken = Migration(n + 2, f"{n + 2:04d}_broken.sql", "CREATE TABLE other (x TEXT);\nINSERT INTO no_such_table VALUES (1);\n")
    conn = sqlite3.connect(db, isolation_level=None)
    try:
        with pytest.raises(MigrationFailed, match=f"from schema version {n} to {n + 2} failed .*no_such_table.*unchanged"):
            migrate(conn, [*bundled_migrations(), good, broken])
        assert _raw(db) == before                      # not even the good one is kept: one transaction
        assert migrate(conn, [*bundled_migrations(), good]) == n + 1
    finally:
        conn.close()
    upgraded = _raw(db)
    assert upgraded["user_version"] == n + 1 and upgraded["rows"]["sent_results"] == []
    assert {t: rows for t, rows in upgraded["rows"].items() if t != "sent_results"} == before["rows"]
    with pytest.raises(SchemaTooNew):                  # and this code, which knows only 0001, refuses it
        StudyStore(data_dir)


def test_migrations_must_be_numbered_without_gaps(tmp_path: Path) -> None:
    conn = sqlite3.connect(tmp_path / "x.sqlite3", isolation_level=None)
    try:
        with pytest.raises(ValueError, match="without gaps"):
            n = latest_version()
            migrate(conn, [*bundled_migrations(), Migration(n + 2, f"{n + 2:04d}_skipped_one.sql", "CREATE TABLE t (x);")])
        assert conn.execute("PRAGMA user_version").fetchone()[0] == 0
    finally:
        conn.close()
