"""The cluster scenario: run INSIDE a private network and PID namespace (``unshare -n -p -f --mount-proc``).

Starts a real Ray head on 127.0.0.1 (loopback only, usage stats off, a private temp dir), deploys
the packs with ``firstlook serve-models``, runs ``firstlook analyze`` locally and through the cluster,
kills a BLAST-CT replica mid-study, stops the cluster mid-study, restarts it, deploys a tampered
pack, and writes everything it saw to a JSON report that tests/cluster/test_cluster.py asserts on.
``ray stop --force`` only sees this namespace's processes, so it never touches anyone else's Ray.

    python -m tests.cluster.scenario --work DIR --packs PACKS --report OUT.json [--cases ...]
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import signal
import subprocess
import sys
import tempfile
import threading
import time
import traceback
from pathlib import Path
from typing import Any, Callable

ROOT = Path(__file__).resolve().parents[2]
PY = sys.executable
RAY = str(Path(PY).with_name("ray"))
ADDRESS = "127.0.0.1:6379"
WORKER = "ServeReplica:blast-ct:blast-ct-worker"


def env() -> dict[str, str]:
    out = dict(os.environ)
    # RAY_memory_monitor_refresh_ms=0: Ray's memory monitor kills its own workers when the whole
    # machine is >95 % full, whoever uses the memory; on a shared CI machine that is other jobs.
    out.update(PYTHONPATH=str(ROOT), RAY_USAGE_STATS_ENABLED="0", NO_PROXY="*", no_proxy="*",
               RAY_SERVE_LOG_TO_STDERR="0", RAY_memory_monitor_refresh_ms="0")
    for key in ("http_proxy", "https_proxy", "HTTP_PROXY", "HTTPS_PROXY"):
        out.pop(key, None)
    return out


def sh(cmd: list[str], timeout: float = 600, check: bool = True) -> subprocess.CompletedProcess[str]:
    proc = subprocess.run(cmd, capture_output=True, text=True, timeout=timeout, env=env(), cwd=ROOT)
    if check and proc.returncode != 0:
        raise RuntimeError(f"{' '.join(cmd[:4])}... exited {proc.returncode}: {proc.stderr[-2000:]}")
    return proc


def ray_start(temp: Path) -> float:
    t0 = time.monotonic()
    sh([RAY, "start", "--head", "--node-ip-address=127.0.0.1", "--port=6379", "--include-dashboard=false",
        "--num-cpus=2", "--disable-usage-stats", f"--temp-dir={temp}"], timeout=120)
    return time.monotonic() - t0


def ray_stop() -> None:
    sh([RAY, "stop", "--force"], timeout=120, check=False)


def firstlook(config: Path, *args: str, timeout: float = 1200) -> subprocess.CompletedProcess[str]:
    return sh([PY, "-m", "app", "--config", str(config), *args], timeout=timeout, check=False)


def analyze(config: Path, packs: Path, files: list[Path], backend: str, scratch: Path) -> dict[str, Any]:
    proc = firstlook(config, "analyze", *map(str, files), "--json", "--packs-dir", str(packs),
                     "--backend", backend, "--ray-address", ADDRESS)
    if proc.returncode not in (0, 1) or not proc.stdout.strip().startswith("{"):
        raise RuntimeError(f"analyze ({backend}) exited {proc.returncode}: {proc.stderr[-3000:]}")
    body = json.loads(proc.stdout)
    return {"results": [summarise(r) for r in body["results"]], "models": body["models"],
            "data_dir": body["data_dir"]}


def summarise(result: dict[str, Any]) -> dict[str, Any]:
    """What the tests compare: findings, where it ran, and the label volume's bytes (as a list)."""
    out = {k: result.get(k) for k in ("series_uid", "status", "reason", "model", "device", "device_note",
                                       "priority", "findings", "overlay_path")}
    out["source_paths"] = result.get("source_paths")
    return out


