"""``StudyStore``: the one object the rest of FirstLook uses, composing the storage area, the
index, the job queue and recovery. It owns the write path: ``store_instance`` runs the whole
durable sequence here, in order, so the crash points and the reasoning about them stay in
one place.

An instance is acknowledged only after ``store_instance`` returns: by then its bytes are
fsynced under their final name and the index row is committed. The bytes are stored
exactly as received; nothing on this path decodes pixel data.

Duplicate policy: the same SOP Instance UID with identical bytes is a no-op; with
different bytes the newer version becomes current and the older file is moved to
``superseded/`` with a row in ``replacements``, so nothing is ever silently dropped.
"""

from __future__ import annotations

import hashlib
import logging
import os
import sqlite3
import threading
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any, Callable, Iterator, Mapping

from app.core.crashpoints import crash_point
from app.core.results import AnalysisResult
from app.core.store.errors import OutOfResources
from app.core.store.index import INDEX_FILE, Index, Replacement, synchronous_mode
from app.core.store.job_queue import VOLUME_MODALITIES, JobQueue
from app.core.store.outbox_queue import OutboxQueue
from app.core.store.part10 import InstanceHeader, joined_stream, read_header
from app.core.store.records import Job, SeriesRecord, StoredInstance, StudyRecord
from app.core.store.recovery import Recovery, set_aside_damaged_index
from app.core.store.storage_area import (
    StorageArea,
    discard,
    fsync_dir,
    private_opener,
    sha256_file,
    sha256_parts,
    write_all,
    write_failure,
)

log = logging.getLogger(__name__)


