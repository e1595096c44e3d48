"""Cluster backend vs local (docs/cluster.md), on this machine, side by side in one run.

Re-executes itself inside a private network + PID namespace (loopback only; ``ray stop`` there
sees only this run's processes), starts a Ray head on 127.0.0.1 and measures:

1. CheXNet per-request latency at batch 1 (one request after another): the local runtime vs the
   cluster path (HTTP to Serve, replica, reply), p50/p95.
2. A burst of 200 radiographs sent at once (32 client threads): throughput with ``serve.batch``
   on vs off (``serve-models --no-batching``).
3. Head CT (the real series; ``--members`` ensemble members, 12 = the full ensemble): local wall
   time vs the cluster with 1 and 2 BLAST-CT worker replicas; time per work item, bytes moved,
   and the projection for N two-core nodes:

       T(N) = T_fixed + ceil(items / N) * t_item + bytes_back / B        (one worker replica per node)

   where t_item = the mean time per item on the single replica (one replica owns this machine's
   2 cores, as on a 2-core node; with 2 replicas here they share the cores), T_fixed = the
   1-replica wall time - items * t_item (upload, plan, coordinator, post-processing), bytes_back =
   items * the mean item reply (what crosses the network to the coordinator; here it is Ray's
   shared memory) and B = 1 Gbit/s (117 MB/s), a site's plain Ethernet. The volume itself
   (N copies) is added the same way. A projection, not a measurement.

    python bench/bench_cluster.py [--members 2] [--films 200] [--skip-headct]
"""

from __future__ import annotations

import argparse
import json
import math
import os
import statistics
import subprocess
import sys
import tempfile
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from tests.cluster.scenario import ADDRESS, firstlook, ray_start, ray_stop  # noqa: E402

PACKS = Path(os.environ.get("FIRSTLOOK_PACKS", ROOT / "build" / "model-packs"))
SHARED = ROOT.parent / "shared" if (ROOT.parent / "shared").is_dir() else Path("/work/shared")


def pct(values: list[float], q: float) -> float:
    values = sorted(values)
    return values[min(len(values) - 1, int(round(q * (len(values) - 1))))]


def config_file(work: Path, replicas: int, cpus: float) -> Path:
    path = work / f"firstlook-{replicas}.toml"
    path.write_text(f"""
data_dir = "{work / 'data'}"
cache_dir = "{work / 'cache'}"
packs_dir = "{PACKS}"
log_level = "WARNING"
inference_backend = "ray"
ray_address = "{ADDRESS}"
cluster_call_deadline_s = 600.0
cluster_study_deadline_s = 3600.0
[cluster_replicas]
chexnet = 1
blast-ct = {replicas}
[cluster_cpus]
chexnet = 0.5
blast-ct = {cpus}
""")
    return path


def deploy(config: Path, *extra: str) -> None:
    proc = firstlook(config, "serve-models", "--ray-address", ADDRESS, *extra)
    if proc.returncode != 0:
        raise RuntimeError(proc.stdout + proc.stderr[-2000:])


def bench_chexnet(work: Path, films: int) -> dict[str, float]:
    from app.cluster.client import ClusterClient, serve_url
    from inference.chexnet import Chexnet
    from inference.cxr_input import load_cxr
    from inference.packs import load_pack
    from tests.support.dicom_factory import write_cxr

    png = sorted((SHARED / "data" / "cxr" / "images").glob("*.png"))[0]
    image = load_cxr(write_cxr(work / "cxr", png))
    local = Chexnet(load_pack(PACKS / "chexnet"))
    tensor = local.preprocess(image)
    client = ClusterClient(serve_url(ADDRESS, 8000), 600, 600)
    out: dict[str, float] = {}
    for name, call in (("local", lambda: local.analyse(image, full_cam=False)),
                       ("cluster", lambda: client.chexnet(local.preprocess(image)))):
        for _ in range(5):
            call()
        times = []
        for _ in range(40):
            t0 = time.perf_counter()
            call()
            times.append(time.perf_counter() - t0)
        out[f"{name}_p50_ms"] = 1000 * statistics.median(times)
        out[f"{name}_p95_ms"] = 1000 * pct(times, 0.95)
    reply = client.chexnet(tensor)
    out["transfer_kb_per_film"] = reply.transfer_bytes / 1024

    def burst() -> tuple[float, float]:
        with ThreadPoolExecutor(32) as pool:
            list(pool.map(lambda _: client.chexnet(tensor), range(8)))  # warm
            t0 = time.perf_counter()
            replies = list(pool.map(lambda _: client.chexnet(tensor), range(films)))
            took = time.perf_counter() - t0
        return films / took, statistics.mean(r.meta.get("batch", 1) for r in replies)

    out["burst_films_per_s_batching"], out["burst_mean_batch"] = burst()
    return out


def bench_burst_unbatched(config: Path, work: Path, films: int) -> float:
    from app.cluster.client import ClusterClient, serve_url
    from inference.chexnet import Chexnet
    from inference.cxr_input import load_cxr
    from inference.packs import load_pack
    from tests.support.dicom_factory import write_cxr

    deploy(config, "--only", "chexnet", "--no-batching")
    png = sorted((SHARED / "data" / "cxr" / "images").glob("*.png"))[0]
    tensor = Chexnet(load_pack(PACKS / "chexnet"), warmup=False).preprocess(load_cxr(write_cxr(work / "cxr2", png)))
    client = ClusterClient(serve_url(ADDRESS, 8000), 600, 600)
    with ThreadPoolExecutor(32) as pool:
        list(pool.map(lambda _: client.chexnet(tensor), range(8)))
        t0 = time.perf_counter()
        list(pool.map(lambda _: client.chexnet(tensor), range(films)))
        return films / (time.perf_counter() - t0)


