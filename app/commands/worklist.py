"""``firstlook worklist [--json]``: the triage worklist as the desktop shows it, for headless sites
and scripts (order, priority, status, summary, arrival → result, preliminary or final).

Reads the data dir's index (safe while the service runs: SQLite WAL). The listing shows patient
names and IDs, so each run is an audit record, like ``firstlook studies``.
"""

from __future__ import annotations

import dataclasses
import datetime
import json
import os
import sys
from typing import Any, TextIO

from app.core.audit import STUDIES_LISTED, AuditLog, os_user
from app.core.config import Config
from app.core.store import StudyStore
from app.core.worklist import WorklistRow, build_rows
from app.core.worklist_text import (
    format_patient_name, format_study_when, priority_text, status_text, summary_text, turnaround_text,
)


def row_json(position: int, row: WorklistRow) -> dict[str, Any]:
    """Every field of the row (``dataclasses.asdict``, as the service's JSON) plus its place and texts."""
    return {"position": position, **dataclasses.asdict(row),
            "arrival_iso": datetime.datetime.fromtimestamp(row.arrival).astimezone().isoformat(timespec="seconds"),
            "text": {"priority": priority_text(row), "status": status_text(row), "summary": summary_text(row),
                     "arrival_to_result": turnaround_text(row)}}


def print_worklist(rows: list[WorklistRow], as_json: bool, out: TextIO) -> None:
    if as_json:
        out.write(json.dumps([row_json(i, r) for i, r in enumerate(rows, start=1)], indent=2) + "\n")
        return
    if not rows:
        out.write("worklist is empty\n")
        return
    out.write(f"{'#':>3}  {'priority':16} {'status':30} {'patient':22} {'id':10} {'study':16} {'mod':5} "
              f"{'arrival → result':34} AI summary\n")
    for i, r in enumerate(rows, start=1):
        out.write(f"{i:>3}  {priority_text(r):16} {status_text(r)[:30]:30} "
                  f"{format_patient_name(r.patient_name)[:22]:22} {r.patient_id[:10]:10} "
                  f"{format_study_when(r.study_date, r.study_time):16} {r.modalities[:5]:5} "
                  f"{turnaround_text(r)[:34]:34} {summary_text(r)}\n")


def run(config: Config, as_json: bool, out: TextIO | None = None) -> int:
    store = StudyStore(config.data_dir)
    try:
        rows = build_rows(store)
    finally:
        store.close()
    AuditLog(config.data_dir).append(STUDIES_LISTED, user=os_user(), sudo_user=os.environ.get("SUDO_USER"),
                                     studies=len(rows), listing="worklist")
    print_worklist(rows, as_json, out if out is not None else sys.stdout)
    return 0
