"""Receive benchmark: FirstLook's node vs DCMTK storescp, same files, same run.

    python3 bench/bench_receive.py [--slices 300] [--repeats 3] [--profile]

Generates a synthetic 300-slice 512x512 CT series (explicit VR LE, ~512 KiB a slice) in a
temp dir, then for each receiver (FirstLook's StorageSCP + StudyStore in a child process,
and DCMTK ``storescp``) pushes it with DCMTK ``storescu`` over loopback: once over a single
association and once as 4 concurrent associations (75 slices each). Every run starts the
receiver on a fresh data dir. Reports instances/s, MB/s, receiver CPU seconds per instance
(from /proc, children included) and the FirstLook/storescp ratio.

Senders and storescp get ``TCP_NODELAY=1`` in their environment; without it DCMTK leaves
Nagle on and everything crawls at ~20 instances/s. FirstLook sets TCP_NODELAY itself.
``--profile`` runs the FirstLook child under cProfile and prints the top functions.
"""

from __future__ import annotations

import argparse
import os
import shutil
import signal
import socket
import statistics
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path

import numpy as np
from pydicom.dataset import Dataset, FileMetaDataset
from pydicom.uid import CTImageStorage, ExplicitVRLittleEndian, generate_uid

REPO = Path(__file__).resolve().parent.parent
CLK_TCK = os.sysconf("SC_CLK_TCK")

CHILD = r"""
import logging, signal, sys, threading
from pathlib import Path
from app.core.config import Config
from app.core.store import StudyStore
from dicom_node.scp import StorageSCP
logging.basicConfig(level=logging.WARNING, stream=sys.stderr)
data_dir, port, chunked = Path(sys.argv[1]), int(sys.argv[2]), sys.argv[4] == "1"
index_sync, no_fsync = sys.argv[5], sys.argv[6] == "1"
if no_fsync:  # what-if only: shows the cost of durability; never a way to run FirstLook
    import os
    os.fsync = lambda fd: None
config = Config(data_dir=data_dir, port=port, ae_title="FIRSTLOOK", max_associations=16, min_free_mb=0)
store = StudyStore(data_dir, index_sync=index_sync)
scp = StorageSCP(config, store, chunked=chunked)
done = threading.Event()
signal.signal(signal.SIGTERM, lambda *a: done.set())
scp.start()
print("ready", flush=True)
done.wait()
scp.stop()
"""

# The baseline the issue quotes (~0.2x storescp): decode each dataset and save it again,
# no fsync, no index. For context only.
CHILD_NAIVE = r"""
import signal, sys, threading
from pathlib import Path
from pynetdicom import AE, AllStoragePresentationContexts, evt
from pydicom.uid import ExplicitVRLittleEndian, ImplicitVRLittleEndian
out, port = Path(sys.argv[1]), int(sys.argv[2])
def handle(event):
    ds = event.dataset
    ds.file_meta = event.file_meta
    ds.save_as(out / f"{ds.SOPInstanceUID}.dcm", enforce_file_format=True)
    return 0
ae = AE("FIRSTLOOK")
for cx in AllStoragePresentationContexts:
    ae.add_supported_context(cx.abstract_syntax, [ExplicitVRLittleEndian, ImplicitVRLittleEndian])
server = ae.start_server(("127.0.0.1", port), block=False, evt_handlers=[(evt.EVT_C_STORE, handle)])
done = threading.Event()
signal.signal(signal.SIGTERM, lambda *a: done.set())
print("ready", flush=True)
done.wait()
server.shutdown()
"""

