"""A 2,000-slice study streams to disk: the node's RSS stays flat while it arrives.

    python3 bench/bench_large_study.py [--slices 2000] [--size 512]

``firstlook --headless`` (subprocess, scratch data dir) receives one CT series of ``--slices``
slices of ``--size`` x ``--size`` 16-bit pixels (2,000 x 512 KiB = 1 GiB) from DCMTK
``storescu`` over one association (TCP_NODELAY=1). The node's VmRSS is sampled every 0.1 s
together with the number of indexed instances; printed: RSS at 0 / 10 / 25 / 50 / 75 / 100 %
of the slices, the peak (VmHWM), and the least-squares slope of RSS against slices received
over the second half (MiB per 1,000 slices), next to the size of the data received.
No model packs: the finished series is only routed, so the measurement is the receive path.
"""

from __future__ import annotations

import argparse
import os
import sqlite3
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path

import numpy as np

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO))

from tests.support import free_port  # noqa: E402
from tests.support.dicom_factory import make_ct_slice, write  # noqa: E402
from tests.support.node_helpers import dcmtk  # noqa: E402


def _kib(pid: int, field: str) -> int:
    try:
        for line in Path(f"/proc/{pid}/status").read_text().splitlines():
            if line.startswith(field + ":"):
                return int(line.split()[1])
    except OSError:
        pass
    return 0


def _count(db: Path) -> int:
    try:
        conn = sqlite3.connect(f"file:{db}?mode=ro", uri=True, timeout=1)
        try:
            return int(conn.execute("SELECT count(*) FROM instances").fetchone()[0])
        finally:
            conn.close()
    except sqlite3.Error:
        return 0


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--slices", type=int, default=2000)
    ap.add_argument("--size", type=int, default=512)
    ap.add_argument("--workdir", type=Path)
    args = ap.parse_args()
    with tempfile.TemporaryDirectory(prefix="firstlook-large-", dir=args.workdir) as tmp:
        work = Path(tmp)
        print(f"writing {args.slices} slices of {args.size}x{args.size} ...", flush=True)
        base = make_ct_slice(np.zeros((args.size, args.size), np.int16), (0.0, 0.0, 0.0))
        rng = np.random.default_rng(0)
        files = []
        for i in range(args.slices):
            ds = make_ct_slice(rng.integers(-1000, 1000, (args.size, args.size)).astype(np.int16), (0.0, 0.0, 0.5 * i),
                               instance=i + 1, study_uid=base.StudyInstanceUID, series_uid=base.SeriesInstanceUID)
            files.append(write(ds, work / "send"))
        total_mib = sum(f.stat().st_size for f in files) / (1 << 20)
        port = free_port()
        log_path = work / "firstlook.log"
        node = subprocess.Popen([sys.executable, "-m", "app", "--config", str(work / "none.toml"), "--headless",
                                 "--data-dir", str(work / "data"), "--cache-dir", str(work / "cache"),
                                 "--packs-dir", str(work / "no-packs"), "--port", str(port), "--min-free-mb", "0"],
                                cwd=REPO, stdout=open(log_path, "wb"), stderr=subprocess.STDOUT)
        try:
            from dicom_node.scu import echo

            end = time.monotonic() + 60
            while echo("127.0.0.1", port, "FIRSTLOOK", timeout=2) != 0:
                if time.monotonic() > end or node.poll() is not None:
                    print(log_path.read_text()[-3000:])
                    return 1
                time.sleep(0.2)
            time.sleep(1.0)
            db = work / "data" / "index.sqlite3"
            samples: list[tuple[int, int]] = []  # (instances indexed, RSS KiB)
            stop = threading.Event()

            def sample() -> None:
                while not stop.is_set():
                    samples.append((_count(db), _kib(node.pid, "VmRSS")))
                    stop.wait(0.1)

            sampler = threading.Thread(target=sample, daemon=True)
            sampler.start()
            t0 = time.perf_counter()
            done = subprocess.run([dcmtk("storescu"), "-aec", "FIRSTLOOK", "-aet", "BIGSTUDY", "+sd", "-to", "60",
                                   "127.0.0.1", str(port), str(work / "send")],
                                  capture_output=True, text=True, timeout=3600, env=dict(os.environ, TCP_NODELAY="1"))
            elapsed = time.perf_counter() - t0
            time.sleep(1.0)
            stop.set()
            sampler.join(5)
            received = _count(db)
            peak = _kib(node.pid, "VmHWM")
            print(f"storescu exit {done.returncode}; {received} of {args.slices} slices indexed in {elapsed:.1f} s "
                  f"({total_mib:.0f} MiB, {received / elapsed:.0f} slices/s)")
            by_count: dict[int, int] = {}
            for n, rss in samples:
                by_count.setdefault(n, rss)
            points = sorted(by_count.items())

            def rss_at(fraction: float) -> float:
                want = fraction * args.slices
                best = min(points, key=lambda p: abs(p[0] - want))
                return best[1] / 1024

            print("RSS while receiving: " + ", ".join(f"{int(f * 100)} %: {rss_at(f):.0f} MiB"
                                                      for f in (0, 0.1, 0.25, 0.5, 0.75, 1.0)))
            half = [(n, r) for n, r in points if n >= args.slices // 2]
            slope = float(np.polyfit([n for n, _ in half], [r / 1024 for _, r in half], 1)[0]) * 1000 if len(half) > 2 \
                else float("nan")
            growth = rss_at(1.0) - rss_at(0.1)
            print(f"peak RSS (VmHWM) {peak / 1024:.0f} MiB; growth from 10 % to 100 %: {growth:.0f} MiB "
                  f"while {total_mib * 0.9:.0f} MiB arrived; slope over the second half {slope:.1f} MiB per 1,000 slices")
            ok = done.returncode == 0 and received == args.slices and growth < 0.1 * total_mib
            print("RESULT:", "PASS" if ok else "FAIL")
            return 0 if ok else 1
        finally:
            node.terminate()
            try:
                node.wait(60)
            except subprocess.TimeoutExpired:
                node.kill()


if __name__ == "__main__":
    sys.exit(main())
