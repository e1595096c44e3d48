"""What analysing one series produced: the record the analysers write and the worklist reads.

It lives with analysis, not with the store: the store only keeps it (``StudyStore.save_result``).
"""

from __future__ import annotations

import time
from dataclasses import dataclass, field
from typing import Any


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
    # Progressive (ensemble) models: a preliminary result reflects the first members only and is
    # replaced in place by the final one. Preliminary results never leave FirstLook (no outbox).
    preliminary: bool = False
    members_done: int | None = None    # ensemble members behind this result; None: not an ensemble
    members_total: int | None = None
    priority_note: str | None = None   # set when the final priority differs from the preliminary one

    @property
    def progress_text(self) -> str:
        """"preliminary (1/12)" for a preliminary result, "" otherwise."""
        if not self.preliminary:
            return ""
        return f"preliminary ({self.members_done}/{self.members_total})" if self.members_total else "preliminary"