class StudyStore:
    """Files under ``<data_dir>/studies/<study>/<series>/<sop>.dcm`` and their SQLite index."""

    VOLUME_MODALITIES = VOLUME_MODALITIES

    def __init__(self, data_dir: Path, min_free_bytes: int = 0, index_sync: str = "NORMAL") -> None:
        """``index_sync`` is SQLite's ``synchronous`` for the index. NORMAL (default): a commit
        is visible and survives a process crash but is fsynced at WAL checkpoints, not per
        instance; the instance *file* is always fsynced under its final name before the SCP
        answers, and ``adopt_unindexed`` (run by the service after an unclean stop) indexes any
        file whose row a power cut took. FULL fsyncs the WAL on every commit (one more fsync per
        instance, measured in bench/bench_receive.py).

        Opening applies the schema migrations the index has not seen (``migrations``) and
        refuses an index written by a newer release (``SchemaTooNew``)."""
        self.index_sync = synchronous_mode(index_sync)
        self.area = StorageArea(data_dir, min_free_bytes)
        self.area.create()
        self.data_dir = self.area.data_dir
        self.studies_dir = self.area.studies_dir
        self.tmp_dir = self.area.tmp_dir
        self.superseded_dir = self.area.superseded_dir
        self.results_dir = self.area.results_dir
        self.db_path = self.data_dir / INDEX_FILE
        self.index = Index(self.db_path, self.index_sync)
        self.jobs = JobQueue(self.index)
        self.outbox = OutboxQueue(self.index)
        self.recovery = Recovery(self.area, self.index)
        self._pool: ThreadPoolExecutor | None = None
        self._pool_lock = threading.Lock()
        self.area.clean_tmp()

    @property
    def min_free_bytes(self) -> int:
        return self.area.min_free_bytes

    @min_free_bytes.setter
    def min_free_bytes(self, value: int) -> None:
        self.area.min_free_bytes = value

    def close(self) -> None:
        with self._pool_lock:
            if self._pool is not None:
                self._pool.shutdown(wait=True)
                self._pool = None
        self.index.close()

    def open_db_is_healthy(self) -> bool:
        return self.index.is_healthy()

    # -- storage area ----------------------------------------------------------------------------
    def instance_path(self, header: InstanceHeader) -> Path:
        return self.area.instance_path(header)

    def abs_path(self, relative: str) -> Path:
        return self.area.abs_path(relative)

    def free_bytes(self) -> int:
        return self.area.free_bytes()

    def check_space(self, incoming: int = 0) -> None:
        self.area.check_space(incoming)

    def result_overlay_dir(self, series_uid: str) -> Path:
        return self.area.overlay_dir(series_uid)

    def iter_instance_files(self) -> Iterator[Path]:
        return self.area.instance_files()

    # -- receiving: the durable write path ---------------------------------------------------------
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
        self.area.check_space(size)
        tmp = self.area.new_tmp_path()
        header: InstanceHeader | None = None
        try:
            fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
            try:
                write_all(fd, data, body)
                synced = self._fsync_pool().submit(os.fsync, fd)
                try:
                    header = read_header(joined_stream(data, body))
                    sha = sha256_parts(data, body)
                finally:
                    synced.result()  # re-raises the fsync's OSError
            finally:
                os.close(fd)
            crash_point("after-fsync")
            final = self.area.instance_path(header)
            return self._finish(header, tmp, final, sha, size, calling_ae, peer, received_at)
        except OSError as exc:
            raise write_failure(exc, header) from exc
        except sqlite3.OperationalError as exc:  # e.g. "database or disk is full", "disk I/O error"
            raise OutOfResources(f"cannot index {header.sop_uid if header else 'an instance'}: {exc}") from exc
        finally:
            discard(tmp)

    def _known_duplicate(self, data: bytes, sop_uid: str, body: bytes | memoryview = b"") -> StoredInstance | None:
        row = self.index.instance(sop_uid)
        if row is None or sha256_parts(data, body) != row["sha256"]:
            return None
        path = self.area.abs_path(row["path"])
        if not path.is_file():
            return None
        header = read_header(joined_stream(data, body))  # identical bytes to an indexed instance: valid by construction
        if header.sop_uid != sop_uid or self.area.instance_path(header) != path:
            return None
        return StoredInstance(header, path, "duplicate")

    def _store_file(self, source: Path, calling_ae: str, peer: str, received_at: float) -> StoredInstance:
        with open(source, "rb") as fh:
            header = read_header(fh)
        size = source.stat().st_size
        self.area.check_space(size)
        final = self.area.instance_path(header)
        tmp = self.area.new_tmp_path()
        digest = hashlib.sha256()
        try:
            with open(tmp, "wb", opener=private_opener) as out, open(source, "rb") as src:
                for chunk in iter(lambda: src.read(1 << 20), b""):
                    digest.update(chunk)
                    out.write(chunk)
                out.flush()
                os.fsync(out.fileno())
            return self._finish(header, tmp, final, digest.hexdigest(), size, calling_ae, peer, received_at)
        except OSError as exc:
            raise write_failure(exc, header) from exc
        except sqlite3.OperationalError as exc:
            raise OutOfResources(f"cannot index {header.sop_uid}: {exc}") from exc
        finally:
            discard(tmp)

    def _finish(self, header: InstanceHeader, tmp: Path, final: Path, sha: str, size: int,
                calling_ae: str, peer: str, received_at: float) -> StoredInstance:
        with self.index.write_lock:
            stored = self._commit(header, tmp, final, sha, size, calling_ae, peer, received_at)
        # The new name becomes durable here, before the caller acknowledges. Outside the
        # lock, so concurrent associations' directory fsyncs share journal commits.
        crash_point("after-index")
        if stored.outcome != "duplicate":
            fsync_dir(final.parent)
        return stored

    def _fsync_pool(self) -> ThreadPoolExecutor:
        with self._pool_lock:
            if self._pool is None:
                self._pool = ThreadPoolExecutor(max_workers=8, thread_name_prefix="store-fsync")
            return self._pool

    def _commit(self, header: InstanceHeader, tmp: Path, final: Path, sha: str, size: int,
                calling_ae: str, peer: str, received_at: float) -> StoredInstance:
        row = self.index.instance(header.sop_uid)
        existing: Path | None = None
        old_sha = ""
        if row is not None and self.area.abs_path(row["path"]).is_file():
            existing, old_sha = self.area.abs_path(row["path"]), row["sha256"]
        elif final.is_file():
            # On disk but not indexed (index rebuilt or lost): never overwrite it blindly.
            existing, old_sha = final, sha256_file(final)
        outcome = "stored"
        replacement: Replacement | None = None
        if existing is not None:
            if old_sha == sha:
                if row is None or existing != final:
                    self.index.record_instance(header, self.area.relative(existing), sha, size, calling_ae, peer,
                                               received_at)
                return StoredInstance(header, existing, "duplicate")
            outcome = "replaced"
            keep = self.area.superseded_path(header.sop_uid, received_at, old_sha)
            self.area.keep_superseded(existing, keep)
            crash_point("after-link")
            # Recorded in the same transaction as the new index row (after the rename): a crash
            # before it leaves no row claiming a replacement that did not happen.
            replacement = (header.sop_uid, old_sha, sha, self.area.relative(keep), received_at, calling_ae)
            log.warning("instance %s replaced by different bytes from %s; old version kept in %s",
                        header.sop_uid, calling_ae or "?", keep.name)
        self.area.make_series_dir(final)
        os.replace(tmp, final)
        crash_point("after-rename")
        if existing is not None and existing != final:
            # Same SOP Instance UID re-sent under another study/series: the old name is superseded.
            existing.unlink(missing_ok=True)
        self.index.record_instance(header, self.area.relative(final), sha, size, calling_ae, peer, received_at,
                                   replacement)
        return StoredInstance(header, final, outcome)

    # -- queries -----------------------------------------------------------------------------------
    def list_studies(self) -> list[StudyRecord]:
        return self.index.list_studies()

    def get_study(self, study_uid: str) -> StudyRecord | None:
        return self.index.get_study(study_uid)

    def list_series(self, study_uid: str | None = None) -> list[SeriesRecord]:
        return self.index.list_series(study_uid)

    def get_series(self, series_uid: str) -> SeriesRecord | None:
        return self.index.get_series(series_uid)

    def series_files(self, series_uid: str) -> list[Path]:
        return [self.area.abs_path(rel) for rel in self.index.series_paths(series_uid)]

    def instance_rows(self, series_uid: str | None = None) -> list[dict[str, Any]]:
        return self.index.instance_rows(series_uid)

    def replacements(self) -> list[dict[str, Any]]:
        return self.index.replacements()

    def mark_series_ready(self, series_uid: str, when: float | None = None) -> None:
        self.index.mark_series_ready(series_uid, when)

    def set_reviewed(self, study_uid: str, reviewed: bool = True) -> None:
        self.index.set_reviewed(study_uid, reviewed)

    # -- jobs (persistent analysis queue) ---------------------------------------------------------
    def enqueue_job(self, series_uid: str, priority: str | None = None) -> bool:
        return self.jobs.enqueue(series_uid, priority)

    def raise_job_priority(self, series_uid: str, level: str | None) -> None:
        self.jobs.raise_priority(series_uid, level)

    def claim_job(self, lane: str | None = None, ae_priority: Mapping[str, str] | None = None) -> Job | None:
        return self.jobs.claim(lane, ae_priority)

    def finish_job(self, series_uid: str, claimed_count: int | None = None,
                   claimed_enqueued_at: float | None = None) -> None:
        self.jobs.finish(series_uid, claimed_count, claimed_enqueued_at)

    def series_needing_analysis(self) -> list[tuple[str, str]]:
        return self.jobs.series_needing_analysis()

    def requeue_interrupted_jobs(self) -> int:
        return self.jobs.requeue_interrupted()

    def pending_jobs(self) -> int:
        return self.jobs.pending()

    def job_states_by_study(self) -> list[tuple[str, str]]:
        return self.jobs.states_by_study()

    def job_state(self, series_uid: str) -> str | None:
        return self.jobs.state(series_uid)

    # -- results -----------------------------------------------------------------------------------
    def save_result(self, r: AnalysisResult, also: Callable[[sqlite3.Connection], None] | None = None) -> None:
        """``also``: more rows for the same transaction (the outbox's queued objects)."""
        if r.overlay_path:  # overlays are written by the analysers: make sure they are private like the rest
            self.area.make_private(r.overlay_path)
        self.index.save_result(r, also)

    def get_result(self, series_uid: str) -> AnalysisResult | None:
        return self.index.get_result(series_uid)

    def results_for_study(self, study_uid: str) -> list[AnalysisResult]:
        return self.index.results_for_study(study_uid)

    def all_results(self) -> list[AnalysisResult]:
        return self.index.all_results()

    # -- consistency -------------------------------------------------------------------------------
    def reindex(self) -> int:
        return self.recovery.reindex()

    def adopt_unindexed(self) -> int:
        return self.recovery.adopt_unindexed()

    def reconcile_superseded(self) -> int:
        return self.recovery.reconcile_superseded()

    def verify(self) -> list[str]:
        return self.recovery.verify()

    @classmethod
    def rebuild(cls, data_dir: Path, min_free_bytes: int = 0) -> tuple["StudyStore", int]:
        """Set a lost or damaged index aside and rebuild it from the files."""
        set_aside_damaged_index(Path(data_dir))
        store = cls(data_dir, min_free_bytes)
        count = store.reindex()
        return store, count
