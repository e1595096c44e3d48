"""The index: one SQLite (WAL) database of studies, series, instances, replacements and results.

Connections are per thread (SQLite connections are not shared across threads here); writes
are serialised by ``write_lock`` so a read-then-write (upsert, claim) is never interleaved.
Paths in the index are relative to the data dir. The schema comes from ``migrations``.
"""

from __future__ import annotations

import json
import os
import sqlite3
import threading
import time
from pathlib import Path
from typing import Any, Callable, Sequence

from app.core.results import AnalysisResult
from app.core.store.migrations import Migration, migrate
from app.core.store.part10 import InstanceHeader
from app.core.store.records import SeriesRecord, StudyRecord

INDEX_FILE = "index.sqlite3"

# (sop_uid, old_sha256, new_sha256, superseded_path, replaced_at, calling_ae)
Replacement = tuple[str, str, str, str, float, str]

_STUDY_SELECT = """
    SELECT s.*, (SELECT count(*) FROM series se WHERE se.study_uid = s.study_uid) AS n_series,
           (SELECT count(*) FROM instances i WHERE i.study_uid = s.study_uid) AS n_instances
    FROM studies s"""

_SERIES_SELECT = """SELECT se.*, (SELECT count(*) FROM instances i WHERE i.series_uid = se.series_uid) AS n
                    FROM series se"""


def study_from_row(row: sqlite3.Row) -> StudyRecord:
    return StudyRecord(
        study_uid=row["study_uid"], patient_id=row["patient_id"] or "", patient_name=row["patient_name"] or "",
        study_date=row["study_date"] or "", study_time=row["study_time"] or "",
        description=row["description"] or "", modalities=row["modalities"] or "",
        accession=row["accession"] or "", n_series=row["n_series"], n_instances=row["n_instances"],
        first_received=row["first_received"], last_received=row["last_received"],
        calling_ae=row["calling_ae"] or "", reviewed_at=row["reviewed_at"],
    )


def series_from_row(row: sqlite3.Row) -> SeriesRecord:
    return SeriesRecord(
        series_uid=row["series_uid"], study_uid=row["study_uid"], modality=row["modality"] or "",
        body_part=row["body_part"] or "", description=row["description"] or "",
        series_number=row["series_number"], n_instances=row["n"], first_received=row["first_received"],
        last_received=row["last_received"], ready_at=row["ready_at"],
    )


def result_from_row(row: sqlite3.Row) -> AnalysisResult:
    return AnalysisResult(
        series_uid=row["series_uid"], study_uid=row["study_uid"], status=row["status"],
        priority=row["priority"], reason=row["reason"], model=row["model"],
        model_version=row["model_version"], device=row["device"], device_note=row["device_note"],
        validated=bool(row["validated"]), summary=row["summary"] or "",
        findings=json.loads(row["findings"] or "{}"), timings=json.loads(row["timings"] or "{}"),
        overlay_path=row["overlay_path"], arrival_at=row["arrival_at"], created_at=row["created_at"],
        preliminary=bool(row["preliminary"]), members_done=row["members_done"], members_total=row["members_total"],
        priority_note=row["priority_note"],
    )


def synchronous_mode(value: str) -> str:
    """SQLite's ``synchronous`` for the index: NORMAL or FULL (see ``StudyStore``)."""
    if value.upper() not in ("NORMAL", "FULL"):
        raise ValueError("index_sync must be NORMAL or FULL")
    return value.upper()


def is_healthy(db_path: Path) -> bool:
    """SQLite's quick_check on a database file, without opening it as an index."""
    try:
        probe = sqlite3.connect(db_path)
        try:
            return probe.execute("PRAGMA quick_check").fetchone()[0] == "ok"
        finally:
            probe.close()
    except sqlite3.DatabaseError:
        return False


