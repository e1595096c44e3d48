"""The worklist's cell texts, Qt-free: the desktop's table and ``firstlook worklist`` print the same words."""

from __future__ import annotations

import datetime

from app.core.worklist import WorklistRow

PRIORITY_TEXT = {"critical": "CRITICAL", "urgent": "URGENT", "routine": "routine", "not_analysed": "not analysed",
                 "failed": "failed", "analysing": "analysing…", "new": "new"}
NOT_VALIDATED_TEXT = "NOT VALIDATED – not for diagnosis"
PRELIMINARY_MARK = "prelim."


def format_patient_name(name: str) -> str:
    """DICOM PN 'FAMILY^GIVEN^MIDDLE' -> 'FAMILY, GIVEN MIDDLE'."""
    parts = [p for p in name.split("=")[0].split("^") if p]
    if not parts:
        return ""
    return parts[0] if len(parts) == 1 else f"{parts[0]}, {' '.join(parts[1:])}"


def format_study_when(date: str, clock: str) -> str:
    try:
        when = datetime.datetime.strptime(date[:8] + (clock[:6] or "000000").ljust(6, "0"), "%Y%m%d%H%M%S")
        return when.strftime("%Y-%m-%d %H:%M")
    except ValueError:
        return f"{date} {clock}".strip()


def format_duration(seconds: float | None) -> str:
    if seconds is None:
        return ""
    if seconds < 60:
        return f"{seconds:.0f} s"
    minutes, secs = divmod(int(round(seconds)), 60)
    if minutes < 60:
        return f"{minutes} min {secs:02d} s"
    hours, minutes = divmod(minutes, 60)
    return f"{hours} h {minutes:02d} min"


def priority_text(row: WorklistRow) -> str:
    """"CRITICAL", or "CRITICAL prelim." while the priority comes from a preliminary result."""
    text = PRIORITY_TEXT.get(row.priority, row.priority)
    return f"{text} {PRELIMINARY_MARK}" if row.preliminary else text


def summary_text(row: WorklistRow) -> str:
    """The AI summary, with the unvalidated warning impossible to miss and a priority change in front."""
    text = row.summary
    if row.validated is False and "UNVALIDATED" not in text.upper():
        text = f"⚠ {NOT_VALIDATED_TEXT}: {text}" if text else f"⚠ {NOT_VALIDATED_TEXT}"
    elif row.validated is False:
        text = "⚠ " + text
    if row.priority_note:
        text = f"⚠ {row.priority_note} — {text}" if text else f"⚠ {row.priority_note}"
    return text


def turnaround_text(row: WorklistRow) -> str:
    """Arrival → result; marked while that result is preliminary."""
    text = format_duration(row.arrival_to_result_s)
    return f"{text} to {row.progress}" if text and row.preliminary and row.progress else text


def status_text(row: WorklistRow) -> str:
    return f"{row.status} · {row.progress}" if row.preliminary and row.progress else row.status
