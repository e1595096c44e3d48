"""The same DICOMweb queries against FirstLook and Orthanc's DICOMweb plugin (the reference)
give the same studies, series and instances, with equal values for every attribute both return.

Orthanc binds every address, so the whole comparison runs as one scenario inside a private
network namespace (tests/api/orthanc_scenario.py) that writes a report asserted on here.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path
from typing import Any

from tests.support import REPO
from tests.support.orthanc import in_private_network

# Not compared: where each server says the resource lives, and the character set label (DICOM
# JSON is always UTF-8; Orthanc names its configured default, FirstLook the file's).
NOT_COMPARED = {"00081190", "00080005"}
UID_TAGS = ("0020000D", "0020000E", "00080018")
# What both must return at each level (PS3.18 Table 6.7.1-2, -2a, -2b; required where present).
REQUIRED = {
    "studies": {"00080020", "00080030", "00080050", "00080061", "00100010", "00100020", "0020000D",
                "00201206", "00201208"},
    "series": {"00080060", "0020000E", "00200011", "00201209"},
    "instances": {"00080016", "00080018", "00200013"},
}


def _key(item: dict[str, Any]) -> tuple[str, ...]:
    return tuple(item.get(t, {}).get("Value", [""])[0] for t in UID_TAGS)


def _level(query: str) -> str:
    return "instances" if query.startswith("instances") else "series" if query.startswith("series") else "studies"


def test_firstlook_answers_like_orthanc(tmp_path: Path) -> None:
    report = tmp_path / "report.json"
    env = dict(os.environ, PYTHONPATH=str(REPO))
    done = subprocess.run(in_private_network([sys.executable, str(REPO / "tests" / "api" / "orthanc_scenario.py"),
                                              str(report), str(tmp_path / "work")]),
                          cwd=REPO, env=env, capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stderr[-4000:]
    result = json.loads(report.read_text())
    ours, reference = result["firstlook"], result["orthanc"]
    assert set(ours) == set(reference)
    assert len(ours["studies"]) == 4 and len(ours["series"]) == 4          # the 4 studies sent, nothing else
    assert sum(len(v) for q, v in ours.items() if q.startswith("instances:")) == result["files"]
    compared = 0
    for query, answer in ours.items():
        if query.startswith("metadata:"):
            mine, theirs = answer, reference[query]  # retrieve_instance_metadata: one dataset
            # A binary value may come inline or as a BulkDataURI (PS3.18 F.2.7): the server's choice.
            bulk = {t for t in set(mine) | set(theirs) if "BulkDataURI" in mine.get(t, {}) or "BulkDataURI" in theirs.get(t, {})}
            common = (set(mine) & set(theirs)) - NOT_COMPARED - bulk
            assert len(common) > 20, query
            assert {t: mine[t] for t in common} == {t: theirs[t] for t in common}, query
            assert "BulkDataURI" in mine["7FE00010"]  # Orthanc leaves compressed pixel data out entirely
            compared += len(common)
            continue
        mine_by = {_key(i): i for i in answer}
        theirs_by = {_key(i): i for i in reference[query]}
        assert set(mine_by) == set(theirs_by), f"{query}: different studies/series/instances"
        for key, mine in mine_by.items():
            theirs = theirs_by[key]
            common = (set(mine) & set(theirs)) - NOT_COMPARED
            required = {t for t in REQUIRED[_level(query)] if t in theirs}
            assert required <= common, f"{query}: FirstLook lacks {sorted(required - common)}"
            assert {t: mine[t] for t in common} == {t: theirs[t] for t in common}, query
            compared += len(common)
    assert compared > 500