class Index:
    def __init__(self, db_path: Path, synchronous: str = "NORMAL",
                 migrations: Sequence[Migration] | None = None) -> None:
        """``synchronous`` is SQLite's: NORMAL or FULL (see ``StudyStore``). ``migrations``
        defaults to the bundled schema files."""
        self.db_path = Path(db_path)
        self.synchronous = synchronous_mode(synchronous)
        # SQLite creates -wal and -shm with the database file's mode: create it 0600 first.
        os.close(os.open(self.db_path, os.O_WRONLY | os.O_CREAT | os.O_CLOEXEC, 0o600))
        for suffix in ("", "-wal", "-shm"):
            part = self.db_path.with_name(self.db_path.name + suffix)
            if part.exists():
                os.chmod(part, 0o600)  # repairs a data dir made by an older version
        self._local = threading.local()
        self.write_lock = threading.RLock()
        self._all_conns: list[sqlite3.Connection] = []
        self._conns_lock = threading.Lock()
        with self.write_lock:
            try:
                self.schema_version = migrate(self.conn(), migrations)
            except BaseException:
                self.close()
                raise
        os.chmod(self.db_path, 0o600)

    # -- connections ---------------------------------------------------------------------------
    def conn(self) -> sqlite3.Connection:
        """This thread's connection (autocommit; transactions are explicit)."""
        conn = getattr(self._local, "conn", None)
        if conn is None:
            conn = sqlite3.connect(self.db_path, timeout=30, isolation_level=None, check_same_thread=False)
            conn.row_factory = sqlite3.Row
            conn.execute("PRAGMA journal_mode=WAL")
            conn.execute(f"PRAGMA synchronous={self.synchronous}")
            conn.execute("PRAGMA foreign_keys=ON")
            self._local.conn = conn
            with self._conns_lock:
                self._all_conns.append(conn)
        return conn

    def close(self) -> None:
        with self._conns_lock:
            for conn in self._all_conns:
                try:
                    conn.close()
                except sqlite3.ProgrammingError:
                    pass
            self._all_conns.clear()
        self._local = threading.local()

    def is_healthy(self) -> bool:
        try:
            return self.conn().execute("PRAGMA quick_check").fetchone()[0] == "ok"
        except sqlite3.DatabaseError:
            return False

    # -- instances -------------------------------------------------------------------------------
    def record_instance(self, h: InstanceHeader, rel: str, sha: str, size: int, calling_ae: str, peer: str,
                        received_at: float, replacement: Replacement | None = None) -> None:
        """One transaction: the instance row, its series and study, and the replacement it made
        (if any), so a crash never leaves a row claiming a replacement that did not happen."""
        conn = self.conn()
        conn.execute("BEGIN IMMEDIATE")
        try:
            if replacement is not None:
                conn.execute(
                    "INSERT INTO replacements(sop_uid, old_sha256, new_sha256, superseded_path, replaced_at, calling_ae)"
                    " VALUES (?,?,?,?,?,?)", replacement)
            conn.execute(
                """INSERT INTO studies(study_uid, patient_id, patient_name, patient_birth_date, patient_sex,
                       study_date, study_time, accession, description, modalities,
                       first_received, last_received, calling_ae, peer)
                   VALUES (?,?,?,?,?,?,?,?,?,?,?,?,?,?)
                   ON CONFLICT(study_uid) DO UPDATE SET last_received=max(last_received, excluded.last_received),
                       first_received=min(first_received, excluded.first_received),
                       modalities=CASE WHEN instr('\\' || modalities || '\\', '\\' || excluded.modalities || '\\') > 0
                                       OR excluded.modalities = '' THEN modalities
                                       WHEN modalities = '' THEN excluded.modalities
                                       ELSE modalities || '\\' || excluded.modalities END""",
                (h.study_uid, h.patient_id, h.patient_name, h.patient_birth_date, h.patient_sex, h.study_date,
                 h.study_time, h.accession, h.study_description, h.modality, received_at, received_at,
                 calling_ae, peer),
            )
            conn.execute(
                """INSERT INTO series(series_uid, study_uid, modality, body_part, description, series_number,
                       first_received, last_received)
                   VALUES (?,?,?,?,?,?,?,?)
                   ON CONFLICT(series_uid) DO UPDATE SET last_received=max(last_received, excluded.last_received),
                       first_received=min(first_received, excluded.first_received)""",
                (h.series_uid, h.study_uid, h.modality, h.body_part, h.series_description, h.series_number,
                 received_at, received_at),
            )
            conn.execute(
                """INSERT INTO instances(sop_uid, series_uid, study_uid, sop_class_uid, transfer_syntax,
                       instance_number, path, size, sha256, received_at, calling_ae, peer)
                   VALUES (?,?,?,?,?,?,?,?,?,?,?,?)
                   ON CONFLICT(sop_uid) DO UPDATE SET path=excluded.path, size=excluded.size,
                       series_uid=excluded.series_uid, study_uid=excluded.study_uid,
                       sop_class_uid=excluded.sop_class_uid, instance_number=excluded.instance_number,
                       sha256=excluded.sha256, received_at=excluded.received_at,
                       transfer_syntax=excluded.transfer_syntax, calling_ae=excluded.calling_ae, peer=excluded.peer""",
                (h.sop_uid, h.series_uid, h.study_uid, h.sop_class_uid, h.transfer_syntax, h.instance_number,
                 rel, size, sha, received_at, calling_ae, peer),
            )
            conn.execute("COMMIT")
        except BaseException:
            conn.execute("ROLLBACK")
            raise

    def record_replacement(self, replacement: Replacement) -> None:
        self.conn().execute(
            "INSERT INTO replacements(sop_uid, old_sha256, new_sha256, superseded_path, replaced_at,"
            " calling_ae) VALUES (?,?,?,?,?,?)", replacement)

    def instance(self, sop_uid: str) -> sqlite3.Row | None:
        return self.conn().execute("SELECT * FROM instances WHERE sop_uid=?", (sop_uid,)).fetchone()

    def instance_rows(self, series_uid: str | None = None) -> list[dict[str, Any]]:
        sql, args = "SELECT * FROM instances", ()
        if series_uid:
            sql, args = sql + " WHERE series_uid=?", (series_uid,)
        return [dict(r) for r in self.conn().execute(sql, args).fetchall()]

    def indexed_paths(self) -> set[str]:
        return {r["path"] for r in self.conn().execute("SELECT path FROM instances")}

    def series_paths(self, series_uid: str) -> list[str]:
        rows = self.conn().execute(
            "SELECT path FROM instances WHERE series_uid=? ORDER BY instance_number, sop_uid", (series_uid,)
        ).fetchall()
        return [r["path"] for r in rows]

    def forget_instances(self) -> None:
        """Empty the instance table (``reindex`` refills it from the files)."""
        conn = self.conn()
        conn.execute("BEGIN IMMEDIATE")
        conn.execute("DELETE FROM instances")
        conn.execute("COMMIT")

    def forget_empty_series_and_studies(self) -> None:
        conn = self.conn()
        conn.execute("DELETE FROM series WHERE series_uid NOT IN (SELECT series_uid FROM instances)")
        conn.execute("DELETE FROM studies WHERE study_uid NOT IN (SELECT study_uid FROM instances)")

    def replacements(self) -> list[dict[str, Any]]:
        return [dict(r) for r in self.conn().execute("SELECT * FROM replacements ORDER BY id").fetchall()]

    def recorded_superseded_paths(self) -> set[str]:
        return {r["superseded_path"] for r in self.conn().execute("SELECT superseded_path FROM replacements")}

    # -- studies and series ----------------------------------------------------------------------
    def list_studies(self) -> list[StudyRecord]:
        rows = self.conn().execute(_STUDY_SELECT + " ORDER BY s.first_received").fetchall()
        return [study_from_row(r) for r in rows]

    def get_study(self, study_uid: str) -> StudyRecord | None:
        row = self.conn().execute(_STUDY_SELECT + " WHERE s.study_uid=?", (study_uid,)).fetchone()
        return study_from_row(row) if row else None

    def list_series(self, study_uid: str | None = None) -> list[SeriesRecord]:
        sql, args = _SERIES_SELECT, ()
        if study_uid is not None:
            sql, args = sql + " WHERE se.study_uid=?", (study_uid,)
        rows = self.conn().execute(sql + " ORDER BY se.series_number, se.first_received", args).fetchall()
        return [series_from_row(r) for r in rows]

    def get_series(self, series_uid: str) -> SeriesRecord | None:
        row = self.conn().execute(_SERIES_SELECT + " WHERE se.series_uid=?", (series_uid,)).fetchone()
        return series_from_row(row) if row else None

    def mark_series_ready(self, series_uid: str, when: float | None = None) -> None:
        with self.write_lock:
            self.conn().execute("UPDATE series SET ready_at=? WHERE series_uid=?", (when or time.time(), series_uid))

    def set_reviewed(self, study_uid: str, reviewed: bool = True) -> None:
        with self.write_lock:
            self.conn().execute("UPDATE studies SET reviewed_at=? WHERE study_uid=?",
                                (time.time() if reviewed else None, study_uid))

    # -- results -----------------------------------------------------------------------------------
    def save_result(self, r: AnalysisResult, also: Callable[[sqlite3.Connection], None] | None = None) -> None:
        """Upsert the result; ``also`` writes more rows in the same transaction (the outbox's
        objects), so the result and its queued objects are committed together or not at all."""
        with self.write_lock:
            conn = self.conn()
            conn.execute("BEGIN IMMEDIATE")
            try:
                self._upsert_result(conn, r)
                if also is not None:
                    also(conn)
                conn.execute("COMMIT")
            except BaseException:
                if conn.in_transaction:
                    conn.execute("ROLLBACK")
                raise

    @staticmethod
    def _upsert_result(conn: sqlite3.Connection, r: AnalysisResult) -> None:
        conn.execute(
            """INSERT INTO results(series_uid, study_uid, status, reason, model, model_version, device,
                   device_note, validated, priority, summary, findings, timings, overlay_path,
                   arrival_at, created_at, preliminary, members_done, members_total, priority_note)
               VALUES (?,?,?,?,?,?,?,?,?,?,?,?,?,?,?,?,?,?,?,?)
               ON CONFLICT(series_uid) DO UPDATE SET status=excluded.status, reason=excluded.reason,
                   model=excluded.model, model_version=excluded.model_version, device=excluded.device,
                   device_note=excluded.device_note, validated=excluded.validated,
                   priority=excluded.priority, summary=excluded.summary, findings=excluded.findings,
                   timings=excluded.timings, overlay_path=excluded.overlay_path,
                   arrival_at=excluded.arrival_at, created_at=excluded.created_at,
                   preliminary=excluded.preliminary, members_done=excluded.members_done,
                   members_total=excluded.members_total, priority_note=excluded.priority_note""",
            (r.series_uid, r.study_uid, r.status, r.reason, r.model, r.model_version, r.device, r.device_note,
             int(r.validated), r.priority, r.summary, json.dumps(r.findings), json.dumps(r.timings),
             r.overlay_path, r.arrival_at, r.created_at, int(r.preliminary), r.members_done, r.members_total,
             r.priority_note),
        )

    def get_result(self, series_uid: str) -> AnalysisResult | None:
        row = self.conn().execute("SELECT * FROM results WHERE series_uid=?", (series_uid,)).fetchone()
        return result_from_row(row) if row else None

    def results_for_study(self, study_uid: str) -> list[AnalysisResult]:
        rows = self.conn().execute("SELECT * FROM results WHERE study_uid=? ORDER BY created_at",
                                   (study_uid,)).fetchall()
        return [result_from_row(r) for r in rows]

    def all_results(self) -> list[AnalysisResult]:
        return [result_from_row(r) for r in self.conn().execute("SELECT * FROM results").fetchall()]
