"""The outbox's rows in the index: objects built for results and their per-destination sends.

Objects (``outbox_objects``) are inserted in the transaction that stores their result
(``StudyStore.save_result(result, also=...)``), so a result is committed with all its queued
objects or with none. Sends (``outbox``) move queued -> sending -> sent, or failed with the
DICOM status or network error, the attempt count and the next retry time. A row left
``sending`` by a crash is queued again at start: the retry re-sends the same file, hence the
same SOP Instance UID, so a PACS sees a duplicate at worst.
"""

from __future__ import annotations

import json
import sqlite3
import time
from dataclasses import dataclass, field
from typing import Any, Iterable, Sequence

from app.core.store.index import Index

QUEUED, SENDING, SENT, FAILED, STOPPED, SUPERSEDED = "queued", "sending", "sent", "failed", "stopped", "superseded"
OPEN_STATES = (QUEUED, SENDING, FAILED)


@dataclass(frozen=True)
class OutboxObject:
    """One object built for a result, as its Part 10 file (path relative to the data dir)."""

    sop_uid: str
    source_series_uid: str
    study_uid: str
    kind: str
    sop_class_uid: str
    series_uid: str
    version: int
    path: str
    size: int
    supersedes: tuple[str, ...] = ()
    created_at: float = field(default_factory=time.time)


@dataclass(frozen=True)
class Claimed:
    """A send row taken by a worker: the object's file goes to ``destination``."""

    id: int
    sop_uid: str
    study_uid: str
    kind: str
    path: str
    destination: str
    attempts: int


@dataclass(frozen=True)
class StudySendState:
    """What the worklist shows per study: queued, sent, failing or stopped, and why."""

    state: str
    detail: str


def object_from_row(row: sqlite3.Row) -> OutboxObject:
    return OutboxObject(sop_uid=row["sop_uid"], source_series_uid=row["source_series_uid"],
                        study_uid=row["study_uid"], kind=row["kind"], sop_class_uid=row["sop_class_uid"],
                        series_uid=row["series_uid"], version=row["version"], path=row["path"], size=row["size"],
                        supersedes=tuple(json.loads(row["supersedes"] or "[]")), created_at=row["created_at"])


