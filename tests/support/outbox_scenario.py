"""Outbox scenarios with real peers, run inside a private network namespace:

    unshare -n -- python -m tests.support.outbox_scenario SPEC.json

SPEC: {"mode": "peers" | "crash" | "headct-labels", "workdir": ..., "packs_dir": ..., "chest": [dicom files...],
"headct": [dicom files...] (optional), "kills": n (crash)}. Starts Orthanc (+ storescp) and FirstLook
headless on loopback, pushes the studies with DCMTK storescu, waits, and writes REPORT.json in the
workdir: what Orthanc and storescp hold, the outbox rows, FirstLook's log tail.

* peers: destinations Orthanc (everything) and storescp (SR only), storescp DOWN until FirstLook has
  recorded a failed send to it, then started: its queue must drain.
* headct-labels: the real tilted head CT with a synthetic label volume, the outbox in-process,
  Orthanc as the PACS (SR + SEG + SC without the minutes of BLAST-CT).
* crash: Orthanc only; FirstLook is SIGKILLed while its outbox sends (crash point ``outbox-sent``:
  objects C-STOREd, rows not yet marked; or from outside as soon as a row is 'sending'), restarted,
  and so on ``kills`` times, then runs until the outbox is empty.
"""

from __future__ import annotations

import json
import random
import sys
import time
import traceback
from pathlib import Path
from typing import Any

from tests.support.pacs_peers import FirstLook, Orthanc, StoreSCP, loopback_up, storescu

FIRSTLOOK_PORT = 11112


def _config(workdir: Path, packs_dir: str, destinations: list[dict[str, Any]]) -> dict[str, Any]:
    return {"ae_title": "FIRSTLOOK", "port": FIRSTLOOK_PORT, "bind": "127.0.0.1", "data_dir": str(workdir / "data"),
            "cache_dir": str(workdir / "cache"), "packs_dir": packs_dir, "min_free_mb": 0, "quiet_period_s": 0.5,
            "log_level": "INFO", "send_retry_s": 0.5, "send_retry_max_s": 2.0, "destinations": destinations}


def _wait(check: Any, timeout: float, step: float = 0.2) -> bool:
    end = time.monotonic() + timeout
    while time.monotonic() < end:
        if check():
            return True
        time.sleep(step)
    return bool(check())


def _outbox_rows(fl: FirstLook) -> list[dict[str, Any]]:
    cols = ("destination", "state", "attempts", "last_status", "last_error", "sop_uid", "kind", "study_uid",
            "source_series_uid", "version", "series_uid")
    rows = fl.db("SELECT o.destination, o.state, o.attempts, o.last_status, o.last_error, b.sop_uid, b.kind,"
                 " b.study_uid, b.source_series_uid, b.version, b.series_uid FROM outbox o"
                 " JOIN outbox_objects b ON b.sop_uid = o.sop_uid ORDER BY o.id")
    return [dict(zip(cols, r)) for r in rows]


def _all_sent(fl: FirstLook, expected_results: int) -> bool:
    done = fl.db("SELECT count(*) FROM results WHERE status='done'")
    # final results only: a progressive model's preliminary result (head CT) sends nothing yet
    results = fl.db("SELECT count(*) FROM results WHERE preliminary=0")
    open_rows = fl.db("SELECT count(*) FROM outbox WHERE state NOT IN ('sent','superseded','stopped')")
    rows = fl.db("SELECT count(*) FROM outbox")
    return bool(results and results[0][0] >= expected_results and open_rows and open_rows[0][0] == 0
                and rows and rows[0][0] > 0 and done)


def peers(spec: dict[str, Any], work: Path, report: dict[str, Any]) -> None:
    orthanc = Orthanc(work / "orthanc").start()
    scp = StoreSCP(work / "storescp" / "in")
    destinations = [{"name": "orthanc", "ae_title": "ORTHANC", "host": "127.0.0.1", "port": orthanc.dicom_port},
                    {"name": "storescp", "ae_title": "STORESCP", "host": "127.0.0.1", "port": scp.port,
                     "objects": ["sr"]}]
    fl = FirstLook(work, _config(work, spec["packs_dir"], destinations))
    try:
        fl.start()
        studies = [spec["chest"]] + ([spec["headct"]] if spec.get("headct") else [])
        for files in studies:
            storescu(FIRSTLOOK_PORT, [Path(f) for f in files])
        # storescp is down: wait until FirstLook has failed to reach it, then bring it up
        report["storescp_failed_first"] = _wait(
            lambda: bool(fl.db("SELECT 1 FROM outbox WHERE destination='storescp' AND state='failed'")),
            spec.get("analysis_timeout", 120))
        report["failure_seen"] = [dict(zip(("state", "last_error"), r)) for r in
                                  fl.db("SELECT state, last_error FROM outbox WHERE destination='storescp' LIMIT 1")]
        scp.start()
        report["all_sent"] = _wait(lambda: _all_sent(fl, len(studies)), spec.get("analysis_timeout", 120) + 60)
        report["results"] = [dict(zip(("series_uid", "study_uid", "status", "priority", "validated"), r)) for r in
                             fl.db("SELECT series_uid, study_uid, status, priority, validated FROM results")]
        report["outbox"] = _outbox_rows(fl)
        report["stop_rc"] = fl.stop()
        report["orthanc"] = orthanc.instances()
        report["storescp"] = scp.received()
        audit = fl.data_dir / "audit.log"
        report["audit_sent"] = [json.loads(line) for line in audit.read_text().splitlines()
                                if '"dicom.objects_sent"' in line] if audit.exists() else []
    finally:
        report["log_tail"] = fl.log_tail()
        fl.kill()
        scp.stop()
        orthanc.stop()


