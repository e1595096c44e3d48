"""End to end: DCMTK storescu sends a chest radiograph -> FirstLook stores its result.

Starts ``firstlook --headless`` on a loopback port with a scratch data dir, sends N
radiographs (each a new study made from the shared NIH PNGs) one at a time with storescu,
and measures from the moment storescu starts to the moment the result row is committed.

    python bench/bench_e2e_cxr.py [--n 50] [--packs build/model-packs]
"""

from __future__ import annotations

import argparse
import json
import os
import socket
import sqlite3
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO))

from tests.support.dicom_factory import make_cxr_dataset, write  # noqa: E402


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def wait_for_port(port: int, timeout: float = 60) -> None:
    deadline = time.time() + timeout
    while time.time() < deadline:
        with socket.socket() as s:
            if s.connect_ex(("127.0.0.1", port)) == 0:
                return
        time.sleep(0.1)
    raise RuntimeError("FirstLook did not start listening")


def wait_for_result(db: Path, series_uid: str, timeout: float = 120) -> float:
    deadline = time.time() + timeout
    while time.time() < deadline:
        try:
            with sqlite3.connect(db, timeout=5) as conn:
                row = conn.execute("SELECT created_at, status, summary FROM results WHERE series_uid=?",
                                   (series_uid,)).fetchone()
        except sqlite3.OperationalError:
            row = None
        if row:
            if row[1] != "done":
                raise RuntimeError(f"analysis did not complete: {row[1]} {row[2]}")
            return float(row[0])
        time.sleep(0.005)
    raise TimeoutError(series_uid)


def pct(values: list[float], q: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(round(q * (len(ordered) - 1))))]


def main() -> int:
    ap = argparse.ArgumentParser()
    ap.add_argument("--n", type=int, default=50)
    ap.add_argument("--packs", type=Path, default=REPO / "build" / "model-packs")
    ap.add_argument("--shared", type=Path, default=REPO.parent / "shared")
    args = ap.parse_args()
    pngs = sorted((args.shared / "data" / "cxr" / "images").glob("*.png"))
    work = Path(tempfile.mkdtemp(prefix="firstlook-e2e-"))
    files = []
    for i in range(args.n):
        ds = make_cxr_dataset(pngs[i % len(pngs)], modality="DX" if i % 2 else "CR",
                              photometric="MONOCHROME1" if i % 3 == 0 else "MONOCHROME2")
        files.append((write(ds, work / "send"), str(ds.SeriesInstanceUID)))
    port = free_port()
    data = work / "data"
    env = dict(os.environ, TCP_NODELAY="1")
    node = subprocess.Popen(
        [sys.executable, "-m", "app", "--headless", "--data-dir", str(data), "--port", str(port),
         "--api-port", str(free_port()),
         "--packs-dir", str(args.packs), "--cache-dir", str(work / "cache"), "--quiet-period", "5",
         "--log-level", "WARNING"], cwd=REPO, env=env)
    try:
        wait_for_port(port)
        # Warm-up: the first study waits for the models to load.
        path, series = files[0]
        subprocess.run(["storescu", "-aec", "FIRSTLOOK", "127.0.0.1", str(port), str(path)], check=True, env=env)
        wait_for_result(data / "index.sqlite3", series, timeout=600)
        latencies = []
        for path, series in files[1:]:
            start = time.time()
            subprocess.run(["storescu", "-aec", "FIRSTLOOK", "127.0.0.1", str(port), str(path)], check=True,
                           env=env)
            done = wait_for_result(data / "index.sqlite3", series)
            latencies.append(done - start)
        with sqlite3.connect(data / "index.sqlite3") as conn:
            rows = [json.loads(r[0]) for r in conn.execute("SELECT timings FROM results WHERE status='done'")][1:]
            ready = [r[0] - r[1] for r in conn.execute(
                "SELECT r.created_at - r.timings_total, s.last_received FROM "
                "(SELECT series_uid, created_at, json_extract(timings, '$.total') AS timings_total FROM results) r "
                "JOIN series s USING (series_uid)")][1:]
        print("median seconds per stage:", {k: round(statistics.median(t[k] for t in rows), 3)
                                            for k in ("decode", "preprocess", "infer", "total", "arrival_to_result")})
        print(f"median wait from last instance stored to analysis start: {statistics.median(ready) * 1000:.0f} ms")
        print(f"end-to-end storescu send -> result stored, {len(latencies)} chest radiographs (1024x1024, 12-bit):")
        print(f"  p50 {statistics.median(latencies) * 1000:.0f} ms   p95 {pct(latencies, 0.95) * 1000:.0f} ms   "
              f"max {max(latencies) * 1000:.0f} ms   mean {statistics.fmean(latencies) * 1000:.0f} ms")
    finally:
        node.terminate()
        node.wait(30)
    return 0


if __name__ == "__main__":
    sys.exit(main())
