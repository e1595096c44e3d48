"""The cluster backend against a real Ray head (tests/cluster/scenario.py, run once per session in a
private network + PID namespace with only loopback): equality with local results, a replica
SIGKILLed mid-study, the cluster stopped mid-study, the cluster coming back, a tampered pack."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest

from tests.support import REPO

pytestmark = pytest.mark.timeout(1800)


def run_scenario(tmp: Path, packs: Path, cxr: Path, cases: str, headct: Path | None = None) -> dict[str, Any]:
    probe = subprocess.run(["unshare", "-n", "-p", "-f", "--mount-proc", "true"], capture_output=True, text=True)
    assert probe.returncode == 0, f"the cluster tests need private namespaces (unshare): {probe.stderr}"
    report = tmp / "report.json"
    cmd = ["unshare", "-n", "-p", "-f", "--mount-proc", sys.executable, "-m", "tests.cluster.scenario",
           "--work", str(tmp / "work"), "--packs", str(packs), "--cxr", str(cxr), "--report", str(report),
           "--cases", cases] + (["--headct", str(headct)] if headct else [])
    proc = subprocess.run(cmd, capture_output=True, text=True, cwd=REPO, timeout=1700,
                          env={**os.environ, "PYTHONPATH": str(REPO)})
    assert report.is_file(), f"scenario wrote no report: {proc.stderr[-3000:]}"
    body = json.loads(report.read_text())
    assert not body["errors"], body["errors"]
    return body


@pytest.fixture(scope="session")
def cluster(tmp_path_factory: pytest.TempPathFactory, packs_dir: Path, cxr_dir: Path) -> dict[str, Any]:
    return run_scenario(tmp_path_factory.mktemp("cluster"), packs_dir, cxr_dir, "equal,kill,lost,tampered")


def by_model(run: dict[str, Any], model: str) -> list[dict[str, Any]]:
    return sorted((r for r in run["results"] if r["model"] == model), key=lambda r: r["source_paths"][0])


def test_serve_models_deploys_both_packs(cluster: dict[str, Any]) -> None:
    assert cluster["deploy"]["rc"] == 0, cluster["deploy"]
    assert "chexnet: serving" in cluster["deploy"]["stdout"] and "blast-ct: serving" in cluster["deploy"]["stdout"]


def test_cluster_results_equal_local_and_say_where_they_ran(cluster: dict[str, Any]) -> None:
    local, remote = cluster["local"], cluster["cluster"]
    films_l, films_r = by_model(local, "chexnet"), by_model(remote, "chexnet")
    assert len(films_l) == len(films_r) == 3
    for a, b in zip(films_l, films_r):
        pa, pb = a["findings"]["probabilities"], b["findings"]["probabilities"]
        assert max(abs(pa[k] - pb[k]) for k in pa) <= 1e-4
        assert a["priority"] == b["priority"] and "ran_on" not in a["findings"]
        ran = b["findings"]["ran_on"]
        assert ran["backend"] == "ray" and ran["node"] == "127.0.0.1" and ran["replica"].startswith("chexnet#")
        assert "on cluster node 127.0.0.1" in b["device"] and b["device_note"] is None
    (head_l,), (head_r,) = by_model(local, "blast-ct"), by_model(remote, "blast-ct")
    assert cluster["cluster_labels"] == cluster["local_labels"]  # label volumes byte-identical
    assert next(iter(cluster["local_labels"].values()))["voxels"] > 0  # the phantom has findings to compare
    assert head_r["findings"]["volumes_ml"] == head_l["findings"]["volumes_ml"]
    ran = head_r["findings"]["ran_on"]
    assert ran["backend"] == "ray" and ran["nodes"] == ["127.0.0.1"]
    # Fanned out over the replicas (Serve may replace one that misses its health checks on a loaded
    # machine; its items are retried, so more than the two deployed can appear).
    assert len(ran["replicas"]) >= 2 and sum(ran["replicas"].values()) == ran["items"]


def test_a_replica_killed_mid_study_still_gives_the_identical_result(cluster: dict[str, Any]) -> None:
    kill = cluster["kill"]
    assert kill["killed"], "no worker replica was killed"
    (head,) = by_model(kill["run"], "blast-ct")
    ran = head["findings"]["ran_on"]
    assert head["status"] == "done" and ran["backend"] == "ray" and ran["retries"] >= 1
    assert kill["labels"] == cluster["local_labels"]
    assert len(kill["run"]["results"]) == 1  # one result per series, nothing duplicated


def test_the_cluster_stopped_mid_study_falls_back_to_local_with_a_note(cluster: dict[str, Any]) -> None:
    lost = cluster["lost"]
    assert lost["action"] == ["stopped"]
    (head,) = by_model(lost["run"], "blast-ct")
    assert head["status"] == "done"
    assert head["device_note"].startswith("cluster not used (") and head["device_note"].endswith("ran locally")
    assert head["findings"]["ran_on"]["backend"] == "local"
    assert lost["labels"] == cluster["local_labels"]
    status = {m["name"]: m for m in lost["run"]["models"]}["blast-ct"]
    assert status["state"] == "ready" and "cluster unavailable" in status["message"]


def test_the_cluster_back_is_used_for_the_next_study(cluster: dict[str, Any]) -> None:
    (film,) = by_model(cluster["back"]["run"], "chexnet")
    assert film["findings"]["ran_on"]["backend"] == "ray" and film["device_note"] is None


def test_a_tampered_pack_is_refused_on_the_cluster_while_local_works(cluster: dict[str, Any]) -> None:
    tampered = cluster["tampered"]
    assert tampered["deploy_rc"] == 1
    assert "chexnet: REFUSED on the cluster" in tampered["deploy"] and "SHA-256" in tampered["deploy"]
    (film,) = by_model(tampered["run"], "chexnet")
    (local,) = by_model(tampered["local"], "chexnet")
    assert film["status"] == "done" and film["findings"]["ran_on"]["backend"] == "local"
    assert "cluster not used" in film["device_note"]
    assert film["findings"]["probabilities"] == local["findings"]["probabilities"]


@pytest.mark.slow  # ~7 min: the whole ensemble on the real series, on 2 replicas
def test_the_real_head_ct_through_the_cluster_equals_local(tmp_path: Path, packs_dir: Path, cxr_dir: Path,
                                                           headct_dir: Path) -> None:
    """The full 12-member ensemble on the real series through ``firstlook analyze --backend ray``:
    its labels are byte for byte those the local runtime gave on this series when the pack was
    built on this machine (the builder records them; ``--cases real-local`` runs local again)."""
    body = run_scenario(tmp_path, packs_dir, cxr_dir, "real", headct_dir)
    real = body["real"]
    recorded = real["pack_labels"]
    assert recorded, "the BLAST-CT pack records no runtime labels: it was built by older code (make models)"
    ((series, labels),) = real["cluster_labels"].items()
    assert (labels["sha"], labels["shape"], labels["voxels"]) == (
        recorded["sha256"], recorded["shape"], recorded["labelled_voxels"])
    (head,) = by_model(real["cluster"], "blast-ct")
    assert head["status"] == "done" and head["series_uid"] == series
    ran = head["findings"]["ran_on"]
    assert ran["backend"] == "ray" and ran["items"] == 12 * 27 and not head["device_note"]