CHILD_PROFILED = r"""
import cProfile, logging, pstats, signal, sys, threading
from pathlib import Path
from app.core.config import Config
from app.core.store import StudyStore
from dicom_node.scp import StorageSCP
logging.basicConfig(level=logging.WARNING, stream=sys.stderr)
data_dir, port, chunked = Path(sys.argv[1]), int(sys.argv[2]), sys.argv[4] == "1"
config = Config(data_dir=data_dir, port=port, ae_title="FIRSTLOOK", max_associations=16, min_free_mb=0)
store = StudyStore(data_dir)
scp = StorageSCP(config, store, chunked=chunked)
done = threading.Event()
signal.signal(signal.SIGTERM, lambda *a: done.set())
profiles = []
original = scp.services.on_store
def profiled(event):
    prof = cProfile.Profile()
    prof.enable()
    try:
        return original(event)
    finally:
        prof.disable()
        profiles.append(prof)
scp.services.on_store = profiled
# Also profile every thread (the DUL and reactor threads) with a per-thread profiler.
thread_profiles = []
def _start_thread_profile(frame, event, arg):
    prof = cProfile.Profile()
    thread_profiles.append(prof)
    prof.enable()
    threading.setprofile(None)
threading.setprofile(_start_thread_profile)
scp.start()
print("ready", flush=True)
done.wait()
scp.stop()
for p in thread_profiles:
    p.disable()
stats = pstats.Stats(*thread_profiles) if thread_profiles else None
if stats:
    stats.sort_stats("tottime").print_stats(25)
st = pstats.Stats(*profiles)
st.sort_stats("cumtime").print_stats(20)
"""


def find_dcmtk(tool: str) -> str:
    """The DCMTK binary, not a same-named Python console script earlier on PATH."""
    candidates = [Path("/usr/bin") / tool] + [Path(p) / tool for p in os.environ.get("PATH", "").split(os.pathsep)]
    for c in candidates:
        if c.is_file() and os.access(c, os.X_OK):
            out = subprocess.run([str(c), "--version"], capture_output=True, text=True).stdout
            if "dcmtk" in out.lower():
                return str(c)
    raise SystemExit(f"DCMTK {tool} not found (apt-get install dcmtk)")


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def make_series(directory: Path, slices: int) -> list[Path]:
    directory.mkdir(parents=True, exist_ok=True)
    study, series = generate_uid(), generate_uid()
    rng = np.random.default_rng(0)
    base = rng.integers(0, 2000, (512, 512), dtype=np.int16)
    paths = []
    for i in range(slices):
        ds = Dataset()
        ds.SOPClassUID = CTImageStorage
        ds.SOPInstanceUID = generate_uid()
        ds.StudyInstanceUID, ds.SeriesInstanceUID = study, series
        ds.PatientID, ds.PatientName, ds.Modality = "BENCH01", "BENCH^CT", "CT"
        ds.StudyDate, ds.StudyTime, ds.SeriesNumber, ds.InstanceNumber = "20260101", "120000", 1, i + 1
        ds.ImagePositionPatient, ds.ImageOrientationPatient = [0, 0, float(i)], [1, 0, 0, 0, 1, 0]
        ds.PixelSpacing, ds.SliceThickness = [0.5, 0.5], 1.0
        ds.SamplesPerPixel, ds.PhotometricInterpretation = 1, "MONOCHROME2"
        ds.Rows = ds.Columns = 512
        ds.BitsAllocated, ds.BitsStored, ds.HighBit, ds.PixelRepresentation = 16, 16, 15, 1
        ds.RescaleIntercept, ds.RescaleSlope = -1024, 1
        ds.PixelData = (base + i).tobytes()
        ds.file_meta = FileMetaDataset()
        ds.file_meta.MediaStorageSOPClassUID = ds.SOPClassUID
        ds.file_meta.MediaStorageSOPInstanceUID = ds.SOPInstanceUID
        ds.file_meta.TransferSyntaxUID = ExplicitVRLittleEndian
        path = directory / f"{i + 1:04d}.dcm"
        ds.save_as(path, enforce_file_format=True)
        paths.append(path)
    return paths


def fsync_latency(directory: Path, n: int = 40) -> tuple[float, float]:
    """Median ms of (write 512 KiB + fsync file) and of (fsync directory) on the receivers'
    filesystem: the floor a durable receiver pays per instance, which storescp does not."""
    directory.mkdir(parents=True, exist_ok=True)
    data = os.urandom(512 << 10)
    files, dirs = [], []
    for i in range(n):
        path = directory / f"probe{i}"
        t0 = time.perf_counter()
        with open(path, "wb") as fh:
            fh.write(data)
            fh.flush()
            os.fsync(fh.fileno())
        t1 = time.perf_counter()
        fd = os.open(directory, os.O_RDONLY)
        os.fsync(fd)
        os.close(fd)
        files.append(t1 - t0)
        dirs.append(time.perf_counter() - t1)
        path.unlink()
    return statistics.median(files) * 1000, statistics.median(dirs) * 1000


