"""Results reach real PACS peers: Orthanc (REST API checked) and DCMTK storescp, FirstLook
headless in the same private network namespace (``unshare -n``, loopback only).

* chest radiographs (CheXNet, ~20 ms each): Orthanc holds the SR and SC series in the source
  study; storescp (SR only) is down at first, FirstLook records the failure, then it comes up and
  its queue drains; the audit log names what went where with which status.
* SIGKILL while the outbox sends (at the crash point between C-STORE and marking the rows, and
  from outside), restart: every object arrives, by SOP Instance UID, and no result ever produced
  a second, different object.
* the real tilted head CT with a synthetic label volume: SR, SEG and SC in its study (seconds);
  and through BLAST-CT end to end (~6 min on 2 cores, far more under load): marked slow.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest

from tests.support import REPO
from tests.support.crash_harness import chexnet_only_packs
from tests.support.dicom_factory import write_cxr

SR_CLASS = "1.2.840.10008.5.1.4.1.1.88.34"
SEG_CLASS = "1.2.840.10008.5.1.4.1.1.66.4"


def _run(tmp_path: Path, spec: dict[str, Any], timeout: float) -> dict[str, Any]:
    probe = subprocess.run(["unshare", "-n", "true"], capture_output=True, text=True)
    if probe.returncode != 0:
        pytest.fail(f"`unshare -n` is not permitted here ({probe.stderr.strip()}); these tests need a private "
                    "network namespace for Orthanc and storescp")
    spec = {**spec, "workdir": str(tmp_path / "work")}
    path = tmp_path / "spec.json"
    path.write_text(json.dumps(spec))
    # Its own process group: Orthanc, storescp and FirstLook go with it whatever ends the test.
    proc = subprocess.Popen(["unshare", "-n", "--", sys.executable, "-m", "tests.support.outbox_scenario",
                             str(path)], cwd=REPO, start_new_session=True)
    try:
        assert proc.wait(timeout) == 0
    finally:
        try:
            os.killpg(proc.pid, signal.SIGKILL)
        except ProcessLookupError:
            pass
        proc.wait()
    report = json.loads((tmp_path / "work" / "REPORT.json").read_text())
    assert "error" not in report, report["error"] + "\n" + report.get("log_tail", "")
    return report


def _chest_files(cxr_dir: Path, out: Path, n: int) -> list[str]:
    pngs = sorted((cxr_dir / "images").glob("*.png"))[:n]
    return [str(write_cxr(out, png)) for png in pngs]


def test_chest_results_reach_orthanc_and_a_storescp_that_comes_up_late(packs_dir: Path, cxr_dir: Path,
                                                                       tmp_path: Path) -> None:
    chest = _chest_files(cxr_dir, tmp_path / "in", 1)
    report = _run(tmp_path, {"mode": "peers", "packs_dir": str(chexnet_only_packs(packs_dir, tmp_path)),
                             "chest": chest}, timeout=300)
    tail = report["log_tail"]
    assert report["all_sent"], tail
    (result,) = report["results"]
    assert result["status"] == "done"
    assert report["storescp_failed_first"] and "connection refused" in report["failure_seen"][0]["last_error"]
    outbox = report["outbox"]
    objects = {r["sop_uid"]: r for r in outbox}
    assert {r["kind"] for r in outbox} == {"sr", "sc"}
    assert {r["state"] for r in outbox} == {"sent"}
    orthanc = {i["SOPInstanceUID"]: i for i in report["orthanc"]}
    assert set(orthanc) == set(objects)                               # both objects, nothing else
    assert {i["StudyInstanceUID"] for i in orthanc.values()} == {result["study_uid"]}  # in the source study
    by_class = {i["SOPClassUID"]: i for i in orthanc.values()}
    assert SR_CLASS in by_class and len({i["SeriesInstanceUID"] for i in orthanc.values()}) == 2
    assert all("FirstLook" in i["SeriesDescription"] for i in orthanc.values())
    sr_uids = sorted(u for u, r in objects.items() if r["kind"] == "sr")
    assert report["storescp"] == sr_uids                                # SR only, drained after coming up
    (storescp_row,) = [r for r in outbox if r["destination"] == "storescp"]
    assert storescp_row["attempts"] >= 2
    audit = {(r["destination"], o["sop_uid"], o["status"]) for r in report["audit_sent"] for o in r["objects"]}
    assert {(d, s) for d, s, st in audit if st == "0x0000"} == {("orthanc", u) for u in objects} | {
        ("storescp", u) for u in sr_uids}
    assert any(st is None and d == "storescp" for d, _, st in audit)   # the failed attempt is audited too
    assert report["stop_rc"] == 0


def test_sigkill_while_sending_loses_nothing_and_never_makes_a_second_object(packs_dir: Path, cxr_dir: Path,
                                                                             tmp_path: Path) -> None:
    chest = _chest_files(cxr_dir, tmp_path / "in", 4)
    report = _run(tmp_path, {"mode": "crash", "packs_dir": str(chexnet_only_packs(packs_dir, tmp_path)),
                             "chest": chest, "kills": 3}, timeout=600)
    tail = report["log_tail"]
    assert report["all_sent"], tail
    assert len(report["kills"]) == 3 and "crash-point" in report["kills"], report["kills"]
    assert len(report["results"]) == 4 and {r["status"] for r in report["results"]} == {"done"}
    outbox = report["outbox"]
    assert {r["state"] for r in outbox} == {"sent"} and {r["version"] for r in outbox} == {1}
    objects = {r["sop_uid"] for r in outbox}
    per_result = {(r["source_series_uid"], r["kind"]) for r in outbox}
    assert len(per_result) == len(objects) == 8                       # one SR and one SC per result
    assert len(report["object_files"]) == 8                           # no orphan from an interrupted run
    orthanc = [i["SOPInstanceUID"] for i in report["orthanc"]]
    assert sorted(orthanc) == sorted(objects)                         # every object, once, no other UID
    assert any(r["attempts"] >= 2 for r in outbox), "no send was interrupted and repeated"
    assert report["stop_rc"] == 0


def test_tilted_head_ct_sr_seg_and_sc_reach_orthanc_in_its_study(headct_dir: Path, tmp_path: Path) -> None:
    """The real gantry-tilted series with a synthetic label volume (no 6-minute BLAST-CT run): the
    real builder's SR, SEG and SC, queued and sent by the outbox, are in Orthanc in the CT's study."""
    headct = [str(p) for p in sorted(headct_dir.glob("*.dcm"))]
    report = _run(tmp_path, {"mode": "headct-labels", "headct": headct}, timeout=600)
    assert report["all_sent"], report["outbox"]
    (result,) = report["results"]
    kinds = {r["sop_uid"]: r["kind"] for r in report["outbox"]}
    assert sorted(kinds.values()) == ["sc", "seg", "sr"]
    orthanc = {i["SOPInstanceUID"]: i for i in report["orthanc"]}
    assert set(orthanc) == set(kinds)
    assert {i["StudyInstanceUID"] for i in orthanc.values()} == {result["study_uid"]}
    classes = {kinds[u]: i["SOPClassUID"] for u, i in orthanc.items()}
    assert classes["seg"] == SEG_CLASS and classes["sr"] == SR_CLASS
    assert len({i["SeriesInstanceUID"] for i in orthanc.values()}) == 3   # a series per object type


@pytest.mark.slow
@pytest.mark.timeout(2400)
def test_real_head_ct_sr_seg_and_sc_reach_orthanc(packs_dir: Path, headct_dir: Path, cxr_dir: Path,
                                                  tmp_path: Path) -> None:
    """The real tilted head CT through BLAST-CT (about 6 minutes here) and one chest radiograph."""
    chest = _chest_files(cxr_dir, tmp_path / "in", 1)
    headct = [str(p) for p in sorted(headct_dir.glob("*.dcm"))]
    report = _run(tmp_path, {"mode": "peers", "packs_dir": str(packs_dir), "chest": chest, "headct": headct,
                             "analysis_timeout": 1800}, timeout=2300)
    assert report["all_sent"], report["log_tail"]
    results = {r["study_uid"]: r for r in report["results"]}
    assert len(results) == 2 and {r["status"] for r in results.values()} == {"done"}
    by_study: dict[str, set[str]] = {}
    for i in report["orthanc"]:
        by_study.setdefault(i["StudyInstanceUID"], set()).add(i["SOPClassUID"])
    kinds = {r["study_uid"]: set() for r in report["results"]}
    for r in report["outbox"]:
        kinds[r["study_uid"]].add(r["kind"])
    head = next(s for s, k in kinds.items() if "seg" in k)
    assert kinds[head] == {"sr", "seg", "sc"} and SEG_CLASS in by_study[head] and SR_CLASS in by_study[head]
    assert len(by_study[head]) == 3
    chest_study = next(s for s in kinds if s != head)
    assert kinds[chest_study] == {"sr", "sc"} and len(by_study[chest_study]) == 2