class OutboxQueue:
    def __init__(self, index: Index) -> None:
        self.index = index

    # -- in the result's transaction ---------------------------------------------------------------
    @staticmethod
    def insert(conn: sqlite3.Connection, objects: Sequence[OutboxObject],
               sends: Iterable[tuple[str, str]], now: float | None = None) -> None:
        """Objects and their (sop_uid, destination) sends; older versions' unsent rows of the
        same source series are superseded. Runs inside the caller's transaction."""
        now = time.time() if now is None else now
        for o in objects:
            conn.execute(
                "UPDATE outbox SET state=?, updated_at=?, last_error=? WHERE state IN (?,?) AND sop_uid IN"
                " (SELECT sop_uid FROM outbox_objects WHERE source_series_uid=? AND version<?)",
                (SUPERSEDED, now, f"replaced by version {o.version}", QUEUED, FAILED, o.source_series_uid, o.version))
            conn.execute(
                "INSERT INTO outbox_objects(sop_uid, source_series_uid, study_uid, kind, sop_class_uid, series_uid,"
                " version, supersedes, path, size, created_at) VALUES (?,?,?,?,?,?,?,?,?,?,?)",
                (o.sop_uid, o.source_series_uid, o.study_uid, o.kind, o.sop_class_uid, o.series_uid, o.version,
                 json.dumps(list(o.supersedes)), o.path, o.size, o.created_at))
        for sop_uid, destination in sends:
            conn.execute("INSERT INTO outbox(sop_uid, destination, state, next_attempt_at, queued_at, updated_at)"
                         " VALUES (?,?,?,?,?,?)", (sop_uid, destination, QUEUED, now, now, now))

    def record(self, objects: Sequence[OutboxObject], sends: Iterable[tuple[str, str]]) -> None:
        """The same as ``insert`` in a transaction of its own (objects built on demand)."""
        with self.index.write_lock:
            conn = self.index.conn()
            conn.execute("BEGIN IMMEDIATE")
            try:
                self.insert(conn, objects, sends)
                conn.execute("COMMIT")
            except BaseException:
                if conn.in_transaction:
                    conn.execute("ROLLBACK")
                raise

    # -- objects ---------------------------------------------------------------------------------------
    def latest_objects(self, source_series_uid: str) -> list[OutboxObject]:
        rows = self.index.conn().execute(
            "SELECT * FROM outbox_objects WHERE source_series_uid=? AND version="
            " (SELECT max(version) FROM outbox_objects WHERE source_series_uid=?) ORDER BY kind, sop_uid",
            (source_series_uid, source_series_uid)).fetchall()
        return [object_from_row(r) for r in rows]

    def objects(self, study_uid: str | None = None) -> list[OutboxObject]:
        sql, args = "SELECT * FROM outbox_objects", ()
        if study_uid is not None:
            sql, args = sql + " WHERE study_uid=?", (study_uid,)
        return [object_from_row(r) for r in self.index.conn().execute(sql + " ORDER BY created_at, sop_uid", args)]

    def object_paths(self) -> set[str]:
        return {r[0] for r in self.index.conn().execute("SELECT path FROM outbox_objects")}

    def settled_objects(self, before: float) -> list[OutboxObject]:
        """Objects nothing will send from their file again: every send row is sent or superseded
        (or the object never had one: no destination took its kind), and the last of those
        happened before ``before``. Queued, sending, failed and stopped rows keep their file."""
        rows = self.index.conn().execute(
            "SELECT b.* FROM outbox_objects b WHERE NOT EXISTS"
            " (SELECT 1 FROM outbox s WHERE s.sop_uid = b.sop_uid AND s.state NOT IN (?, ?))"
            " AND max(b.created_at, coalesce((SELECT max(coalesce(s.sent_at, s.updated_at)) FROM outbox s"
            " WHERE s.sop_uid = b.sop_uid), 0)) < ? ORDER BY b.created_at, b.sop_uid",
            (SENT, SUPERSEDED, before)).fetchall()
        return [object_from_row(r) for r in rows]

    # -- the worker's side -----------------------------------------------------------------------------
    def requeue_interrupted(self) -> int:
        """Rows left 'sending' by a crash or a stop are queued again (same file, same UIDs)."""
        with self.index.write_lock:
            return self.index.conn().execute(
                "UPDATE outbox SET state=?, next_attempt_at=min(next_attempt_at, ?), updated_at=? WHERE state=?",
                (QUEUED, time.time(), time.time(), SENDING)).rowcount

    def stop_unconfigured(self, configured: Sequence[str]) -> int:
        """Rows for destinations no longer configured stop (and resume if the name comes back)."""
        now = time.time()
        marks = ",".join("?" * len(configured))
        with self.index.write_lock:
            conn = self.index.conn()
            if configured:
                conn.execute(f"UPDATE outbox SET state=?, updated_at=?, next_attempt_at=? WHERE state=?"
                             f" AND destination IN ({marks})", (QUEUED, now, now, STOPPED, *configured))
            return conn.execute(
                f"UPDATE outbox SET state=?, updated_at=?, last_error='destination ' || destination ||"
                f" ' is no longer configured' WHERE state IN (?,?,?) AND destination NOT IN ({marks})",
                (STOPPED, now, *OPEN_STATES, *configured)).rowcount

    def claim(self, destination: str, limit: int = 50, now: float | None = None) -> list[Claimed]:
        now = time.time() if now is None else now
        with self.index.write_lock:
            rows = self.index.conn().execute(
                """UPDATE outbox SET state=?, updated_at=?, attempts=attempts+1
                   WHERE id IN (SELECT id FROM outbox WHERE destination=? AND state IN (?,?) AND next_attempt_at<=?
                                ORDER BY next_attempt_at, id LIMIT ?)
                   RETURNING id, sop_uid, destination, attempts""",
                (SENDING, now, destination, QUEUED, FAILED, now, limit)).fetchall()
            if not rows:
                return []
            marks = ",".join("?" * len(rows))
            objects = {r["sop_uid"]: r for r in self.index.conn().execute(
                f"SELECT sop_uid, study_uid, kind, path FROM outbox_objects WHERE sop_uid IN ({marks})",
                [r["sop_uid"] for r in rows])}
        return sorted((Claimed(r["id"], r["sop_uid"], objects[r["sop_uid"]]["study_uid"],
                               objects[r["sop_uid"]]["kind"], objects[r["sop_uid"]]["path"], r["destination"],
                               r["attempts"]) for r in rows), key=lambda c: c.id)

    def mark_sent(self, row_id: int, status: int, note: str | None = None) -> None:
        now = time.time()
        with self.index.write_lock:
            self.index.conn().execute(
                "UPDATE outbox SET state=?, last_status=?, last_error=?, sent_at=?, updated_at=? WHERE id=?",
                (SENT, status, note, now, now, row_id))

    def mark_failed(self, row_id: int, status: int | None, error: str, next_attempt_at: float) -> None:
        with self.index.write_lock:
            self.index.conn().execute(
                "UPDATE outbox SET state=?, last_status=?, last_error=?, next_attempt_at=?, updated_at=?"
                " WHERE id=? AND state=?", (FAILED, status, error, next_attempt_at, time.time(), row_id, SENDING))

    def next_due(self, destination: str) -> float | None:
        row = self.index.conn().execute(
            "SELECT min(next_attempt_at) FROM outbox WHERE destination=? AND state IN (?,?)",
            (destination, QUEUED, FAILED)).fetchone()
        return row[0]

    # -- on demand ---------------------------------------------------------------------------------------
    def requeue(self, sends: Iterable[tuple[str, str]]) -> int:
        """(sop_uid, destination) sent again now: an existing row is reset, a new one inserted."""
        now = time.time()
        count = 0
        with self.index.write_lock:
            conn = self.index.conn()
            for sop_uid, destination in sends:
                conn.execute(
                    """INSERT INTO outbox(sop_uid, destination, state, next_attempt_at, queued_at, updated_at)
                       VALUES (?,?,?,?,?,?) ON CONFLICT(sop_uid, destination) DO UPDATE SET state=excluded.state,
                       next_attempt_at=excluded.next_attempt_at, queued_at=excluded.queued_at,
                       updated_at=excluded.updated_at, attempts=0, last_error=NULL, last_status=NULL
                       WHERE outbox.state != 'sending'""", (sop_uid, destination, QUEUED, now, now, now))
                count += 1
        return count

    # -- what people look at -----------------------------------------------------------------------------
    def rows(self, study_uid: str | None = None) -> list[dict[str, Any]]:
        sql = """SELECT o.id, o.destination, o.state, o.attempts, o.next_attempt_at, o.last_status, o.last_error,
                        o.queued_at, o.updated_at, o.sent_at, b.sop_uid, b.study_uid, b.source_series_uid, b.kind,
                        b.series_uid, b.version, b.supersedes, b.sop_class_uid, b.size
                 FROM outbox o JOIN outbox_objects b ON b.sop_uid = o.sop_uid"""
        args: tuple[Any, ...] = ()
        if study_uid is not None:
            sql, args = sql + " WHERE b.study_uid=?", (study_uid,)
        out = []
        for r in self.index.conn().execute(sql + " ORDER BY o.id", args):
            row = dict(r)
            row["supersedes"] = json.loads(row["supersedes"] or "[]")
            out.append(row)
        return out

    def study_states(self, study_uid: str | None = None) -> dict[str, StudySendState]:
        """Per study: 'failing' (with the last error), 'queued', 'sent' or 'stopped'; rows of
        superseded versions do not count."""
        sql = """SELECT b.study_uid, o.destination, o.state, o.attempts, o.last_error, o.next_attempt_at, o.sent_at
                 FROM outbox o JOIN outbox_objects b ON b.sop_uid = o.sop_uid WHERE o.state != ?"""
        args: tuple[Any, ...] = (SUPERSEDED,)
        if study_uid is not None:
            sql, args = sql + " AND b.study_uid=?", (SUPERSEDED, study_uid)
        grouped: dict[str, list[sqlite3.Row]] = {}
        for r in self.index.conn().execute(sql, args):
            grouped.setdefault(r["study_uid"], []).append(r)
        return {study: _summarise(rows) for study, rows in grouped.items()}