def cpu_seconds(pid: int) -> float:
    """utime + stime + reaped children's (storescp --fork) from /proc/<pid>/stat."""
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return sum(int(fields[i]) for i in (11, 12, 13, 14)) / CLK_TCK


@dataclass
class Run:
    receiver: str
    mode: str
    seconds: float
    cpu: float
    instances: int
    nbytes: int

    @property
    def ips(self) -> float:
        return self.instances / self.seconds

    @property
    def mbs(self) -> float:
        return self.nbytes / self.seconds / 1e6


class Receiver:
    def __init__(self, kind: str, workdir: Path, profile: bool = False, chunked: bool = False,
                 index_sync: str = "NORMAL", no_fsync: bool = False) -> None:
        self.kind, self.workdir, self.profile, self.chunked = kind, workdir, profile, chunked
        self.index_sync, self.no_fsync = index_sync, no_fsync
        self.proc: subprocess.Popen[str] | None = None
        self.port = 0
        self.ae = "STORESCP" if kind == "storescp" else "FIRSTLOOK"

    def start(self, concurrent: bool) -> None:
        out = self.workdir / f"{self.kind}-{time.monotonic_ns()}"
        out.mkdir(parents=True)
        self.out = out
        self.port = free_port()
        env = dict(os.environ, TCP_NODELAY="1", PYTHONPATH=str(REPO))
        if self.kind in ("firstlook", "naive"):
            code = CHILD_NAIVE if self.kind == "naive" else CHILD_PROFILED if self.profile else CHILD
            self.proc = subprocess.Popen(
                [sys.executable, "-c", code, str(out), str(self.port), "1" if self.profile else "0",
                 "1" if self.chunked else "0", self.index_sync, "1" if self.no_fsync else "0"],
                cwd=REPO, env=env, stdout=subprocess.PIPE, text=True)
            assert self.proc.stdout is not None
            line = self.proc.stdout.readline()
            assert line.strip() == "ready", line
        else:
            args = [find_dcmtk("storescp"), "-aet", "STORESCP", "-od", str(out)]
            if concurrent:
                args.append("--fork")  # storescp otherwise serves one association at a time
            self.proc = subprocess.Popen(args + [str(self.port)], env=env, stdout=subprocess.DEVNULL,
                                         stderr=subprocess.DEVNULL, text=True)
            deadline = time.monotonic() + 10
            while time.monotonic() < deadline:
                with socket.socket() as s:
                    if s.connect_ex(("127.0.0.1", self.port)) == 0:
                        break
                time.sleep(0.05)

    def cpu(self) -> float:
        assert self.proc is not None
        return cpu_seconds(self.proc.pid)

    def stop(self) -> str:
        assert self.proc is not None
        self.proc.send_signal(signal.SIGTERM)
        out = ""
        if self.proc.stdout is not None:
            out = self.proc.stdout.read()
        self.proc.wait(timeout=60)
        shutil.rmtree(self.out, ignore_errors=True)
        return out


