"""Load: 16 simultaneous associations x 200 instances into ``firstlook --headless``.

    python3 bench/bench_load.py [--associations 16] [--instances 200] [--size 128] [--earlier 24]

* FirstLook runs as a subprocess (scratch data dir, CheXNet pack only, ``--max-associations``
  = associations + 4 so the C-ECHO probe is not refused by the limit under test).
* ``--earlier`` chest radiographs are sent first; their analysis is still running when the
  load starts, and the results table is polled to show analysis keeps going during the load.
* Each association is its own process (pynetdicom SCU, files streamed as stored, so the
  senders spend little CPU); all associate, wait at a barrier, then send ``--instances``
  CT slices each. The C-STORE response time (request sent -> response received) of every
  instance is recorded.
* A probe opens an association, sends C-ECHO and releases, every 0.25 s for the whole load;
  its latency (association + echo + release) must stay below 1 s.
* Peak memory is the node process's VmHWM from /proc.
"""

from __future__ import annotations

import argparse
import multiprocessing as mp
import os
import sqlite3
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path

import numpy as np
from pydicom.uid import generate_uid

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO))

from tests.support import free_port  # noqa: E402
from tests.support.crash_harness import chexnet_only_packs  # noqa: E402
from tests.support.dicom_factory import make_ct_slice, make_cxr_dataset, write  # noqa: E402


def _proc_kib(pid: int, field: str) -> int:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith(field + ":"):
            return int(line.split()[1])
    return 0


def _sender(idx: int, files: list[str], port: int, barrier: "mp.synchronize.Barrier", out: "mp.Queue") -> None:
    from pynetdicom import AE
    from pynetdicom import _config as pynetdicom_config
    from pydicom.uid import CTImageStorage, ExplicitVRLittleEndian

    pynetdicom_config.STORE_SEND_CHUNKED_DATASET = True  # stream the file as stored: no re-encoding
    ae = AE(ae_title=f"LOAD{idx:02d}")
    ae.acse_timeout = ae.dimse_timeout = ae.network_timeout = 120
    ae.add_requested_context(CTImageStorage, ExplicitVRLittleEndian)
    assoc = ae.associate("127.0.0.1", port, ae_title="FIRSTLOOK")
    times: list[float] = []
    statuses: list[int] = []
    try:
        barrier.wait(120)
        if not assoc.is_established:
            out.put((idx, [], [-1] * len(files)))
            return
        for path in files:
            t0 = time.perf_counter()
            rsp = assoc.send_c_store(Path(path))
            times.append(time.perf_counter() - t0)
            status = getattr(rsp, "Status", None)
            statuses.append(int(status) if status is not None else -2)
        assoc.release()
    finally:
        out.put((idx, times, statuses))


def _echo_probe(port: int, stop: threading.Event, latencies: list[float], failures: list[str]) -> None:
    """What a monitoring system does: a new association, C-ECHO, release, every 0.25 s."""
    from dicom_node.scu import echo

    while not stop.is_set():
        t0 = time.perf_counter()
        status = echo("127.0.0.1", port, "FIRSTLOOK", calling_ae="PROBE", timeout=10)
        latencies.append(time.perf_counter() - t0)
        if status != 0:
            failures.append(f"status {status}")
        stop.wait(0.25)


def _echo_open(port: int, stop: threading.Event, latencies: list[float], failures: list[str]) -> None:
    """C-ECHO alone (the DIMSE round trip) on one association opened before the load."""
    from pynetdicom import AE
    from pynetdicom.sop_class import Verification

    ae = AE(ae_title="PROBE2")
    ae.acse_timeout = ae.dimse_timeout = ae.network_timeout = 30
    ae.add_requested_context(Verification)
    assoc = ae.associate("127.0.0.1", port, ae_title="FIRSTLOOK")
    if not assoc.is_established:
        failures.append("association refused")
        return
    try:
        while not stop.is_set():
            t0 = time.perf_counter()
            rsp = assoc.send_c_echo()
            latencies.append(time.perf_counter() - t0)
            if getattr(rsp, "Status", None) != 0:
                failures.append(f"echo status {getattr(rsp, 'Status', None)}")
            stop.wait(0.25)
    finally:
        assoc.release()