def _summarise(rows: list[sqlite3.Row]) -> StudySendState:
    failing = [r for r in rows if r["state"] == FAILED]
    waiting = [r for r in rows if r["state"] in (QUEUED, SENDING)]
    sent = [r for r in rows if r["state"] == SENT]
    stopped = [r for r in rows if r["state"] == STOPPED]
    if failing:
        r = max(failing, key=lambda r: r["attempts"])
        retry = time.strftime("%H:%M:%S", time.localtime(r["next_attempt_at"]))
        return StudySendState("failing", f"{len(failing)} object(s) not accepted by {r['destination']}: "
                                         f"{r['last_error']} (attempt {r['attempts']}, next try {retry})")
    if waiting:
        where = ", ".join(sorted({r["destination"] for r in waiting}))
        return StudySendState("queued", f"{len(waiting)} object(s) waiting for {where}; {len(sent)} sent")
    if stopped:
        return StudySendState("stopped", str(stopped[0]["last_error"]))
    where = ", ".join(sorted({r["destination"] for r in sent}))
    last = max((r["sent_at"] or 0) for r in sent) if sent else 0
    return StudySendState("sent", f"{len(sent)} object(s) sent to {where} at "
                                  f"{time.strftime('%Y-%m-%d %H:%M:%S', time.localtime(last))}")
