"""Stage a result's objects for sending: build them, write them durably, and hand the store the
rows to commit with the result (``StudyStore.save_result(result, also=staged.record)``).

Only "done" results send anything. Which destinations get a row follows their ``objects`` and
``when``; the objects of a series are versioned: a re-analysis builds version n+1 in new series,
records the SOP Instance UIDs of version n it supersedes, and version n's unsent rows stop.
"""

from __future__ import annotations

import contextlib
import logging
import sqlite3
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable, Protocol, Sequence

from app.core.destinations import Destination
from app.core.models import ModelSpecs
from app.core.outbox.staging import object_path, remove_orphans, write_durably
from app.core.results import AnalysisResult
from app.core.store import StudyStore
from app.core.store.outbox_queue import OutboxObject, OutboxQueue

log = logging.getLogger(__name__)


class ObjectBuilder(Protocol):
    """``app.core.pacs_objects.build_result_objects``: the DICOM objects of one result, each with
    ``kind``, ``dataset`` (with File Meta), ``sop_instance_uid``, ``sop_class_uid``, ``series_uid``."""

    def __call__(self, result: AnalysisResult, source_files: Sequence[Path], specs: ModelSpecs, data_dir: Path,
                 uid_root: str | None = None, version: int = 1, supersedes: Sequence[str] = (),
                 **extra: Any) -> list[Any]: ...


@dataclass
class StagedResult:
    """Objects written to disk, and their rows waiting for the result's transaction."""

    objects: list[OutboxObject]
    sends: list[tuple[str, str]] = field(default_factory=list)  # (sop_uid, destination)

    def record(self, conn: sqlite3.Connection) -> None:
        OutboxQueue.insert(conn, self.objects, self.sends)


class ResultOutbox:
    def __init__(self, store: StudyStore, specs: ModelSpecs, destinations: Callable[[], Sequence[Destination]],
                 builder: ObjectBuilder, uid_root: str | None = None,
                 pack_for: Callable[[str], Any] | None = None, keep_days: float = 30.0) -> None:
        """``pack_for(model)``: the loaded pack, so the objects name its hash and precision
        (None when it is not loaded). ``keep_days``: how long the file of an object sent
        everywhere is kept (``release_settled_files``)."""
        self.store = store
        self.keep_days = keep_days
        self.pack_for = pack_for
        self.specs = specs
        self.destinations = destinations
        self.builder = builder
        self.uid_root = uid_root

    # -- with the pipeline -----------------------------------------------------------------------------
    def stage(self, result: AnalysisResult) -> StagedResult | None:
        """Build and write the objects of a new result for the destinations that take it; None
        when nothing is to be sent. Never raises: a result is stored even if its objects fail."""
        if result.status != "done" or result.preliminary:  # only final results leave FirstLook
            return None
        takers = [d for d in self.destinations() if d.takes(result.priority)]
        if not takers:
            return None
        try:
            return self._build(result, takers)
        except Exception:
            log.exception("the DICOM objects of series %s could not be built; the result is stored without them",
                          result.series_uid)
            return None

    def _build(self, result: AnalysisResult, destinations: Sequence[Destination]) -> StagedResult:
        previous = self.store.outbox.latest_objects(result.series_uid)
        version = max((o.version for o in previous), default=0) + 1
        supersedes = tuple(o.sop_uid for o in previous)
        files = self.store.series_files(result.series_uid)
        pack = self.pack_for(result.model) if self.pack_for is not None and result.model else None
        extra = {"pack": pack} if pack is not None else {}
        built = self.builder(result, files, self.specs, self.store.data_dir, uid_root=self.uid_root,
                             version=version, supersedes=supersedes, **extra)
        now = time.time()
        objects: list[OutboxObject] = []
        for item in built:
            sop_uid = str(item.sop_instance_uid)
            target = object_path(self.store.data_dir, result.study_uid, sop_uid)
            size = write_durably(item.dataset, target, self.store.tmp_dir)
            objects.append(OutboxObject(
                sop_uid=sop_uid, source_series_uid=result.series_uid, study_uid=result.study_uid, kind=item.kind,
                sop_class_uid=str(item.sop_class_uid), series_uid=str(item.series_uid), version=version,
                path=str(target.relative_to(self.store.data_dir)), size=size, supersedes=supersedes, created_at=now))
        sends = [(o.sop_uid, d.name) for o in objects for d in destinations if o.kind in d.objects]
        log.info("series %s: %d object(s) (version %d) staged for %s", result.series_uid, len(objects), version,
                 ", ".join(d.name for d in destinations))
        return StagedResult(objects, sends)

    # -- on demand ("Send to PACS", ``firstlook resend``) -----------------------------------------------
    def resend_study(self, study_uid: str) -> int:
        """Queue the study's latest objects to every configured destination now (``when`` is not
        applied: someone asked); objects never built (no destination at the time) are built first.
        Returns the number of sends queued."""
        destinations = list(self.destinations())
        if not destinations:
            return 0
        queued = 0
        for result in self.store.results_for_study(study_uid):
            if result.status != "done" or result.preliminary:  # the final result will be sent when it is stored
                continue
            objects = self.store.outbox.latest_objects(result.series_uid)
            if not objects or not all((self.store.data_dir / o.path).is_file() for o in objects):
                # never built, or sent long ago and its files released: a new version (new UIDs
                # that record the ones they supersede), never a second file under an old UID
                staged = self._build(result, destinations)
                self.store.outbox.record(staged.objects, staged.sends)
                queued += len(staged.sends)
                continue
            queued += self.store.outbox.requeue((o.sop_uid, d.name) for o in objects for d in destinations
                                                if o.kind in d.objects)
        return queued

    # -- housekeeping (at start, then hourly) --------------------------------------------------------------
    def release_settled_files(self, now: float | None = None) -> tuple[int, int]:
        """Delete the files of objects sent everywhere (or superseded) more than ``keep_days``
        ago; their rows stay, so the worklist still says sent and ``firstlook outbox`` lists
        them. Returns (files, bytes) removed."""
        now = time.time() if now is None else now
        removed = freed = 0
        for o in self.store.outbox.settled_objects(now - self.keep_days * 86400):
            path = self.store.data_dir / o.path
            try:
                size = path.stat().st_size
                path.unlink()
            except FileNotFoundError:
                continue  # released before
            removed, freed = removed + 1, freed + size
            with contextlib.suppress(OSError):
                path.parent.rmdir()   # the study's outbox folder, once empty
        if removed:
            log.info("outbox: released %d file(s), %.1f MB, of objects sent more than %g days ago "
                     "(a re-send builds them again as a new version)", removed, freed / 1e6, self.keep_days)
        return removed, freed

    # -- at start ----------------------------------------------------------------------------------------
    def recover(self) -> None:
        """Before the pipeline starts: sends a stop interrupted are queued again, rows of removed
        destinations stop, and files of results never committed are removed."""
        requeued = self.store.outbox.requeue_interrupted()
        if requeued:
            log.warning("%d send(s) interrupted by the last stop are queued again (same objects, same UIDs)", requeued)
        stopped = self.store.outbox.stop_unconfigured([d.name for d in self.destinations()])
        if stopped:
            log.warning("%d queued send(s) stopped: their destination is no longer configured", stopped)
        remove_orphans(self.store.data_dir, self.store.outbox.object_paths())