def _results(db: Path) -> int:
    try:
        conn = sqlite3.connect(f"file:{db}?mode=ro", uri=True, timeout=2)
        try:
            return int(conn.execute("SELECT count(*) FROM results").fetchone()[0])
        finally:
            conn.close()
    except sqlite3.Error:
        return -1


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--associations", type=int, default=16)
    ap.add_argument("--instances", type=int, default=200)
    ap.add_argument("--size", type=int, default=128, help="CT matrix (128: 32 KiB slices)")
    ap.add_argument("--earlier", type=int, default=24, help="radiographs sent before the load")
    ap.add_argument("--shared", type=Path, default=REPO.parent / "shared")
    ap.add_argument("--workdir", type=Path)
    args = ap.parse_args()
    with tempfile.TemporaryDirectory(prefix="firstlook-load-", dir=args.workdir) as tmp:
        work = Path(tmp)
        port = free_port()
        print(f"generating {args.associations} x {args.instances} slices of {args.size}x{args.size} ...", flush=True)
        rng = np.random.default_rng(0)
        plan: list[list[str]] = []
        for a in range(args.associations):
            files = []
            study, series = generate_uid(), generate_uid()  # one series per association
            for i in range(args.instances):
                pixels = rng.integers(-1000, 1000, (args.size, args.size)).astype(np.int16)
                ds = make_ct_slice(pixels, (0.0, 0.0, 2.0 * i), instance=i + 1, patient_id=f"LOAD{a}",
                                   study_uid=study, series_uid=series)
                files.append(str(write(ds, work / "send" / f"a{a}")))
            plan.append(files)
        pngs = sorted((args.shared / "data" / "cxr" / "images").glob("*.png"))
        earlier = [write(make_cxr_dataset(pngs[i % len(pngs)]), work / "earlier") for i in range(args.earlier)]
        packs = chexnet_only_packs(REPO / "build" / "model-packs", work)
        log_path = work / "firstlook.log"
        cmd = [sys.executable, "-m", "app", "--config", str(work / "none.toml"), "--headless",
               "--data-dir", str(work / "data"), "--cache-dir", str(work / "cache"),
               "--packs-dir", str(packs or work / "no-packs"), "--port", str(port), "--api-port", str(free_port()), "--min-free-mb", "0",
               "--max-associations", str(args.associations + 4), "--quiet-period", "2"]  # + the 2 probes
        node = subprocess.Popen(cmd, cwd=REPO, stdout=open(log_path, "wb"), stderr=subprocess.STDOUT)
        try:
            from dicom_node.scu import echo, send_files

            end = time.monotonic() + 60
            while echo("127.0.0.1", port, "FIRSTLOOK", timeout=2) != 0:
                if time.monotonic() > end or node.poll() is not None:
                    print(log_path.read_text()[-3000:])
                    return 1
                time.sleep(0.2)
            end = time.monotonic() + 180  # models loaded, so the earlier radiographs are analysed during the load
            while packs and "model chexnet" not in log_path.read_text(errors="replace") and time.monotonic() < end:
                time.sleep(0.2)
            db = work / "data" / "index.sqlite3"
            if earlier:
                statuses = send_files("127.0.0.1", port, "FIRSTLOOK", earlier, calling_ae="EARLIER")
                assert statuses == [0] * len(earlier), statuses
            results_before = _results(db)
            print(f"{len(earlier)} earlier radiographs stored; {results_before} analysed before the load", flush=True)

            ctx = mp.get_context("fork")
            barrier = ctx.Barrier(args.associations)
            out: mp.Queue = ctx.Queue()
            stop = threading.Event()
            latencies: list[float] = []
            failures: list[str] = []
            rss_samples: list[int] = []
            results_timeline: list[tuple[float, int]] = []
            procs = [ctx.Process(target=_sender, args=(i, plan[i], port, barrier, out)) for i in range(args.associations)]
            t_start = time.perf_counter()
            for p in procs:
                p.start()
            open_latencies: list[float] = []
            probes = [threading.Thread(target=_echo_probe, args=(port, stop, latencies, failures), daemon=True),
                      threading.Thread(target=_echo_open, args=(port, stop, open_latencies, failures), daemon=True)]
            for probe in probes:
                probe.start()
            collected = []
            while len(collected) < args.associations:
                try:
                    collected.append(out.get(timeout=0.5))
                except Exception:
                    pass
                rss_samples.append(_proc_kib(node.pid, "VmRSS"))
                results_timeline.append((time.perf_counter() - t_start, _results(db)))
                if all(not p.is_alive() for p in procs) and out.empty() and len(collected) < args.associations:
                    break
            load_s = time.perf_counter() - t_start
            stop.set()
            for probe in probes:
                probe.join(15)
            for p in procs:
                p.join(30)
            results_after = _results(db)
            times = sorted(t for _, ts, _ in collected for t in ts)
            statuses = [s for _, _, ss in collected for s in ss]
            ok = sum(1 for s in statuses if s == 0)
            conn = sqlite3.connect(f"file:{db}?mode=ro", uri=True)
            stored = conn.execute("SELECT count(*) FROM instances WHERE calling_ae LIKE 'LOAD%'").fetchone()[0]
            conn.close()
            peak_kib = _proc_kib(node.pid, "VmHWM")

            def pct(values: list[float], q: float) -> float:
                return values[min(len(values) - 1, int(q * len(values)))] if values else float("nan")

            lat = sorted(latencies)
            lat_open = sorted(open_latencies)
            print(f"\nload: {args.associations} associations x {args.instances} instances of "
                  f"{args.size}x{args.size} CT ({args.size * args.size * 2 // 1024} KiB) in {load_s:.1f} s "
                  f"({len(times) / load_s:.0f} instances/s); load average {os.getloadavg()[0]:.1f}")
            print(f"C-STORE Success {ok} of {args.associations * args.instances}; stored in the index {stored}")
            print(f"C-STORE response time: p50 {pct(times, 0.5) * 1000:.1f} ms, p99 {pct(times, 0.99) * 1000:.1f} ms, "
                  f"max {times[-1] * 1000 if times else float('nan'):.1f} ms")
            print(f"C-ECHO during load ({len(lat)} probes, association + echo + release): "
                  f"p50 {pct(lat, 0.5) * 1000:.0f} ms, p99 {pct(lat, 0.99) * 1000:.0f} ms, "
                  f"max {lat[-1] * 1000 if lat else float('nan'):.0f} ms, failures {len(failures)}")
            print(f"C-ECHO alone on an open association ({len(lat_open)} probes): p50 {pct(lat_open, 0.5) * 1000:.0f} ms, "
                  f"p99 {pct(lat_open, 0.99) * 1000:.0f} ms, max {lat_open[-1] * 1000 if lat_open else float('nan'):.0f} ms")
            print(f"node RSS: peak (VmHWM) {peak_kib / 1024:.0f} MiB, during load max {max(rss_samples) / 1024:.0f} MiB")
            during = [n for t, n in results_timeline if n >= 0]
            print(f"analysis results: {results_before} before the load, {during[-1] if during else '?'} at its end "
                  f"(+{(during[-1] - results_before) if during else '?'} during the load), {results_after} now "
                  f"(earlier radiographs: {args.earlier}; each finished load series adds one)")
            passed = (ok == args.associations * args.instances == stored and not failures and lat and lat_open
                      and lat[-1] < 1.0 and lat_open[-1] < 1.0 and (not earlier or (during and during[-1] > results_before)))
            print("RESULT:", "PASS" if passed else "FAIL")
            return 0 if passed else 1
        finally:
            node.terminate()
            try:
                node.wait(60)
            except subprocess.TimeoutExpired:
                node.kill()


if __name__ == "__main__":
    sys.exit(main())
