"""The durable study store: DICOM files on disk plus a SQLite (WAL) index.

An instance is acknowledged only after ``store_instance`` returns: by then its bytes are
fsynced under their final name and the index row is committed. The bytes are stored
exactly as received; nothing on this path decodes pixel data.

Duplicate policy: the same SOP Instance UID with identical bytes is a no-op; with
different bytes the newer version becomes current and the older file is moved to
``superseded/`` with a row in ``replacements``, so nothing is ever silently dropped.
"""

from __future__ import annotations

import errno
import hashlib
import json
import logging
import os
import shutil
import sqlite3
import threading
import time
import uuid
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Iterator


from app.core.crashpoints import crash_point
from app.core.uids import is_valid_uid
from app.core.store.errors import (
    BadUID,
    InvalidDataset,
    LowDiskSpace,
    MissingUID,
    OutOfResources,
    StoreError,
    UnreadableDataset,
)
from app.core.store.part10 import MAX_INFLATED_BYTES, InstanceHeader, joined_stream, read_header

__all__ = [
    "MAX_INFLATED_BYTES", "AnalysisResult", "BadUID", "InstanceHeader", "InvalidDataset", "Job", "LowDiskSpace",
    "MissingUID", "OutOfResources", "SeriesRecord", "StoreError", "StoredInstance", "StudyRecord", "StudyStore",
    "UnreadableDataset", "read_header",
]

log = logging.getLogger(__name__)

SCHEMA = """
CREATE TABLE IF NOT EXISTS studies (
    study_uid TEXT PRIMARY KEY,
    patient_id TEXT, patient_name TEXT, patient_birth_date TEXT, patient_sex TEXT,
    study_date TEXT, study_time TEXT, accession TEXT, description TEXT,
    modalities TEXT,
    first_received REAL NOT NULL, last_received REAL NOT NULL,
    calling_ae TEXT, peer TEXT,
    reviewed_at REAL
);
CREATE TABLE IF NOT EXISTS series (
    series_uid TEXT PRIMARY KEY,
    study_uid TEXT NOT NULL REFERENCES studies(study_uid),
    modality TEXT, body_part TEXT, description TEXT, series_number INTEGER,
    first_received REAL NOT NULL, last_received REAL NOT NULL,
    ready_at REAL
);
CREATE INDEX IF NOT EXISTS series_study ON series(study_uid);
CREATE TABLE IF NOT EXISTS instances (
    sop_uid TEXT PRIMARY KEY,
    series_uid TEXT NOT NULL REFERENCES series(series_uid),
    study_uid TEXT NOT NULL,
    sop_class_uid TEXT, transfer_syntax TEXT, instance_number INTEGER,
    path TEXT NOT NULL, size INTEGER NOT NULL, sha256 TEXT NOT NULL,
    received_at REAL NOT NULL, calling_ae TEXT, peer TEXT
);
CREATE INDEX IF NOT EXISTS instances_series ON instances(series_uid);
CREATE INDEX IF NOT EXISTS instances_study ON instances(study_uid);
CREATE TABLE IF NOT EXISTS replacements (
    id INTEGER PRIMARY KEY AUTOINCREMENT,
    sop_uid TEXT NOT NULL, old_sha256 TEXT NOT NULL, new_sha256 TEXT NOT NULL,
    superseded_path TEXT NOT NULL, replaced_at REAL NOT NULL, calling_ae TEXT
);
CREATE TABLE IF NOT EXISTS jobs (
    series_uid TEXT PRIMARY KEY,
    study_uid TEXT NOT NULL,
    state TEXT NOT NULL,            -- pending, running, done
    attempts INTEGER NOT NULL DEFAULT 0,
    instance_count INTEGER NOT NULL DEFAULT 0,
    enqueued_at REAL NOT NULL, started_at REAL, finished_at REAL
);
CREATE TABLE IF NOT EXISTS results (
    series_uid TEXT PRIMARY KEY,
    study_uid TEXT NOT NULL,
    status TEXT NOT NULL,           -- done, not_analysed, failed
    reason TEXT,
    model TEXT, model_version TEXT, device TEXT, device_note TEXT,
    validated INTEGER NOT NULL DEFAULT 0,
    priority TEXT NOT NULL,
    summary TEXT,
    findings TEXT NOT NULL DEFAULT '{}',
    timings TEXT NOT NULL DEFAULT '{}',
    overlay_path TEXT,
    arrival_at REAL, created_at REAL NOT NULL
);
CREATE INDEX IF NOT EXISTS results_study ON results(study_uid);
"""


@dataclass(frozen=True)
class StoredInstance:
    header: InstanceHeader
    path: Path
    outcome: str  # "stored", "duplicate", "replaced"


@dataclass
class StudyRecord:
    study_uid: str
    patient_id: str
    patient_name: str
    study_date: str
    study_time: str
    description: str
    modalities: str
    accession: str
    n_series: int
    n_instances: int
    first_received: float
    last_received: float
    calling_ae: str
    reviewed_at: float | None

    def to_json(self) -> dict[str, Any]:
        return dict(self.__dict__)