def crash(spec: dict[str, Any], work: Path, report: dict[str, Any]) -> None:
    orthanc = Orthanc(work / "orthanc").start()
    destinations = [{"name": "orthanc", "ae_title": "ORTHANC", "host": "127.0.0.1", "port": orthanc.dicom_port}]
    fl = FirstLook(work, _config(work, spec["packs_dir"], destinations))
    rng = random.Random(spec.get("seed", 3))
    kills: list[str] = []
    files = [Path(f) for f in spec["chest"]]
    try:
        # one radiograph per round, so every round has something in flight when it is killed
        for k in range(spec.get("kills", 3)):
            at_point = k % 2 == 0
            fl.start("outbox-sent:1" if at_point else "")
            storescu(FIRSTLOOK_PORT, [files[k % len(files)]], check=False)  # the crash point may cut it short
            if at_point:  # the crash point: objects C-STOREd, rows not yet marked sent
                _wait(lambda: not fl.alive(), 60, 0.05)
            else:         # from outside, as soon as something is being sent
                _wait(lambda: bool(fl.db("SELECT 1 FROM outbox WHERE state='sending'")), 60, 0.002)
                time.sleep(rng.uniform(0.0, 0.02))
            kills.append("crash-point" if not fl.alive() else "external")
            fl.kill()
        fl.start()
        storescu(FIRSTLOOK_PORT, files)  # the rest, and again what a kill may have cut short (duplicates: no-ops)
        report["all_sent"] = _wait(lambda: _all_sent(fl, len(files)), 240)
        report["results"] = [dict(zip(("series_uid", "study_uid", "status", "priority", "validated"), r)) for r in
                             fl.db("SELECT series_uid, study_uid, status, priority, validated FROM results")]
        report["outbox"] = _outbox_rows(fl)
        report["object_files"] = sorted(p.name for p in (fl.data_dir / "outbox").rglob("*.dcm"))
        report["stop_rc"] = fl.stop()
        report["orthanc"] = orthanc.instances()
        report["orthanc_log_stores"] = (work / "orthanc" / "orthanc.log").read_text(errors="replace").count(
            "Received CStore")  # informational
    finally:
        report["kills"] = kills
        report["log_tail"] = fl.log_tail(8000)
        fl.kill()
        orthanc.stop()


def headct_labels(spec: dict[str, Any], work: Path, report: dict[str, Any]) -> None:
    """The real tilted head CT with a synthetic label volume (no BLAST-CT run): the service's
    outbox pieces in this process, the real object builder, Orthanc as the PACS."""
    from app.core.audit import AuditLog
    from app.core.destinations import Destination
    from app.core.models import default_specs
    from app.core.outbox.result_outbox import ResultOutbox
    from app.core.outbox.worker import OutboxWorker
    from app.core.pacs_objects import build_result_objects
    from app.core.store import StudyStore
    from dicom_node.sender import StoreSender
    import pydicom

    from tests.pacs_objects.conftest import blobs, head_result

    orthanc = Orthanc(work / "orthanc").start()
    destination = Destination("orthanc", "ORTHANC", "127.0.0.1", orthanc.dicom_port)
    store = StudyStore(work / "data")
    worker = OutboxWorker(store, [destination], StoreSender("FIRSTLOOK"), AuditLog(store.data_dir), "FIRSTLOOK",
                          retry_s=0.5, retry_max_s=2.0)
    try:
        files = [Path(f) for f in spec["headct"]]
        for f in files:
            store.store_instance(f.read_bytes(), calling_ae="CT01")
        series_uid = str(pydicom.dcmread(files[0], stop_before_pixels=True).SeriesInstanceUID)
        result, _ = head_result(store.data_dir, store.series_files(series_uid), blobs, created_at=time.time())
        outbox = ResultOutbox(store, default_specs(), lambda: [destination], build_result_objects)
        staged = outbox.stage(result)
        assert staged is not None, "no objects staged"
        store.save_result(result, also=staged.record)
        worker.start()
        report["all_sent"] = _wait(lambda: {r["state"] for r in store.outbox.rows()} == {"sent"}, 120)
        report["results"] = [{"series_uid": result.series_uid, "study_uid": result.study_uid, "status": "done"}]
        report["outbox"] = store.outbox.rows()
        report["orthanc"] = orthanc.instances()
        report["log_tail"] = ""
    finally:
        worker.stop()
        store.close()
        orthanc.stop()


def main(argv: list[str]) -> int:
    spec = json.loads(Path(argv[0]).read_text())
    work = Path(spec["workdir"])
    work.mkdir(parents=True, exist_ok=True)
    report: dict[str, Any] = {"mode": spec["mode"]}
    try:
        loopback_up()
        {"peers": peers, "crash": crash, "headct-labels": headct_labels}[spec["mode"]](spec, work, report)
    except Exception:
        report["error"] = traceback.format_exc()
    (work / "REPORT.json").write_text(json.dumps(report, indent=1, default=str))
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