def bench_headct(work: Path, members: int) -> dict[str, object]:
    from app.cluster.client import ClusterClient, serve_url
    from app.cluster.runtimes import RemoteBlastCt
    from inference.blastct import BlastCt
    from inference.ct_volume import load_ct_series
    from inference.packs import load_pack

    files = sorted((SHARED / "data" / "headct" / "dcm_qa_ct_GE_HiSpeed_head" / "dicom").glob("*.dcm"))
    volume = load_ct_series(files)
    local = BlastCt(load_pack(PACKS / "blast-ct"), members=members)
    t0 = time.perf_counter()
    reference = local.analyse(volume)
    results: dict[str, object] = {"members": members, "local_s": time.perf_counter() - t0,
                                  "tiles": reference.tiles_run + reference.tiles_constant}
    for replicas in (1, 2):
        # 2 CPUs in all: chexnet 0.5 + coordinator 0.1 + the workers 1.4 (a replica that does not
        # fit would never start and serve.run would wait for it forever).
        config = config_file(work, replicas, round(1.4 / replicas, 2))
        # Remove the previous deployment first: a rolling update keeps the old replicas until the
        # new ones run, and on 2 CPUs the new ones would never fit (serve.run then waits forever).
        firstlook(config, "serve-models", "--ray-address", ADDRESS, "--only", "blast-ct", "--shutdown")
        deploy(config, "--only", "blast-ct")
        remote = RemoteBlastCt(local, ClusterClient(serve_url(ADDRESS, 8000), 600, 3600), lambda _m: None)
        t0 = time.perf_counter()
        out = remote.analyse(volume)
        wall = time.perf_counter() - t0
        ran = getattr(out, "ran_on", {})
        items = int(ran.get("items") or 0)
        t_item = float(ran.get("item_s_mean") or 0.0)
        results[f"cluster_{replicas}_s"] = wall
        results[f"cluster_{replicas}_items"] = items
        results[f"cluster_{replicas}_item_s"] = t_item
        results[f"cluster_{replicas}_item_mb"] = ran.get("item_mb_mean")
        results[f"cluster_{replicas}_sampled"] = ran.get("sampled")
        results[f"cluster_{replicas}_transfer_mb"] = out.timings.get("transfer_mb")
        results[f"cluster_{replicas}_labels_equal"] = bool((out.labels == reference.labels).all())
        results[f"cluster_{replicas}_backend"] = ran.get("backend")
        print(json.dumps(results), file=sys.stderr, flush=True)
    items, t_item = int(results["cluster_1_items"]), float(results["cluster_1_item_s"])  # type: ignore[arg-type]
    fixed = max(0.0, float(results["cluster_1_s"]) - items * t_item)  # type: ignore[arg-type]
    item_mb = float(results.get("cluster_1_item_mb") or 0.0)  # type: ignore[arg-type]
    volume_mb = float(results.get("cluster_1_transfer_mb") or 0.0)  # type: ignore[arg-type]
    bandwidth_mb_s = 117.0  # 1 Gbit/s Ethernet
    results.update(fixed_s=fixed, item_mb=item_mb, bandwidth_mb_s=bandwidth_mb_s)
    for n in (4, 16):
        for label, count in (("this_members", items), ("12_members", items * 12 // members)):
            network = (count * item_mb + n * volume_mb) / bandwidth_mb_s
            results[f"projected_{n}_nodes_s_{label}"] = fixed + math.ceil(count / n) * t_item + network
            results[f"projected_{n}_nodes_network_s_{label}"] = network
    return results


def inside(args: argparse.Namespace) -> int:
    subprocess.run(["ip", "link", "set", "lo", "up"], check=True)
    work = Path(tempfile.mkdtemp(prefix="bench-cluster-"))
    temp = Path(tempfile.mkdtemp(prefix="flbench-", dir="/tmp"))
    report: dict[str, object] = {}
    try:
        ray_start(temp)
        config = config_file(work, 2, 0.7)
        if not args.skip_headct:
            report["headct"] = bench_headct(work, args.members)
            print(json.dumps(report), file=sys.stderr, flush=True)
        deploy(config, "--only", "chexnet")
        report["chexnet"] = bench_chexnet(work, args.films)
        print(json.dumps(report), file=sys.stderr, flush=True)
        report["chexnet"]["burst_films_per_s_no_batching"] = bench_burst_unbatched(config, work, args.films)  # type: ignore[index]
    finally:
        ray_stop()
    print(json.dumps(report, indent=1))
    return 0


def main() -> int:
    ap = argparse.ArgumentParser()
    ap.add_argument("--members", type=int, default=2, help="BLAST-CT members (12: the whole ensemble)")
    ap.add_argument("--films", type=int, default=200)
    ap.add_argument("--skip-headct", action="store_true")
    ap.add_argument("--inside", action="store_true", help=argparse.SUPPRESS)
    args = ap.parse_args()
    if args.inside:
        return inside(args)
    cmd = ["unshare", "-n", "-p", "-f", "--mount-proc", sys.executable, __file__, "--inside",
           "--members", str(args.members), "--films", str(args.films)] + (["--skip-headct"] if args.skip_headct else [])
    env = {**os.environ, "PYTHONPATH": str(ROOT), "RAY_USAGE_STATS_ENABLED": "0"}
    return subprocess.run(cmd, env=env).returncode


if __name__ == "__main__":
    sys.exit(main())