@dataclass
class SeriesRecord:
    series_uid: str
    study_uid: str
    modality: str
    body_part: str
    description: str
    series_number: int | None
    n_instances: int
    first_received: float
    last_received: float
    ready_at: float | None


@dataclass
class AnalysisResult:
    """One analysis outcome per series; see docs/architecture.md for findings/overlay formats."""

    series_uid: str
    study_uid: str
    status: str                      # done, not_analysed, failed
    priority: str                    # critical, urgent, routine, not_analysed, failed
    reason: str | None = None
    model: str | None = None
    model_version: str | None = None
    device: str | None = None
    device_note: str | None = None
    validated: bool = False
    summary: str = ""
    findings: dict[str, Any] = field(default_factory=dict)
    timings: dict[str, float] = field(default_factory=dict)
    overlay_path: str | None = None
    arrival_at: float | None = None
    created_at: float = field(default_factory=time.time)


@dataclass
class Job:
    series_uid: str
    study_uid: str
    attempts: int
    instance_count: int
    enqueued_at: float


def _sha256_parts(*parts: bytes | memoryview) -> str:
    digest = hashlib.sha256()
    for part in parts:
        digest.update(part)
    return digest.hexdigest()


def _sha256_file(path: Path) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as fh:
        for chunk in iter(lambda: fh.read(1 << 20), b""):
            digest.update(chunk)
    return digest.hexdigest()


def _discard(path: Path) -> None:
    """Remove a temporary file; failing to (e.g. the failure being reported was the
    directory itself) must not mask the real error."""
    try:
        path.unlink(missing_ok=True)
    except OSError as exc:
        log.warning("cannot remove temporary file %s: %s", path, exc)


def _private_dir(path: Path) -> None:
    """A directory only the service user can enter (0700), however the umask is set."""
    path.mkdir(mode=0o700, exist_ok=True)
    if path.stat().st_mode & 0o777 != 0o700:
        os.chmod(path, 0o700)


def _private_opener(path: str, flags: int) -> int:
    """``open(..., opener=)`` that creates the file 0600 (the umask can only narrow it)."""
    return os.open(path, flags, 0o600)


