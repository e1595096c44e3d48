"""The persistent analysis queue: one job per series, in the index, so a crash loses none.

A job is re-queued when its series changes after it was analysed (instances added, or one
replaced by a corrected version), and two lanes keep a chest film from waiting behind a
head-CT ensemble.
"""

from __future__ import annotations

import threading
import time
from typing import Any, Mapping

from app.core.store.index import Index
from app.core.store.job_priority import RANK, rank
from app.core.store.records import Job

# Volumes (CT, MR, PET, NM) take minutes; everything else takes well under a second.
VOLUME_MODALITIES = ("CT", "MR", "PT", "NM")


class JobQueue:
    def __init__(self, index: Index) -> None:
        self.index = index
        # series -> the level its C-STORE requests asked for, until its job row exists; from then
        # on it is also in jobs.requested_priority, so a restart keeps it.
        self._hints: dict[str, str] = {}
        self._hints_lock = threading.Lock()

    def raise_priority(self, series_uid: str, level: str | None) -> None:
        """Remember the most urgent level a sender asked for this series (``job_priority``)."""
        if level is None or level not in RANK:
            return
        with self._hints_lock:
            current = self._hints.get(series_uid)
            if current is not None and RANK[level] >= RANK[current]:
                return
            self._hints[series_uid] = level
        self._persist_hint(series_uid)

    def _persist_hint(self, series_uid: str) -> None:
        """Write the remembered level into the job row, if there is one (never lowers a stored level)."""
        with self._hints_lock:
            level = self._hints.get(series_uid)
        if level is None:
            return
        with self.index.write_lock:
            conn = self.index.conn()
            row = conn.execute("SELECT requested_priority FROM jobs WHERE series_uid=?", (series_uid,)).fetchone()
            stored = row["requested_priority"] if row is not None else None
            if row is not None and (stored not in RANK or RANK[level] < RANK[stored]):
                conn.execute("UPDATE jobs SET requested_priority=? WHERE series_uid=?", (level, series_uid))

    def enqueue(self, series_uid: str, priority: str | None = None) -> bool:
        """Queue analysis of a series; a finished (or running) job is re-queued only if the series
        changed since: instances added, or one replaced by a corrected version (same count, but
        received after the job finished or started)."""
        queued = self._enqueue(series_uid)
        self._persist_hint(series_uid)
        return queued

    def _enqueue(self, series_uid: str) -> bool:
        with self.index.write_lock:
            conn = self.index.conn()
            series = self.index.get_series(series_uid)
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
                # running job may not see them, so finish() puts it back in the queue.
                conn.execute("UPDATE jobs SET instance_count=?, enqueued_at=? WHERE series_uid=?",
                             (series.n_instances, now, series_uid))
                return True
            return False

    def claim(self, lane: str | None = None, ae_priority: Mapping[str, str] | None = None) -> Job | None:
        """Claim the most urgent pending job (``job_priority``: the calling AE's configured level
        and the sender's request), the oldest first within a level; ``lane`` "volume" or "image"
        picks by series modality so a chest film is never queued behind a head-CT ensemble."""
        where = ""
        if lane is not None:
            marks = ",".join("?" * len(VOLUME_MODALITIES))
            op = "IN" if lane == "volume" else "NOT IN"
            where = f" AND coalesce((SELECT modality FROM series s WHERE s.series_uid = j.series_uid), '') {op} ({marks})"
        args: tuple[Any, ...] = tuple(VOLUME_MODALITIES) if lane is not None else ()
        with self.index.write_lock:
            conn = self.index.conn()
            candidates = conn.execute(
                f"""SELECT j.series_uid, j.enqueued_at, j.requested_priority,
                          (SELECT i.calling_ae FROM instances i WHERE i.series_uid = j.series_uid LIMIT 1) AS ae
                   FROM jobs j WHERE j.state='pending'{where}""", args).fetchall()
            if not candidates:
                return None
            levels = ae_priority or {}
            # A job row holds every level its sender asked for (_persist_hint); the memory only
            # bridges the instances received before the row existed.
            best = min(candidates, key=lambda r: (rank(r["ae"], r["requested_priority"], levels),
                                                  r["enqueued_at"], r["series_uid"]))
            row = conn.execute(
                """UPDATE jobs SET state='running', started_at=?, attempts=attempts+1
                   WHERE series_uid=? AND state='pending'
                   RETURNING series_uid, study_uid, attempts, instance_count, enqueued_at""",
                (time.time(), best["series_uid"])).fetchone()
        return Job(**dict(row)) if row else None

    def finish(self, series_uid: str, claimed_count: int | None = None,
               claimed_enqueued_at: float | None = None) -> None:
        """Mark a job done; with ``claimed_count`` / ``claimed_enqueued_at`` (the job as claimed),
        a job whose series changed meanwhile (enqueue updated it) goes back to pending so
        the new or corrected instances get analysed."""
        with self.index.write_lock:
            conn = self.index.conn()
            if claimed_count is None:
                conn.execute("UPDATE jobs SET state='done', finished_at=?, requested_priority=NULL WHERE series_uid=?",
                             (time.time(), series_uid))
                self._forget_hint(series_uid)
                return
            same = "instance_count=? AND (? IS NULL OR enqueued_at=?)"
            conn.execute(
                f"UPDATE jobs SET state=CASE WHEN {same} THEN 'done' ELSE 'pending' END, finished_at=?,"
                f" attempts=CASE WHEN {same} THEN attempts ELSE 0 END,"
                f" requested_priority=CASE WHEN {same} THEN NULL ELSE requested_priority END WHERE series_uid=?",
                (claimed_count, claimed_enqueued_at, claimed_enqueued_at, time.time(),
                 claimed_count, claimed_enqueued_at, claimed_enqueued_at,
                 claimed_count, claimed_enqueued_at, claimed_enqueued_at, series_uid))
            row = conn.execute("SELECT state FROM jobs WHERE series_uid=?", (series_uid,)).fetchone()
        if row is not None and row["state"] == "done":
            self._forget_hint(series_uid)

    def _forget_hint(self, series_uid: str) -> None:
        with self._hints_lock:
            self._hints.pop(series_uid, None)

    def series_needing_analysis(self) -> list[tuple[str, str]]:
        """(study, series) pairs with stored instances but no queued job, or that changed after
        their last finished job (instances added or replaced). After an unclean stop these are
        series whose readiness was only in memory (the quiet period or the release never came)."""
        rows = self.index.conn().execute(
            """SELECT se.study_uid, se.series_uid FROM series se LEFT JOIN jobs j ON j.series_uid = se.series_uid
               WHERE EXISTS (SELECT 1 FROM instances i WHERE i.series_uid = se.series_uid)
                 AND (j.series_uid IS NULL OR (j.state = 'done' AND (se.last_received > j.finished_at
                      OR j.instance_count != (SELECT count(*) FROM instances i WHERE i.series_uid = se.series_uid))))"""
        ).fetchall()
        return [(r["study_uid"], r["series_uid"]) for r in rows]

    def requeue_interrupted(self) -> int:
        """Jobs left 'running' by a crash go back to pending on start-up."""
        with self.index.write_lock:
            return self.index.conn().execute("UPDATE jobs SET state='pending' WHERE state='running'").rowcount

    def pending(self) -> int:
        return self.index.conn().execute(
            "SELECT count(*) FROM jobs WHERE state IN ('pending','running')").fetchone()[0]

    def states_by_study(self) -> list[tuple[str, str]]:
        return [(r["study_uid"], r["state"]) for r in self.index.conn().execute("SELECT study_uid, state FROM jobs")]

    def state(self, series_uid: str) -> str | None:
        row = self.index.conn().execute("SELECT state FROM jobs WHERE series_uid=?", (series_uid,)).fetchone()
        return row["state"] if row else None
