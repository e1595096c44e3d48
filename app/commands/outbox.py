"""``firstlook outbox [--json]`` and ``firstlook resend STUDY_UID``: what was sent to PACS, what
waits and why; and sending a study again (the running service's outbox picks the rows up within
seconds: its workers look at the queue at least every 5 s)."""

from __future__ import annotations

import datetime
import json
import sys
from typing import Any

from app.core.config import Config
from app.core.models import ModelSpecs
from app.core.outbox.result_outbox import ResultOutbox
from app.core.store import StudyStore


def _when(ts: float | None) -> str:
    if not ts:
        return ""
    return datetime.datetime.fromtimestamp(ts).astimezone().isoformat(timespec="seconds")


def show_outbox(config: Config, as_json: bool) -> int:
    store = StudyStore(config.data_dir)
    try:
        rows = store.outbox.rows()
    finally:
        store.close()
    configured = {d.name for d in config.destinations}
    if as_json:
        out: list[dict[str, Any]] = []
        for r in rows:
            item = dict(r)
            for key in ("next_attempt_at", "queued_at", "updated_at", "sent_at"):
                item[key] = _when(item[key]) or None
            item["last_status"] = f"0x{r['last_status']:04X}" if r["last_status"] is not None else None
            item["destination_configured"] = r["destination"] in configured
            out.append(item)
        sys.stdout.write(json.dumps(out, indent=2) + "\n")
        return 0
    if not rows:
        where = ", ".join(sorted(configured)) or "none configured"
        sys.stdout.write(f"outbox empty (destinations: {where})\n")
        return 0
    counts: dict[str, int] = {}
    for r in rows:
        counts[r["state"]] = counts.get(r["state"], 0) + 1
    sys.stdout.write("outbox: " + ", ".join(f"{n} {state}" for state, n in sorted(counts.items())) + "\n")
    sys.stdout.write(f"{'state':10} {'destination':14} {'kind':4} {'v':>2} {'try':>3}  {'updated':25} "
                     f"study UID / SOP instance UID / last status or error\n")
    for r in rows:
        status = f"0x{r['last_status']:04X}" if r["last_status"] is not None else ""
        detail = " ".join(x for x in (status, r["last_error"] or "") if x)
        if r["state"] == "failed":
            detail += f" (next try {_when(r['next_attempt_at'])})"
        sys.stdout.write(f"{r['state']:10} {r['destination'][:14]:14} {r['kind']:4} {r['version']:>2} "
                         f"{r['attempts']:>3}  {_when(r['updated_at']):25} {r['study_uid']} / {r['sop_uid']}"
                         f"{' / ' + detail if detail else ''}\n")
    return 0


def resend(config: Config, study_uid: str, specs: ModelSpecs) -> int:
    if not config.destinations:
        sys.stderr.write("firstlook: no destinations are configured ([[destinations]] in the configuration).\n")
        return 2
    from app.core.pacs_objects import build_result_objects

    store = StudyStore(config.data_dir)
    try:
        if store.get_study(study_uid) is None:
            sys.stderr.write(f"firstlook: no study {study_uid} in {config.data_dir}.\n")
            return 1
        queued = ResultOutbox(store, specs, lambda: config.destinations, build_result_objects,
                              config.uid_root).resend_study(study_uid)
    finally:
        store.close()
    if not queued:
        sys.stdout.write(f"nothing to send for {study_uid}: it has no analysed series\n")
        return 1
    sys.stdout.write(f"queued {queued} send(s) of study {study_uid} to "
                     f"{', '.join(d.name for d in config.destinations)}; the running FirstLook service sends them\n")
    return 0