def send(receiver: Receiver, groups: list[list[Path]]) -> float:
    storescu = find_dcmtk("storescu")
    env = dict(os.environ, TCP_NODELAY="1")
    started = time.perf_counter()
    procs = [subprocess.Popen([storescu, "-aet", "BENCH", "-aec", receiver.ae, "127.0.0.1", str(receiver.port),
                               *map(str, g)], env=env, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
             for g in groups]
    for p in procs:
        _, err = p.communicate(timeout=600)
        if p.returncode != 0:
            raise SystemExit(f"storescu failed: {err.decode(errors='replace')[-500:]}")
    return time.perf_counter() - started


def run(kind: str, mode: str, files: list[Path], workdir: Path, profile: bool = False,
        chunked: bool = False, index_sync: str = "NORMAL", no_fsync: bool = False) -> tuple[Run, str]:
    concurrent = mode == "4 assoc"
    groups = [files[i::4] for i in range(4)] if concurrent else [files]
    receiver = Receiver(kind, workdir, profile, chunked, index_sync, no_fsync)
    receiver.start(concurrent)
    try:
        cpu0 = receiver.cpu()
        seconds = send(receiver, groups)
        time.sleep(0.2 if kind == "storescp" else 0)  # let forked children be reaped
        cpu1 = receiver.cpu()
        stored = sum(1 for _ in receiver.out.rglob("*") if _.is_file() and not _.name.endswith(".sqlite3")
                     and "sqlite3" not in _.name)
    finally:
        output = receiver.stop()
    if stored < len(files):
        raise SystemExit(f"{kind} stored {stored} of {len(files)} files")
    return Run(kind, mode, seconds, cpu1 - cpu0, len(files), sum(f.stat().st_size for f in files)), output


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--slices", type=int, default=300)
    ap.add_argument("--repeats", type=int, default=3)
    ap.add_argument("--profile", action="store_true", help="cProfile the FirstLook receiver (one run)")
    ap.add_argument("--chunked", action="store_true", help="FirstLook uses pynetdicom's chunked receive")
    ap.add_argument("--index-sync", default="NORMAL", choices=["NORMAL", "FULL"],
                    help="SQLite synchronous mode of the index (FULL: one more fsync per instance)")
    ap.add_argument("--workdir", type=Path, help="put the series and the receivers' data here, e.g. /dev/shm "
                    "(tmpfs: fsync is free, so this shows the receive path without the disk)")
    ap.add_argument("--naive", action="store_true",
                    help="also run a naive pynetdicom handler (decode + save_as, no fsync) for context")
    ap.add_argument("--no-fsync", action="store_true",
                    help="what-if: FirstLook without any fsync, to show what durability costs (not a real mode)")
    args = ap.parse_args()
    with tempfile.TemporaryDirectory(prefix="firstlook-bench-", dir=args.workdir) as tmp:
        work = Path(tmp)
        files = make_series(work / "series", args.slices)
        size = sum(f.stat().st_size for f in files)
        print(f"{len(files)} CT slices, {size / 1e6:.1f} MB, explicit VR LE; receivers on 127.0.0.1; "
              f"FirstLook: {'chunked' if args.chunked else 'in-memory'} receive, index synchronous={args.index_sync}"
              f"{', NO FSYNC (what-if)' if args.no_fsync else ''}")
        if args.profile:
            result, output = run("firstlook", "single", files, work, profile=True, chunked=args.chunked)
            print(f"profiled run: {result.ips:.0f} instances/s")
            print(output)
            return 0
        results: dict[tuple[str, str], list[Run]] = {}
        for _ in range(args.repeats):
            for mode in ("single", "4 assoc"):
                for kind in ("storescp", "firstlook") + (("naive",) if args.naive else ()):
                    r, _out = run(kind, mode, files, work, chunked=args.chunked, index_sync=args.index_sync,
                                  no_fsync=args.no_fsync)
                    results.setdefault((kind, mode), []).append(r)
        print(f"\n{'receiver':10} {'mode':8} {'inst/s':>8} {'MB/s':>7} {'CPU ms/inst':>12} {'runs (inst/s)':>24}")
        medians: dict[tuple[str, str], Run] = {}
        for (kind, mode), runs in sorted(results.items(), key=lambda kv: (kv[0][1], kv[0][0])):
            runs_sorted = sorted(runs, key=lambda r: r.ips)
            med = runs_sorted[len(runs_sorted) // 2]
            medians[(kind, mode)] = med
            cpu = statistics.median(r.cpu / r.instances for r in runs) * 1000
            print(f"{kind:10} {mode:8} {med.ips:8.0f} {med.mbs:7.1f} {cpu:12.2f} "
                  f"{' '.join(f'{r.ips:.0f}' for r in runs):>24}")
        for mode in ("single", "4 assoc"):
            ratio = medians[("firstlook", mode)].ips / medians[("storescp", mode)].ips
            print(f"FirstLook / storescp ({mode}): {ratio:.2f}x")
            if ("naive", mode) in medians:
                print(f"naive pynetdicom handler / storescp ({mode}): "
                      f"{medians[('naive', mode)].ips / medians[('storescp', mode)].ips:.2f}x")
        f_ms, d_ms = fsync_latency(work / "probe")
        print(f"this filesystem: write+fsync of 512 KiB {f_ms:.2f} ms, directory fsync {d_ms:.2f} ms (medians); "
              f"FirstLook pays both per instance before answering, storescp neither")
    return 0


if __name__ == "__main__":
    sys.exit(main())
