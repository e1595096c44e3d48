"""The triage worklist, headless: one row per study, most urgent first, then oldest first.

Studies whose analysis has not finished sort just below urgent ones: until the model has
spoken, any of them could be critical. A preliminary result (first members of an ensemble)
sorts by its priority at once and is marked as preliminary until the final one replaces it.
"""

from __future__ import annotations

from dataclasses import dataclass

from app.core.results import AnalysisResult
from app.core.store import StudyRecord, StudyStore
from app.core.store.outbox_queue import StudySendState

# Lower sorts first.
RANK = {"critical": 0, "urgent": 1, "analysing": 2, "new": 2, "routine": 3, "not_analysed": 3, "failed": 3}


@dataclass
class WorklistRow:
    study_uid: str
    patient_name: str
    patient_id: str
    study_date: str
    study_time: str
    modalities: str
    description: str
    priority: str            # critical, urgent, routine, not_analysed, failed, analysing, new
    validated: bool | None   # None when no model result; False when any result is unvalidated
    summary: str
    arrival: float
    result_at: float | None
    arrival_to_result_s: float | None
    status: str              # new, analysing, ready, reviewed
    n_series: int
    n_instances: int
    send_state: str = ""     # results sent to PACS: "", queued, sent, failing, stopped
    send_detail: str = ""    # why (the last error when failing), for the tooltip
    preliminary: bool = False  # some result is a partial ensemble's (the final one is still coming)
    progress: str = ""         # "preliminary (1/12)"
    priority_note: str = ""    # "priority changed: critical (preliminary 1/12) → routine"

    @property
    def rank(self) -> int:
        return RANK.get(self.priority, 3)

    def sort_key(self) -> tuple[int, float, str]:
        """Worklist order, as the desktop sorts it (ties by study UID, so every listing agrees)."""
        return (self.rank, self.arrival, self.study_uid)


def _study_row(study: StudyRecord, results: list[AnalysisResult], job_states: list[str | None],
               send: StudySendState | None = None) -> WorklistRow:
    busy = any(state in ("pending", "running") for state in job_states)
    model_results = [r for r in results if r.status == "done"]
    priorities = [r.priority for r in results]
    if results:
        priority = min(priorities, key=lambda p: RANK.get(p, 3))
    else:
        priority = "new"
    if busy and (priority == "new" or RANK.get(priority, 3) > RANK["analysing"]):
        priority = "analysing"
    validated: bool | None = None
    if model_results:
        validated = all(r.validated for r in model_results)
    parts = []
    for r in results:
        text = r.summary or (f"not analysed: {r.reason}" if r.status == "not_analysed" else
                             f"failed: {r.reason}" if r.status == "failed" else "")
        if text and text not in parts:
            parts.append(text)
    result_at = max((r.created_at for r in results), default=None)
    turnaround = None
    timed = [r.timings.get("arrival_to_result") for r in results if r.timings.get("arrival_to_result") is not None]
    if timed:
        turnaround = max(timed)
    if study.reviewed_at is not None:
        status = "reviewed"
    elif busy:
        status = "analysing"
    elif results:
        status = "ready"
    else:
        status = "new"
    return WorklistRow(
        study_uid=study.study_uid, patient_name=study.patient_name, patient_id=study.patient_id,
        study_date=study.study_date, study_time=study.study_time, modalities=study.modalities,
        description=study.description, priority=priority, validated=validated, summary="; ".join(parts),
        arrival=study.first_received, result_at=result_at, arrival_to_result_s=turnaround, status=status,
        n_series=study.n_series, n_instances=study.n_instances,
        send_state=send.state if send else "", send_detail=send.detail if send else "",
        preliminary=any(r.preliminary for r in results),
        progress="; ".join(dict.fromkeys(r.progress_text for r in results if r.preliminary)),
        priority_note="; ".join(dict.fromkeys(r.priority_note for r in results if r.priority_note)),
    )


def row_for_study(store: StudyStore, study_uid: str) -> WorklistRow | None:
    study = store.get_study(study_uid)
    if study is None:
        return None
    series = store.list_series(study_uid)
    return _study_row(study, store.results_for_study(study_uid), [store.job_state(s.series_uid) for s in series],
                      store.outbox.study_states(study_uid).get(study_uid))


def build_rows(store: StudyStore) -> list[WorklistRow]:
    """All studies in worklist order; one query per table, so 10,000 studies load fast."""
    studies = store.list_studies()
    results: dict[str, list[AnalysisResult]] = {}
    for r in store.all_results():
        results.setdefault(r.study_uid, []).append(r)
    states: dict[str, list[str | None]] = {}
    for study_uid, state in store.job_states_by_study():
        states.setdefault(study_uid, []).append(state)
    sends = store.outbox.study_states()
    rows = [_study_row(s, results.get(s.study_uid, []), states.get(s.study_uid, []), sends.get(s.study_uid))
            for s in studies]
    rows.sort(key=WorklistRow.sort_key)
    return rows
