"""Preliminary results of progressive (ensemble) models: stored in place, announced, and checked
against what came before.

A progressive model (``ModelSpec.run_progressive``, BLAST-CT) reports its result after its first
members; each preliminary result replaces the series' row (one row per series, always), is
announced with ``ResultStored(preliminary=True)`` so the worklist re-sorts at once, and is never
sent outside FirstLook. When a later result of the same run has another priority than the most
urgent one shown before (a study the first member put on top and the ensemble clears), the row
carries a note ("priority changed: critical in preliminary (1/12) → routine (final)") and the audit log records the change.
"""

from __future__ import annotations

import logging
import threading
from dataclasses import dataclass

from app.core.audit import PRIORITY_CHANGED, AuditLog
from app.core.events import EventHub, ResultStored
from app.core.results import AnalysisResult
from app.core.store import StudyStore
from app.core.worklist import RANK

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class Shown:
    """A priority the worklist showed for a series during the current run."""

    priority: str
    progress: str  # "preliminary (1/12)"


def priority_note(shown: list[Shown], result: AnalysisResult) -> tuple[str, Shown] | None:
    """The note for ``result`` when it changes the most urgent priority shown before, else None."""
    if not shown:
        return None
    top = min(shown, key=lambda s: RANK.get(s.priority, 3))
    if top.priority == result.priority:
        return None
    now = f" in {result.progress_text}" if result.preliminary else " (final)"
    return f"priority changed: {top.priority} in {top.progress} → {result.priority}{now}", top


class ProgressiveResults:
    """Per pipeline: stores preliminary results and annotates the results that follow them."""

    def __init__(self, store: StudyStore, hub: EventHub, audit: AuditLog | None = None) -> None:
        self.store = store
        self.hub = hub
        self.audit = audit if audit is not None else AuditLog(store.data_dir)
        self._shown: dict[str, list[Shown]] = {}
        self._lock = threading.Lock()

    def begin(self, series_uid: str) -> None:
        """A new run of the series: what earlier runs showed no longer counts."""
        with self._lock:
            self._shown.pop(series_uid, None)

    def store_preliminary(self, result: AnalysisResult) -> None:
        """Save and announce one preliminary result; a failure here never stops the ensemble."""
        try:
            self._annotate(result)
            self.store.save_result(result)
        except Exception:
            log.exception("preliminary result of series %s could not be stored", result.series_uid)
            return
        with self._lock:
            self._shown.setdefault(result.series_uid, []).append(Shown(result.priority, result.progress_text))
        log.info("series %s: %s %s %s", result.series_uid, result.progress_text, result.priority, result.summary)
        self.hub.publish(ResultStored(result.study_uid, result.series_uid, result.priority, preliminary=True))

    def finish(self, result: AnalysisResult) -> None:
        """Annotate the final result (before it is saved) and forget the run."""
        self._annotate(result)
        with self._lock:
            self._shown.pop(result.series_uid, None)

    def _annotate(self, result: AnalysisResult) -> None:
        with self._lock:
            shown = list(self._shown.get(result.series_uid, []))
        if not shown:  # e.g. restarted mid-run: the stored row is the preliminary the worklist showed
            previous = self.store.get_result(result.series_uid)
            if previous is not None and previous.preliminary and result is not previous:
                shown = [Shown(previous.priority, previous.progress_text)]
        change = priority_note(shown, result)
        if change is None:
            return
        result.priority_note, top = change
        self.audit.append(PRIORITY_CHANGED, study_uid=result.study_uid, series_uid=result.series_uid,
                          model=result.model, before=top.priority, before_result=top.progress,
                          after=result.priority, after_result=result.progress_text or "final")