def _fsync_dir(path: Path) -> None:
    fd = os.open(path, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


class StudyStore:
    """Files under ``<data_dir>/studies/<study>/<series>/<sop>.dcm`` and their SQLite index."""

    def __init__(self, data_dir: Path, min_free_bytes: int = 0, index_sync: str = "NORMAL") -> None:
        """``index_sync`` is SQLite's ``synchronous`` for the index. NORMAL (default): a commit
        is visible and survives a process crash but is fsynced at WAL checkpoints, not per
        instance; the instance *file* is always fsynced under its final name before the SCP
        answers, and ``adopt_unindexed`` (run by the service after an unclean stop) indexes any
        file whose row a power cut took. FULL fsyncs the WAL on every commit (one more fsync per
        instance, measured in bench/bench_receive.py)."""
        if index_sync.upper() not in ("NORMAL", "FULL"):
            raise ValueError("index_sync must be NORMAL or FULL")
        self.data_dir = Path(data_dir)
        self.min_free_bytes = min_free_bytes
        self.index_sync = index_sync.upper()
        self.studies_dir = self.data_dir / "studies"
        self.tmp_dir = self.data_dir / "tmp"
        self.superseded_dir = self.data_dir / "superseded"
        self.results_dir = self.data_dir / "results"
        # Patient data: readable by the service user only, whatever the umask. Explicit modes
        # (not a temporary process-wide umask, which races with other threads creating files).
        self.data_dir.mkdir(parents=True, exist_ok=True)
        for d in (self.data_dir, self.studies_dir, self.tmp_dir, self.superseded_dir, self.results_dir):
            _private_dir(d)
        self.db_path = self.data_dir / "index.sqlite3"
        # SQLite creates -wal and -shm with the database file's mode: create it 0600 first.
        os.close(os.open(self.db_path, os.O_WRONLY | os.O_CREAT | os.O_CLOEXEC, 0o600))
        for suffix in ("", "-wal", "-shm"):
            part = self.data_dir / f"index.sqlite3{suffix}"
            if part.exists():
                os.chmod(part, 0o600)  # repairs a data dir made by an older version
        self._local = threading.local()
        self._write_lock = threading.RLock()
        self._all_conns: list[sqlite3.Connection] = []
        self._conns_lock = threading.Lock()
        self._pool: ThreadPoolExecutor | None = None
        with self._write_lock:
            conn = self._conn()
            conn.executescript(SCHEMA)
            conn.commit()
        os.chmod(self.db_path, 0o600)
        self._clean_tmp()

    # -- connections -------------------------------------------------------------------
    def _conn(self) -> sqlite3.Connection:
        conn = getattr(self._local, "conn", None)
        if conn is None:
            conn = sqlite3.connect(self.db_path, timeout=30, isolation_level=None, check_same_thread=False)
            conn.row_factory = sqlite3.Row
            conn.execute("PRAGMA journal_mode=WAL")
            conn.execute(f"PRAGMA synchronous={self.index_sync}")
            conn.execute("PRAGMA foreign_keys=ON")
            self._local.conn = conn
            with self._conns_lock:
                self._all_conns.append(conn)
        return conn

    def close(self) -> None:
        with self._conns_lock:
            if self._pool is not None:
                self._pool.shutdown(wait=True)
                self._pool = None
            for conn in self._all_conns:
                try:
                    conn.close()
                except sqlite3.ProgrammingError:
                    pass
            self._all_conns.clear()
        self._local = threading.local()

    def _clean_tmp(self) -> None:
        """Partial writes from a crash were never acknowledged; remove them."""
        for leftover in self.tmp_dir.glob("*.part"):
            try:
                leftover.unlink()
            except OSError as exc:
                log.warning("cannot remove leftover temporary file %s: %s", leftover, exc)

    # -- paths ---------------------------------------------------------------------------
    def instance_path(self, header: InstanceHeader) -> Path:
        for uid in (header.study_uid, header.series_uid, header.sop_uid):
            if not is_valid_uid(uid):  # second line of defence: never build a path from a bad UID
                raise BadUID(f"UID {uid[:80]!r} is not a valid DICOM UID")
        return self.studies_dir / header.study_uid / header.series_uid / f"{header.sop_uid}.dcm"

    def abs_path(self, relative: str) -> Path:
        return self.data_dir / relative

    def free_bytes(self) -> int:
        return shutil.disk_usage(self.data_dir).free

    def check_space(self, incoming: int = 0) -> None:
        if self.min_free_bytes <= 0:
            return
        free = self.free_bytes()
        if free - incoming < self.min_free_bytes:
            raise LowDiskSpace(
                f"free space {free // (1 << 20)} MiB is below the watermark of "
                f"{self.min_free_bytes // (1 << 20)} MiB; refusing new instances"
            )

    # -- receiving -----------------------------------------------------------------------
    def store_instance(self, data: bytes | Path, calling_ae: str = "", peer: str = "",
                       received_at: float | None = None, sop_uid_hint: str = "",
                       body: bytes | memoryview = b"") -> StoredInstance:
        """Durably store one encoded instance (Part 10 bytes, or a file to copy in).

        Returns only when the bytes are fsynced under their final name (file and directory)
        and the index row is committed. For bytes, the header parse and the hash run while
        the file's fsync is in flight on a helper thread: the fsync is the longest step and
        releases the GIL, so they come for free.

        ``sop_uid_hint`` (the C-STORE's Affected SOP Instance UID) lets an identical re-send
        (a PACS pushing a study again) be recognised before anything is written.

        ``body``: bytes that follow ``data`` in the instance (the SCP passes the File Meta it
        built as ``data`` and the dataset as received as ``body``; never joined in memory).
        """
        received_at = time.time() if received_at is None else received_at
        if isinstance(data, Path):
            return self._store_file(data, calling_ae, peer, received_at)
        if sop_uid_hint:
            duplicate = self._known_duplicate(data, sop_uid_hint, body)
            if duplicate is not None:
                return duplicate
        size = len(data) + len(body)
        self.check_space(size)
        tmp = self.tmp_dir / f"{uuid.uuid4().hex}.part"
        header: InstanceHeader | None = None
        try:
            fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
            try:
                for part in (data, body):
                    view = memoryview(part).cast("B")
                    while view:
                        view = view[os.write(fd, view):]
                synced = self._fsync_pool().submit(os.fsync, fd)
                try:
                    header = read_header(joined_stream(data, body))
                    sha = _sha256_parts(data, body)
                finally:
                    synced.result()  # re-raises the fsync's OSError
            finally:
                os.close(fd)
            crash_point("after-fsync")
            final = self.instance_path(header)
            return self._finish(header, tmp, final, sha, size, calling_ae, peer, received_at)
        except OSError as exc:
            raise self._out_of_resources(exc, header) from exc
        except sqlite3.OperationalError as exc:  # e.g. "database or disk is full", "disk I/O error"
            raise OutOfResources(f"cannot index {header.sop_uid if header else 'an instance'}: {exc}") from exc
        finally:
            _discard(tmp)

    def _known_duplicate(self, data: bytes, sop_uid: str, body: bytes | memoryview = b"") -> StoredInstance | None:
        row = self._conn().execute("SELECT path, sha256 FROM instances WHERE sop_uid=?", (sop_uid,)).fetchone()
        if row is None or _sha256_parts(data, body) != row["sha256"]:
            return None
        path = self.data_dir / row["path"]
        if not path.is_file():
            return None
        header = read_header(joined_stream(data, body))  # identical bytes to an indexed instance: valid by construction
        if header.sop_uid != sop_uid or self.instance_path(header) != path:
            return None
        return StoredInstance(header, path, "duplicate")

    def _store_file(self, source: Path, calling_ae: str, peer: str, received_at: float) -> StoredInstance:
        with open(source, "rb") as fh:
            header = read_header(fh)
        size = source.stat().st_size
        self.check_space(size)
        final = self.instance_path(header)
        tmp = self.tmp_dir / f"{uuid.uuid4().hex}.part"
        digest = hashlib.sha256()
        try:
            with open(tmp, "wb", opener=_private_opener) as out, open(source, "rb") as src:
                for chunk in iter(lambda: src.read(1 << 20), b""):
                    digest.update(chunk)
                    out.write(chunk)
                out.flush()
                os.fsync(out.fileno())
            return self._finish(header, tmp, final, digest.hexdigest(), size, calling_ae, peer, received_at)
        except OSError as exc:
            raise self._out_of_resources(exc, header) from exc
        except sqlite3.OperationalError as exc:
            raise OutOfResources(f"cannot index {header.sop_uid}: {exc}") from exc
        finally:
            _discard(tmp)

    def _finish(self, header: InstanceHeader, tmp: Path, final: Path, sha: str, size: int,
                calling_ae: str, peer: str, received_at: float) -> StoredInstance:
        with self._write_lock:
            stored = self._commit(header, tmp, final, sha, size, calling_ae, peer, received_at)
        # The new name becomes durable here, before the caller acknowledges. Outside the
        # lock, so concurrent associations' directory fsyncs share journal commits.
        crash_point("after-index")
        if stored.outcome != "duplicate":
            _fsync_dir(final.parent)
        return stored

    @staticmethod
    def _out_of_resources(exc: OSError, header: InstanceHeader | None) -> OutOfResources:
        if exc.errno in (errno.ENOSPC, errno.EDQUOT):
            return LowDiskSpace(f"cannot store {header.sop_uid if header else 'an instance'}: disk full")
        return OutOfResources(f"cannot store {header.sop_uid if header else 'an instance'}: "
                              f"write error ({exc.strerror or exc})")

    def _fsync_pool(self) -> ThreadPoolExecutor:
        with self._conns_lock:
            if self._pool is None:
                self._pool = ThreadPoolExecutor(max_workers=8, thread_name_prefix="store-fsync")
            return self._pool

    def _commit(self, header: InstanceHeader, tmp: Path, final: Path, sha: str, size: int,
                calling_ae: str, peer: str, received_at: float) -> StoredInstance:
        conn = self._conn()
        row = conn.execute("SELECT path, sha256 FROM instances WHERE sop_uid=?", (header.sop_uid,)).fetchone()
        existing: Path | None = None
        old_sha = ""
        if row is not None and (self.data_dir / row["path"]).is_file():
            existing, old_sha = self.data_dir / row["path"], row["sha256"]
        elif final.is_file():
            # On disk but not indexed (index rebuilt or lost): never overwrite it blindly.
            existing, old_sha = final, _sha256_file(final)
        outcome = "stored"
        replacement: tuple[Any, ...] | None = None
        if existing is not None:
            if old_sha == sha:
                if row is None or existing != final:
                    self._index(conn, header, existing, sha, size, calling_ae, peer, received_at)
                return StoredInstance(header, existing, "duplicate")
            outcome = "replaced"
            keep = self.superseded_dir / f"{header.sop_uid}.{int(received_at * 1000)}.{old_sha[:12]}.dcm"
            # Hard-link first so a crash at any point leaves the old version at one of its names.
            try:
                os.link(existing, keep)
            except OSError:
                shutil.copy2(existing, keep)
            _fsync_dir(self.superseded_dir)
            crash_point("after-link")
            # Recorded in the same transaction as the new index row (after the rename): a crash
            # before it leaves no row claiming a replacement that did not happen.
            replacement = (header.sop_uid, old_sha, sha, str(keep.relative_to(self.data_dir)), received_at, calling_ae)
            log.warning("instance %s replaced by different bytes from %s; old version kept in %s",
                        header.sop_uid, calling_ae or "?", keep.name)
        if not final.parent.is_dir():
            _private_dir(final.parent.parent)
            _private_dir(final.parent)
            _fsync_dir(final.parent.parent)
            _fsync_dir(self.studies_dir)
        os.replace(tmp, final)
        crash_point("after-rename")
        if existing is not None and existing != final:
            # Same SOP Instance UID re-sent under another study/series: the old name is superseded.
            existing.unlink(missing_ok=True)
        self._index(conn, header, final, sha, size, calling_ae, peer, received_at, replacement)
        return StoredInstance(header, final, outcome)

    def _index(self, conn: sqlite3.Connection, h: InstanceHeader, final: Path, sha: str, size: int,
               calling_ae: str, peer: str, received_at: float, replacement: tuple[Any, ...] | None = None) -> None:
        rel = str(final.relative_to(self.data_dir))
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

    # -- queries -------------------------------------------------------------------------
    _STUDY_SELECT = """
        SELECT s.*, (SELECT count(*) FROM series se WHERE se.study_uid = s.study_uid) AS n_series,
               (SELECT count(*) FROM instances i WHERE i.study_uid = s.study_uid) AS n_instances
        FROM studies s"""

    @staticmethod
    def _study(row: sqlite3.Row) -> StudyRecord:
        return StudyRecord(
            study_uid=row["study_uid"], patient_id=row["patient_id"] or "", patient_name=row["patient_name"] or "",
            study_date=row["study_date"] or "", study_time=row["study_time"] or "",
            description=row["description"] or "", modalities=row["modalities"] or "",
            accession=row["accession"] or "", n_series=row["n_series"], n_instances=row["n_instances"],
            first_received=row["first_received"], last_received=row["last_received"],
            calling_ae=row["calling_ae"] or "", reviewed_at=row["reviewed_at"],
        )

    def list_studies(self) -> list[StudyRecord]:
        rows = self._conn().execute(self._STUDY_SELECT + " ORDER BY s.first_received").fetchall()
        return [self._study(r) for r in rows]

    def get_study(self, study_uid: str) -> StudyRecord | None:
        row = self._conn().execute(self._STUDY_SELECT + " WHERE s.study_uid=?", (study_uid,)).fetchone()
        return self._study(row) if row else None

    def list_series(self, study_uid: str | None = None) -> list[SeriesRecord]:
        sql = """SELECT se.*, (SELECT count(*) FROM instances i WHERE i.series_uid = se.series_uid) AS n
                 FROM series se"""
        args: tuple[Any, ...] = ()
        if study_uid is not None:
            sql += " WHERE se.study_uid=?"
            args = (study_uid,)
        rows = self._conn().execute(sql + " ORDER BY se.series_number, se.first_received", args).fetchall()
        return [self._series(r) for r in rows]

    def get_series(self, series_uid: str) -> SeriesRecord | None:
        row = self._conn().execute(
            """SELECT se.*, (SELECT count(*) FROM instances i WHERE i.series_uid = se.series_uid) AS n
               FROM series se WHERE se.series_uid=?""", (series_uid,)).fetchone()
        return self._series(row) if row else None

    @staticmethod
    def _series(row: sqlite3.Row) -> SeriesRecord:
        return SeriesRecord(
            series_uid=row["series_uid"], study_uid=row["study_uid"], modality=row["modality"] or "",
            body_part=row["body_part"] or "", description=row["description"] or "",
            series_number=row["series_number"], n_instances=row["n"], first_received=row["first_received"],
            last_received=row["last_received"], ready_at=row["ready_at"],
        )

    def series_files(self, series_uid: str) -> list[Path]:
        rows = self._conn().execute(
            "SELECT path FROM instances WHERE series_uid=? ORDER BY instance_number, sop_uid", (series_uid,)
        ).fetchall()
        return [self.data_dir / r["path"] for r in rows]

    def instance_rows(self, series_uid: str | None = None) -> list[dict[str, Any]]:
        sql, args = "SELECT * FROM instances", ()
        if series_uid:
            sql, args = sql + " WHERE series_uid=?", (series_uid,)
        return [dict(r) for r in self._conn().execute(sql, args).fetchall()]

    def replacements(self) -> list[dict[str, Any]]:
        return [dict(r) for r in self._conn().execute("SELECT * FROM replacements ORDER BY id").fetchall()]

    def mark_series_ready(self, series_uid: str, when: float | None = None) -> None:
        with self._write_lock:
            self._conn().execute("UPDATE series SET ready_at=? WHERE series_uid=?", (when or time.time(), series_uid))

    def set_reviewed(self, study_uid: str, reviewed: bool = True) -> None:
        with self._write_lock:
            self._conn().execute("UPDATE studies SET reviewed_at=? WHERE study_uid=?",
                                 (time.time() if reviewed else None, study_uid))

    # -- jobs (persistent analysis queue) -----------------------------------------------
    def enqueue_job(self, series_uid: str) -> bool:
        """Queue analysis of a series; a finished (or running) job is re-queued only if the series
        changed since: instances added, or one replaced by a corrected version (same count, but
        received after the job finished or started)."""
        with self._write_lock:
            conn = self._conn()
            series = self.get_series(series_uid)
            if series is None:
                return False
            row = conn.execute("SELECT state, instance_count, started_at, finished_at FROM jobs WHERE series_uid=?",
                               (series_uid,)).fetchone()
            now = time.time()

            def changed_since(when: float | None) -> bool:
                return row["instance_count"] != series.n_instances or (when is not None and series.last_received > when)

            if row is None:
                conn.execute("INSERT INTO jobs(series_uid, study_uid, state, instance_count, enqueued_at)"
                             " VALUES (?,?,?,?,?)", (series_uid, series.study_uid, "pending", series.n_instances, now))
                return True
            if row["state"] == "done" and changed_since(row["finished_at"]):
                conn.execute("UPDATE jobs SET state='pending', instance_count=?, enqueued_at=?, attempts=0"
                             " WHERE series_uid=?", (series.n_instances, now, series_uid))
                return True
            if row["state"] == "pending":
                conn.execute("UPDATE jobs SET instance_count=? WHERE series_uid=?", (series.n_instances, series_uid))
            elif row["state"] == "running" and changed_since(row["started_at"]):
                # Instances arrived (or were replaced) while the series was being analysed: the
                # running job may not see them, so finish_job puts it back in the queue.
                conn.execute("UPDATE jobs SET instance_count=?, enqueued_at=? WHERE series_uid=?",
                             (series.n_instances, now, series_uid))
                return True
            return False

    # Volumes (CT, MR, PET, NM) take minutes; everything else takes well under a second.
    VOLUME_MODALITIES = ("CT", "MR", "PT", "NM")

    def claim_job(self, lane: str | None = None) -> Job | None:
        """Claim the oldest pending job; ``lane`` "volume" or "image" picks by series modality
        so a chest film is never queued behind a head-CT ensemble."""
        where = ""
        if lane is not None:
            marks = ",".join("?" * len(self.VOLUME_MODALITIES))
            op = "IN" if lane == "volume" else "NOT IN"
            where = f" AND coalesce((SELECT modality FROM series s WHERE s.series_uid = j.series_uid), '') {op} ({marks})"
        args: tuple[Any, ...] = (time.time(), *(self.VOLUME_MODALITIES if lane is not None else ()))
        with self._write_lock:
            row = self._conn().execute(
                f"""UPDATE jobs SET state='running', started_at=?, attempts=attempts+1
                   WHERE series_uid=(SELECT j.series_uid FROM jobs j WHERE j.state='pending'{where}
                                     ORDER BY j.enqueued_at LIMIT 1)
                   RETURNING series_uid, study_uid, attempts, instance_count, enqueued_at""",
                args).fetchone()
        return Job(**dict(row)) if row else None

    def finish_job(self, series_uid: str, claimed_count: int | None = None,
                   claimed_enqueued_at: float | None = None) -> None:
        """Mark a job done; with ``claimed_count`` / ``claimed_enqueued_at`` (the job as claimed),
        a job whose series changed meanwhile (enqueue_job updated it) goes back to pending so
        the new or corrected instances get analysed."""
        with self._write_lock:
            if claimed_count is None:
                self._conn().execute("UPDATE jobs SET state='done', finished_at=? WHERE series_uid=?",
                                     (time.time(), series_uid))
                return
            same = "instance_count=? AND (? IS NULL OR enqueued_at=?)"
            self._conn().execute(
                f"UPDATE jobs SET state=CASE WHEN {same} THEN 'done' ELSE 'pending' END, finished_at=?,"
                f" attempts=CASE WHEN {same} THEN attempts ELSE 0 END WHERE series_uid=?",
                (claimed_count, claimed_enqueued_at, claimed_enqueued_at, time.time(),
                 claimed_count, claimed_enqueued_at, claimed_enqueued_at, series_uid))

    def series_needing_analysis(self) -> list[tuple[str, str]]:
        """(study, series) pairs with stored instances but no queued job, or that changed after
        their last finished job (instances added or replaced). After an unclean stop these are
        series whose readiness was only in memory (the quiet period or the release never came)."""
        rows = self._conn().execute(
            """SELECT se.study_uid, se.series_uid FROM series se LEFT JOIN jobs j ON j.series_uid = se.series_uid
               WHERE EXISTS (SELECT 1 FROM instances i WHERE i.series_uid = se.series_uid)
                 AND (j.series_uid IS NULL OR (j.state = 'done' AND (se.last_received > j.finished_at
                      OR j.instance_count != (SELECT count(*) FROM instances i WHERE i.series_uid = se.series_uid))))"""
        ).fetchall()
        return [(r["study_uid"], r["series_uid"]) for r in rows]

    def requeue_interrupted_jobs(self) -> int:
        """Jobs left 'running' by a crash go back to pending on start-up."""
        with self._write_lock:
            cur = self._conn().execute("UPDATE jobs SET state='pending' WHERE state='running'")
            return cur.rowcount

    def pending_jobs(self) -> int:
        return self._conn().execute("SELECT count(*) FROM jobs WHERE state IN ('pending','running')").fetchone()[0]

    def job_states_by_study(self) -> list[tuple[str, str]]:
        return [(r["study_uid"], r["state"]) for r in self._conn().execute("SELECT study_uid, state FROM jobs")]

    def job_state(self, series_uid: str) -> str | None:
        row = self._conn().execute("SELECT state FROM jobs WHERE series_uid=?", (series_uid,)).fetchone()
        return row["state"] if row else None

    # -- results -------------------------------------------------------------------------
    def save_result(self, r: AnalysisResult) -> None:
        if r.overlay_path:
            try:  # overlays are written by the analysers: make sure they are private like the rest
                os.chmod(self.data_dir / r.overlay_path, 0o600)
            except FileNotFoundError:
                pass
        with self._write_lock:
            self._conn().execute(
                """INSERT INTO results(series_uid, study_uid, status, reason, model, model_version, device,
                       device_note, validated, priority, summary, findings, timings, overlay_path,
                       arrival_at, created_at)
                   VALUES (?,?,?,?,?,?,?,?,?,?,?,?,?,?,?,?)
                   ON CONFLICT(series_uid) DO UPDATE SET status=excluded.status, reason=excluded.reason,
                       model=excluded.model, model_version=excluded.model_version, device=excluded.device,
                       device_note=excluded.device_note, validated=excluded.validated,
                       priority=excluded.priority, summary=excluded.summary, findings=excluded.findings,
                       timings=excluded.timings, overlay_path=excluded.overlay_path,
                       arrival_at=excluded.arrival_at, created_at=excluded.created_at""",
                (r.series_uid, r.study_uid, r.status, r.reason, r.model, r.model_version, r.device, r.device_note,
                 int(r.validated), r.priority, r.summary, json.dumps(r.findings), json.dumps(r.timings),
                 r.overlay_path, r.arrival_at, r.created_at),
            )

    @staticmethod
    def _result(row: sqlite3.Row) -> AnalysisResult:
        return AnalysisResult(
            series_uid=row["series_uid"], study_uid=row["study_uid"], status=row["status"],
            priority=row["priority"], reason=row["reason"], model=row["model"],
            model_version=row["model_version"], device=row["device"], device_note=row["device_note"],
            validated=bool(row["validated"]), summary=row["summary"] or "",
            findings=json.loads(row["findings"] or "{}"), timings=json.loads(row["timings"] or "{}"),
            overlay_path=row["overlay_path"], arrival_at=row["arrival_at"], created_at=row["created_at"],
        )

    def get_result(self, series_uid: str) -> AnalysisResult | None:
        row = self._conn().execute("SELECT * FROM results WHERE series_uid=?", (series_uid,)).fetchone()
        return self._result(row) if row else None

    def results_for_study(self, study_uid: str) -> list[AnalysisResult]:
        rows = self._conn().execute("SELECT * FROM results WHERE study_uid=? ORDER BY created_at",
                                    (study_uid,)).fetchall()
        return [self._result(r) for r in rows]

    def all_results(self) -> list[AnalysisResult]:
        return [self._result(r) for r in self._conn().execute("SELECT * FROM results").fetchall()]

    def result_overlay_dir(self, series_uid: str) -> Path:
        if not is_valid_uid(series_uid):
            raise InvalidDataset(f"UID {series_uid[:80]!r} is not a valid DICOM UID")
        path = self.results_dir / series_uid
        _private_dir(path)
        return path

    # -- consistency -------------------------------------------------------------------------
    def iter_instance_files(self) -> Iterator[Path]:
        yield from sorted(self.studies_dir.glob("*/*/*.dcm"))

    def reindex(self) -> int:
        """Rebuild the instance index from the files; results and jobs are kept."""
        with self._write_lock:
            conn = self._conn()
            conn.execute("BEGIN IMMEDIATE")
            conn.execute("DELETE FROM instances")
            conn.execute("COMMIT")
            count = 0
            for path in self.iter_instance_files():
                count += self._index_file(conn, path, "reindex: ")
            conn.execute("DELETE FROM series WHERE series_uid NOT IN (SELECT series_uid FROM instances)")
            conn.execute("DELETE FROM studies WHERE study_uid NOT IN (SELECT study_uid FROM instances)")
            return count

    def _index_file(self, conn: sqlite3.Connection, path: Path, context: str = "") -> int:
        """Index one stored file found on disk; 0 (and a logged reason) if it is not a valid
        instance at the path its UIDs give, in which case it is left in place untouched."""
        try:
            header = read_header(path)
        except InvalidDataset as exc:
            log.error("%s%s is not a readable instance (%s); left in place", context, path, exc)
            return 0
        if path != self.instance_path(header):
            log.error("%s%s does not match its UIDs; left in place", context, path)
            return 0
        st = path.stat()
        self._index(conn, header, path, _sha256_file(path), st.st_size, "", "", st.st_mtime)
        return 1

    def adopt_unindexed(self) -> int:
        """Index instance files that are on disk but not in the index (a power cut after the
        file was fsynced but before the index reached disk). Cheaper than ``reindex``: the
        existing rows, with their sending AE and arrival times, are kept."""
        with self._write_lock:
            conn = self._conn()
            known = {r["path"] for r in conn.execute("SELECT path FROM instances")}
            count = 0
            for path in self.iter_instance_files():
                rel = str(path.relative_to(self.data_dir))
                if rel in known:
                    continue
                count += self._index_file(conn, path)
            if count:
                log.warning("indexed %d instance file(s) the index did not know about", count)
            return count

    def reconcile_superseded(self) -> int:
        """After an unclean stop: a superseded copy without a ``replacements`` row is the trace
        of a replacement the crash interrupted. If the current file already holds the new
        version (crash after the rename, before the index commit) the index row is corrected
        and the replacement recorded; if it still holds the old version (crash before the
        rename) the extra name of the same bytes is removed. Cheap: only superseded/ is read."""
        with self._write_lock:
            conn = self._conn()
            recorded = {r["superseded_path"] for r in conn.execute("SELECT superseded_path FROM replacements")}
            fixed = 0
            for kept in sorted(self.superseded_dir.glob("*.dcm")):
                rel = str(kept.relative_to(self.data_dir))
                parts = kept.name.rsplit(".", 3)  # <sop>.<ms>.<old sha[:12]>.dcm
                if rel in recorded or len(parts) != 4:
                    continue
                row = conn.execute("SELECT * FROM instances WHERE sop_uid=?", (parts[0],)).fetchone()
                current = self.data_dir / row["path"] if row is not None else None
                if current is None or not current.is_file():
                    continue
                actual = _sha256_file(current)
                if actual == row["sha256"]:
                    kept_sha = _sha256_file(kept)
                    if kept_sha == actual:
                        kept.unlink()  # the replacement never happened: same bytes as the current file
                        fixed += 1
                        continue
                    # Re-sent under another study/series and its new name already adopted: the old
                    # name (the same file as the superseded copy) is what the crash left behind.
                    stale = [p for p in self.studies_dir.glob(f"*/*/{parts[0]}.dcm")
                             if p != current and os.path.samefile(p, kept)]
                    for path in stale:
                        path.unlink()
                    if stale:
                        conn.execute(
                            "INSERT INTO replacements(sop_uid, old_sha256, new_sha256, superseded_path, replaced_at,"
                            " calling_ae) VALUES (?,?,?,?,?,?)",
                            (parts[0], kept_sha, actual, rel, current.stat().st_mtime, row["calling_ae"]))
                        fixed += 1
                    continue
                try:
                    header = read_header(current)
                except InvalidDataset as exc:
                    log.error("%s is not a readable instance (%s); left in place", current, exc)
                    continue
                st = current.stat()
                self._index(conn, header, current, actual, st.st_size, row["calling_ae"] or "", row["peer"] or "",
                            st.st_mtime, (parts[0], row["sha256"], actual, rel, st.st_mtime, row["calling_ae"]))
                fixed += 1
            if fixed:
                log.warning("completed %d replacement(s) interrupted by the last stop", fixed)
            return fixed

    def verify(self) -> list[str]:
        """Disagreements between index and files (empty when consistent)."""
        problems: list[str] = []
        indexed = {self.data_dir / r["path"]: r["sha256"] for r in self.instance_rows()}
        on_disk = set(self.iter_instance_files())
        for path in on_disk - set(indexed):
            problems.append(f"file not in index: {path.relative_to(self.data_dir)}")
        for path, sha in indexed.items():
            if path not in on_disk:
                problems.append(f"indexed file missing: {path.relative_to(self.data_dir)}")
            elif hashlib.sha256(path.read_bytes()).hexdigest() != sha:
                problems.append(f"file does not match its index hash: {path.relative_to(self.data_dir)}")
        return problems

    @classmethod
    def rebuild(cls, data_dir: Path, min_free_bytes: int = 0) -> tuple["StudyStore", int]:
        """Set a lost or damaged index aside and rebuild it from the files."""
        data_dir = Path(data_dir)
        db = data_dir / "index.sqlite3"
        healthy = False
        if db.exists():
            try:
                probe = sqlite3.connect(db)
                healthy = probe.execute("PRAGMA quick_check").fetchone()[0] == "ok"
                probe.close()
            except sqlite3.DatabaseError:
                healthy = False
            if not healthy:
                stamp = time.strftime("%Y%m%d-%H%M%S")
                for suffix in ("", "-wal", "-shm"):
                    part = data_dir / f"index.sqlite3{suffix}"
                    if part.exists():
                        os.replace(part, data_dir / f"index.sqlite3{suffix}.damaged-{stamp}")
                log.warning("index %s was damaged; set aside and rebuilt from the files", db)
        store = cls(data_dir, min_free_bytes)
        count = store.reindex()
        return store, count

    def open_db_is_healthy(self) -> bool:
        try:
            return self._conn().execute("PRAGMA quick_check").fetchone()[0] == "ok"
        except sqlite3.DatabaseError:
            return False