def labels_of(run: dict[str, Any]) -> dict[str, Any]:
    """series -> label volume (blast-ct) as nested lists of ints, or the 7x7 CAMs (chexnet)."""
    import numpy as np

    out: dict[str, Any] = {}
    data_dir = Path(run["data_dir"])
    for r in run["results"]:
        if r["model"] == "blast-ct" and r["overlay_path"]:
            with np.load(data_dir / r["overlay_path"]) as z:
                labels = z["labels"]
                out[r["series_uid"]] = {"shape": list(labels.shape), "sha": __import__("hashlib").sha256(
                    labels.tobytes()).hexdigest(), "voxels": int((labels > 0).sum())}
    return out


def replica_pids(name: str) -> list[int]:
    pids = []
    for entry in Path("/proc").iterdir():
        if entry.name.isdigit():
            try:
                cmd = (entry / "cmdline").read_bytes().decode(errors="replace")
            except OSError:
                continue
            if name in cmd:
                pids.append(int(entry.name))
    return pids


def cpu_seconds(pid: int) -> float:
    try:
        fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
        return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")
    except (OSError, IndexError, ValueError):
        return 0.0


def when_workers_busy(action: Callable[[], Any], seconds: float = 1.5, limit: float = 300) -> threading.Thread:
    """Run ``action`` once a BLAST-CT worker replica has used ``seconds`` of CPU beyond its idle level."""
    def watch() -> None:
        base = {pid: cpu_seconds(pid) for pid in replica_pids(WORKER)}
        end = time.monotonic() + limit
        while time.monotonic() < end:
            for pid in replica_pids(WORKER):
                if cpu_seconds(pid) - base.get(pid, 0.0) > seconds:
                    action_result.append(action())
                    return
            time.sleep(0.1)
        action_result.append("never busy")

    action_result: list[Any] = []
    thread = threading.Thread(target=watch, daemon=True)
    thread.action_result = action_result  # type: ignore[attr-defined]
    thread.start()
    return thread


def write_config(path: Path, work: Path, packs: Path) -> Path:
    path.write_text(f"""
data_dir = "{work / 'data'}"
cache_dir = "{work / 'cache'}"
packs_dir = "{packs}"
log_level = "WARNING"
ray_address = "{ADDRESS}"
cluster_call_deadline_s = 120.0
cluster_study_deadline_s = 900.0
[cluster_replicas]
chexnet = 1
blast-ct = 2
[cluster_cpus]
chexnet = 0.5
blast-ct = 0.5
""")
    return path


def make_inputs(work: Path, cxr_dir: Path) -> dict[str, list[Path]]:
    sys.path.insert(0, str(ROOT))
    from app.core.synthetic_dicom import synthetic_head_ct
    from tests.support.dicom_factory import write_cxr

    films = [write_cxr(work / "cxr" / png.stem, png) for png in sorted((cxr_dir / "images").glob("*.png"))[:3]]
    head = synthetic_head_ct(work / "head", n_slices=24, size=64)  # 2 tiles: 24 work items
    return {"films": films, "head": head}


def main() -> int:
    ap = argparse.ArgumentParser()
    ap.add_argument("--work", type=Path, required=True)
    ap.add_argument("--packs", type=Path, required=True)
    ap.add_argument("--cxr", type=Path, required=True)
    ap.add_argument("--report", type=Path, required=True)
    ap.add_argument("--cases", default="equal,kill,lost,tampered")
    ap.add_argument("--headct", type=Path, help="the real head-CT series (case 'real')")
    args = ap.parse_args()
    cases = set(args.cases.split(","))
    subprocess.run(["ip", "link", "set", "lo", "up"], check=True)
    work = args.work
    work.mkdir(parents=True, exist_ok=True)
    temp = Path(tempfile.mkdtemp(prefix="flray-", dir="/tmp"))  # short: Ray's socket paths have a length limit
    config = write_config(work / "firstlook.toml", work, args.packs)
    report: dict[str, Any] = {"cases": sorted(cases), "errors": []}

    def save() -> None:
        args.report.write_text(json.dumps(report, indent=1, default=str))

    try:
        inputs = make_inputs(work, args.cxr)
        report["ray_start_s"] = ray_start(temp)
        t0 = time.monotonic()
        deploy = firstlook(config, "serve-models", "--ray-address", ADDRESS)
        report["deploy"] = {"rc": deploy.returncode, "stdout": deploy.stdout, "stderr": deploy.stderr[-3000:],
                            "seconds": time.monotonic() - t0}
        save()
        everything = inputs["films"] + inputs["head"]
        if cases & {"equal", "kill", "lost"}:
            report["local"] = analyze(config, args.packs, everything, "local", work)
            report["local_labels"] = labels_of(report["local"])
            save()
        if "equal" in cases:
            report["cluster"] = analyze(config, args.packs, everything, "ray", work)
            report["cluster_labels"] = labels_of(report["cluster"])
            save()
        if "kill" in cases:
            killed: list[int] = []

            def kill_one() -> int:
                pid = replica_pids(WORKER)[0]
                os.kill(pid, signal.SIGKILL)
                killed.append(pid)
                return pid

            watcher = when_workers_busy(kill_one)
            run = analyze(config, args.packs, inputs["head"], "ray", work)
            watcher.join(5)
            report["kill"] = {"killed": killed, "run": run, "labels": labels_of(run)}
            save()
        if "lost" in cases:
            watcher = when_workers_busy(lambda: (ray_stop(), "stopped")[1])
            run = analyze(config, args.packs, inputs["head"], "ray", work)
            watcher.join(60)
            report["lost"] = {"action": getattr(watcher, "action_result", []), "run": run, "labels": labels_of(run)}
            save()
            # The cluster comes back: the next study uses it again.
            ray_start(temp)
            back = firstlook(config, "serve-models", "--ray-address", ADDRESS, "--only", "chexnet")
            report["back"] = {"deploy": back.stdout + back.stderr[-2000:],
                              "run": analyze(config, args.packs, inputs["films"][:1], "ray", work)}
            save()
        if cases & {"real", "real-local"}:  # the real series end to end through the cluster, all 12 members
            files = sorted(args.headct.glob("*.dcm"))
            cluster = analyze(config, args.packs, files, "ray", work)
            manifest = json.loads((args.packs / "blast-ct" / "manifest.json").read_text())
            # The local runtime's labels on this series, recorded when the pack was built on this
            # machine (inference/pack_builder/blastct_build.py); "real-local" also runs it again here.
            report["real"] = {"cluster": cluster, "cluster_labels": labels_of(cluster),
                              "pack_labels": manifest.get("fidelity", {}).get("runtime_labels")}
            if "real-local" in cases:
                local = analyze(config, args.packs, files, "local", work)
                report["real"].update(local=local, local_labels=labels_of(local))
            save()
        if "tampered" in cases:
            tampered = work / "tampered-packs"
            shutil.copytree(args.packs / "chexnet", tampered / "chexnet")
            victim = next(p for p in sorted((tampered / "chexnet").rglob("*.bin")))
            data = bytearray(victim.read_bytes())
            data[len(data) // 2] ^= 0xFF
            victim.write_bytes(bytes(data))
            proc = firstlook(config, "serve-models", "--ray-address", ADDRESS, "--packs-dir", str(tampered),
                             "--only", "chexnet")
            report["tampered"] = {"deploy_rc": proc.returncode, "deploy": proc.stdout + proc.stderr[-3000:],
                                  "run": analyze(config, args.packs, inputs["films"][:1], "ray", work),
                                  "local": analyze(config, args.packs, inputs["films"][:1], "local", work)}
            save()
    except Exception:
        report["errors"].append(traceback.format_exc())
    finally:
        ray_stop()
        shutil.copytree(temp / "session_latest" / "logs", work / "ray-logs", dirs_exist_ok=True,
                        ignore_dangling_symlinks=True) if (temp / "session_latest").exists() else None
        shutil.rmtree(temp, ignore_errors=True)
        save()
    return 0


if __name__ == "__main__":
    sys.exit(main())
