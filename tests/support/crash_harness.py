"""Crash-consistency harness: DCMTK senders push studies while FirstLook is SIGKILLed and restarted.

Used by tests/store/test_crash_consistency.py (a few kills, CI) and bench/bench_crash.py (>= 20).

* FirstLook runs as ``python -m app --headless`` on a scratch data dir (its own process,
  restarted after every kill, same port and data dir).
* ``senders`` threads each drive DCMTK ``storescu -v`` (``TCP_NODELAY=1``), one association
  per study, like a modality. ``-v`` prints ``Sending file: <path>`` and then ``Received Store
  Response (Success)`` for every acknowledged instance: that is the acknowledged set. A sender
  re-sends what was not acknowledged (as a modality would) until everything is.
* Kills rotate through kinds. ``external``: SIGKILL from outside after a random delay (the
  label records what was running: an association, analysis, or nothing); ``sending``: SIGKILL
  within 0.25 s of a sender opening an association (association set-up, mid-instance). The others arm one of the debug-only
  crash points of ``app.core.crashpoints`` (a window too short to hit from outside, e.g. file
  renamed but index row not committed); if the point is not reached in time an external kill
  follows. Crash points are switched on only through the environment of the child process.
* At the end FirstLook runs undisturbed until every series has its result, stops with SIGTERM,
  and the data dir is checked: acknowledged instances present and byte-identical (dataset
  after the File Meta Information, which FirstLook writes itself), ``StudyStore.verify()``
  empty, no ``*.part`` left, every series analysed with its full instance count and after its
  last (possibly corrected) instance, one result per series and one overlay file per CheXNet
  result. Each sender ends with a corrected version of its first radiograph (same UIDs,
  different bytes): the earlier acknowledged version must be kept in superseded/ with a row.
"""

from __future__ import annotations

import logging
import os
import random
import re
import shutil
import signal
import sqlite3
import struct
import subprocess
import sys
import threading
import time
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
from PIL import Image
from pydicom.uid import generate_uid

from tests.support import REPO, free_port
from tests.support.dicom_factory import make_ct_slice, make_cxr_dataset, write

log = logging.getLogger(__name__)

KINDS = ("external", "after-rename", "mid-analysis", "after-fsync", "sending", "after-index", "after-link")
_SENT = re.compile(r"Sending file: (.+)$")
_OK = re.compile(r"Received Store Response \(Success\)")


@dataclass
class CrashSettings:
    workdir: Path
    kills: int = 4
    senders: int = 4
    studies_per_sender: int = 4
    ct_slices: int = 12
    ct_size: int = 256
    cxr_pngs: list[Path] = field(default_factory=list)
    packs_dir: Path | None = None
    seed: int = 1
    quiet_period_s: float = 1.0
    max_kill_delay_s: float = 4.0
    crash_point_p: float = 0.25
    study_pause_s: float = 0.3      # a sender's pause between studies (keeps senders busy across kills)
    settle_timeout_s: float = 240.0
    storescu: str = "/usr/bin/storescu"


@dataclass
class CrashReport:
    kills: int = 0
    kill_kinds: dict[str, int] = field(default_factory=dict)
    instances: int = 0               # distinct instances (versions) the senders had to deliver
    replaced: int = 0                # acknowledged versions later replaced: kept in superseded/ with a row
    sent: int = 0                    # C-STORE requests issued, re-sends included
    acknowledged: int = 0            # distinct instances a sender saw answered Success
    present: int = 0                 # of those, on disk byte-identical and indexed
    lost: int = 0
    altered: int = 0
    verify_problems: list[str] = field(default_factory=list)
    temp_files_left: list[str] = field(default_factory=list)
    series: int = 0
    results: dict[str, int] = field(default_factory=dict)  # status -> count
    series_without_result: list[str] = field(default_factory=list)
    stale_results: list[str] = field(default_factory=list)  # result/job saw fewer instances than stored
    duplicate_results: int = 0
    stray_overlays: list[str] = field(default_factory=list)
    analysis_runs: int = 0
    restarts: int = 0
    seconds: float = 0.0

    @property
    def ok(self) -> bool:
        return (self.lost == 0 and self.altered == 0 and not self.verify_problems and not self.temp_files_left
                and not self.series_without_result and not self.stale_results and self.duplicate_results == 0
                and not self.stray_overlays and self.acknowledged == self.instances)

    def lines(self) -> list[str]:
        return [
            f"kills {self.kills} ({', '.join(f'{k} {v}' for k, v in sorted(self.kill_kinds.items()))}), "
            f"restarts {self.restarts}, {self.seconds:.0f} s",
            f"instances {self.instances}, C-STOREs sent {self.sent}, acknowledged {self.acknowledged}, "
            f"present {self.present} (of which {self.replaced} replaced, kept in superseded/), lost {self.lost}, "
            f"altered {self.altered}",
            f"index vs files: {len(self.verify_problems)} problem(s); temporary files left: {len(self.temp_files_left)}",
            f"series {self.series}, results {self.results}, without result {len(self.series_without_result)}, "
            f"stale {len(self.stale_results)}, duplicate results {self.duplicate_results}, "
            f"stray overlays {len(self.stray_overlays)}, analysis runs {self.analysis_runs}",
        ]


# -- data -------------------------------------------------------------------------------------
@dataclass
class Study:
    files: list[Path]
    series_uids: list[str]


def make_studies(settings: CrashSettings, out: Path) -> list[list[Study]]:
    """Per sender: alternating chest radiographs (one 2 MB instance, analysed by CheXNet) and
    head-CT series (``ct_slices`` slices; no BLAST-CT pack in the harness, so quickly 'failed')."""
    rng = np.random.default_rng(settings.seed)
    plan: list[list[Study]] = []
    n = 0
    for s in range(settings.senders):
        studies: list[Study] = []
        for k in range(settings.studies_per_sender):
            study_uid = generate_uid()
            folder = out / f"sender{s}" / f"study{k}"
            if settings.cxr_pngs and k % 2 == 0:
                png = settings.cxr_pngs[n % len(settings.cxr_pngs)]
                n += 1
                series_uid = generate_uid()
                ds = make_cxr_dataset(png, study_uid=study_uid, series_uid=series_uid, patient_id=f"P{s}{k}")
                studies.append(Study([write(ds, folder)], [series_uid]))
            else:
                series_uid = generate_uid()
                files = []
                for i in range(settings.ct_slices):
                    pixels = rng.integers(-100, 100, (settings.ct_size, settings.ct_size)).astype(np.int16)
                    files.append(write(make_ct_slice(pixels, (0.0, 0.0, 5.0 * i), instance=i + 1, study_uid=study_uid,
                                                     series_uid=series_uid, patient_id=f"P{s}{k}"), folder))
                studies.append(Study(files, [series_uid]))
        first_cxr = next((st for st in studies if len(st.files) == 1), None)
        if first_cxr is not None:  # a corrected version of the first radiograph: a replacement
            import pydicom

            ds = pydicom.dcmread(first_cxr.files[0])
            ds.SeriesDescription = "DX chest (corrected)"
            studies.append(Study([write(ds, out / f"sender{s}" / "corrected")], list(first_cxr.series_uids)))
        plan.append(studies)
    return plan


def dataset_body(data: bytes) -> bytes:
    """Bytes after the Part 10 File Meta Information (group 0002 length is its first element)."""
    assert data[128:132] == b"DICM"
    (group_len,) = struct.unpack("<I", data[140:144])
    return data[144 + group_len:]


# -- senders ----------------------------------------------------------------------------------
class Sender(threading.Thread):
    """One modality: each study over its own storescu association; re-sends until acknowledged."""

    def __init__(self, idx: int, studies: list[Study], port: int, settings: CrashSettings, stop: threading.Event):
        super().__init__(name=f"sender{idx}", daemon=True)
        self.idx = idx
        self.studies = studies
        self.port = port
        self.settings = settings
        self.stop_event = stop
        self.acked: set[Path] = set()
        self.ack_order: list[Path] = []
        self.sent = 0
        self.active = threading.Event()  # an association is (being) set up or open
        self.rng = random.Random(settings.seed * 100 + idx)

    def run(self) -> None:
        env = dict(os.environ, TCP_NODELAY="1")
        for study in self.studies:
            while not self.stop_event.is_set():
                todo = [f for f in study.files if f not in self.acked]
                if not todo:
                    break
                self.active.set()
                try:
                    done = subprocess.run([self.settings.storescu, "-v", "-aet", f"MODALITY{self.idx}",
                                           "-aec", "FIRSTLOOK", "-to", "20", "-ta", "20", "-td", "20",
                                           "127.0.0.1", str(self.port), *map(str, todo)],
                                          capture_output=True, text=True, timeout=120, env=env)
                    output = done.stdout + done.stderr
                except subprocess.TimeoutExpired as exc:
                    output = (exc.stdout or b"").decode() if isinstance(exc.stdout, bytes) else (exc.stdout or "")
                finally:
                    self.active.clear()
                current: Path | None = None
                for line in output.splitlines():
                    m = _SENT.search(line)
                    if m:
                        current = Path(m.group(1).strip())
                        self.sent += 1
                    elif current is not None and _OK.search(line):
                        self.acked.add(current)
                        self.ack_order.append(current)
                        current = None
                if any(f not in self.acked for f in todo):
                    time.sleep(0.2 + self.rng.random() * 0.3)  # node down or refused: retry shortly
            time.sleep(self.rng.random() * self.settings.study_pause_s)


# -- the node -------------------------------------------------------------------------------------
class NodeProcess:
    def __init__(self, settings: CrashSettings, data_dir: Path, port: int, log_path: Path) -> None:
        self.settings = settings
        self.data_dir = data_dir
        self.port = port
        self.log_path = log_path
        self.proc: subprocess.Popen[bytes] | None = None

    def start(self, crash_points: str = "") -> None:
        env = dict(os.environ)
        env.pop("FIRSTLOOK_CRASH_POINTS", None)
        if crash_points:
            env["FIRSTLOOK_CRASH_POINTS"] = crash_points
        work = self.settings.workdir
        cmd = [sys.executable, "-m", "app", "--config", str(work / "no-config.toml"), "--headless",
               "--data-dir", str(self.data_dir), "--cache-dir", str(work / "cache"),
               "--packs-dir", str(self.settings.packs_dir or work / "no-packs"), "--port", str(self.port),
               "--api-port", str(free_port()), "--min-free-mb", "0", "--quiet-period", str(self.settings.quiet_period_s), "--log-level", "INFO"]
        with open(self.log_path, "ab") as logf:
            logf.write(f"=== start {time.strftime('%H:%M:%S')} crash points: {crash_points or '-'}\n".encode())
            self.proc = subprocess.Popen(cmd, cwd=REPO, env=env, stdout=logf, stderr=logf)

    def wait_listening(self, timeout: float = 60.0) -> bool:
        import socket

        end = time.monotonic() + timeout
        while time.monotonic() < end:
            if self.proc is None or self.proc.poll() is not None:
                return False
            with socket.socket() as s:
                s.settimeout(0.5)
                if s.connect_ex(("127.0.0.1", self.port)) == 0:
                    return True
            time.sleep(0.05)
        return False

    def kill(self) -> None:
        if self.proc is not None and self.proc.poll() is None:
            self.proc.send_signal(signal.SIGKILL)
        if self.proc is not None:
            self.proc.wait(30)

    def terminate(self) -> int:
        assert self.proc is not None
        self.proc.send_signal(signal.SIGTERM)
        return self.proc.wait(120)

    def alive(self) -> bool:
        return self.proc is not None and self.proc.poll() is None


def _db_count(db: Path, sql: str) -> int:
    try:
        conn = sqlite3.connect(f"file:{db}?mode=ro", uri=True, timeout=1)
        try:
            return int(conn.execute(sql).fetchone()[0])
        finally:
            conn.close()
    except sqlite3.Error:
        return -1


def _settled(db: Path) -> bool:
    """Every series with instances has a finished job that saw all of them, and a result."""
    left = _db_count(db, """SELECT count(*) FROM series se LEFT JOIN jobs j ON j.series_uid = se.series_uid
                            LEFT JOIN results r ON r.series_uid = se.series_uid
                            WHERE j.state IS NULL OR j.state != 'done' OR r.series_uid IS NULL
                               OR j.instance_count != (SELECT count(*) FROM instances i
                                                       WHERE i.series_uid = se.series_uid)""")
    return left == 0


# -- the run ----------------------------------------------------------------------------------------
def run_crash_harness(settings: CrashSettings, port: int) -> CrashReport:
    started = time.monotonic()
    rng = random.Random(settings.seed)
    work = settings.workdir
    work.mkdir(parents=True, exist_ok=True)
    data_dir = work / "data"
    plan = make_studies(settings, work / "send")
    report = CrashReport(instances=sum(len(st.files) for studies in plan for st in studies))
    node = NodeProcess(settings, data_dir, port, work / "firstlook.log")
    stop = threading.Event()
    senders = [Sender(i, studies, port, settings, stop) for i, studies in enumerate(plan)]

    node.start()
    assert node.wait_listening(), (work / "firstlook.log").read_text()[-3000:]
    for s in senders:
        s.start()
    db = data_dir / "index.sqlite3"
    try:
        for k in range(settings.kills):
            kind = KINDS[k % len(KINDS)]
            if k > 0:
                node.start("" if kind in ("external", "sending") else f"{kind}:{settings.crash_point_p}")
                report.restarts += 1
                if not node.wait_listening():
                    if node.alive():
                        raise AssertionError("FirstLook did not listen after a restart")
                    # died at a crash point before listening? cannot happen (no C-STORE yet): report it
                    raise AssertionError("FirstLook exited during start-up:\n"
                                         + (work / "firstlook.log").read_text()[-3000:])
            delay = rng.uniform(0.3, settings.max_kill_delay_s)
            deadline = time.monotonic() + (delay if kind == "external" else 3 * settings.max_kill_delay_s)
            if kind == "sending":  # wait for an association to be open, then kill within its first instances
                while time.monotonic() < deadline and not any(s.active.is_set() for s in senders):
                    time.sleep(0.005)
                deadline = time.monotonic() + rng.uniform(0.0, 0.25)
            while node.alive() and time.monotonic() < deadline:
                time.sleep(0.01)
            if node.alive():
                # what the node was doing when it is killed from outside
                busy = [s for s in senders if s.active.is_set()]
                running_jobs = _db_count(db, "SELECT count(*) FROM jobs WHERE state='running'")
                label = "external-" + ("association" if busy else "analysis" if running_jobs > 0 else "idle")
                node.kill()
            else:
                node.proc.wait()  # type: ignore[union-attr]
                label = f"point-{kind}"
            report.kills += 1
            report.kill_kinds[label] = report.kill_kinds.get(label, 0) + 1
        # settle: no more kills; senders finish, every series gets analysed
        node.start()
        report.restarts += 1
        assert node.wait_listening(), (work / "firstlook.log").read_text()[-3000:]
        end = time.monotonic() + settings.settle_timeout_s
        for s in senders:
            s.join(max(1.0, end - time.monotonic()))
        while time.monotonic() < end and not _settled(db):
            time.sleep(0.25)
        time.sleep(settings.quiet_period_s + 0.5)  # nothing left in the readiness tracker
        while time.monotonic() < end and not _settled(db):
            time.sleep(0.25)
        rc = node.terminate()
        assert rc == 0, f"clean stop failed with {rc}"
    finally:
        stop.set()
        node.kill()
        for s in senders:
            s.join(30)
    report.sent = sum(s.sent for s in senders)
    acked = [p for s in senders for p in s.ack_order]  # per sender in order: a correction after its original
    report.acknowledged = len(set(acked))
    _check(report, data_dir, acked, work / "firstlook.log")
    report.seconds = time.monotonic() - started
    return report


def _check(report: CrashReport, data_dir: Path, acked: list[Path], log_path: Path) -> None:
    import pydicom

    from app.core.store import StudyStore

    store = StudyStore(data_dir)
    try:
        indexed = {r["sop_uid"]: r for r in store.instance_rows()}
        latest: dict[str, Path] = {}
        for path in dict.fromkeys(acked):  # acknowledged order; the last version of a SOP Instance wins
            latest[str(pydicom.dcmread(path, stop_before_pixels=True).SOPInstanceUID)] = path
        kept = {dataset_body((data_dir / r["superseded_path"]).read_bytes())
                for r in store.replacements() if (data_dir / r["superseded_path"]).is_file()}
        for path in dict.fromkeys(acked):
            ds = pydicom.dcmread(path, stop_before_pixels=True)
            body = dataset_body(path.read_bytes())
            if latest[str(ds.SOPInstanceUID)] != path:  # replaced later: the old version is kept, with its row
                if body in kept:
                    report.replaced += 1
                    report.present += 1
                else:
                    report.lost += 1
                continue
            target = store.studies_dir / ds.StudyInstanceUID / ds.SeriesInstanceUID / f"{ds.SOPInstanceUID}.dcm"
            if not target.is_file() or ds.SOPInstanceUID not in indexed:
                report.lost += 1
                continue
            if dataset_body(target.read_bytes()) != body:
                report.altered += 1
                continue
            report.present += 1
        report.verify_problems = store.verify()
        report.temp_files_left = [str(p.relative_to(data_dir)) for p in data_dir.rglob("*")
                                  if p.is_file() and (p.suffix == ".part" or p.parent == store.tmp_dir)]
        series = store.list_series()
        report.series = len(series)
        results = {r.series_uid: r for r in store.all_results()}
        conn = sqlite3.connect(store.db_path)
        report.duplicate_results = conn.execute(
            "SELECT count(*) FROM (SELECT series_uid FROM results GROUP BY series_uid HAVING count(*) > 1)").fetchone()[0]
        jobs = {r[0]: (r[1], r[2]) for r in conn.execute("SELECT series_uid, state, instance_count FROM jobs")}
        conn.close()
        for se in series:
            result = results.get(se.series_uid)
            if result is None:
                report.series_without_result.append(se.series_uid)
                continue
            report.results[result.status] = report.results.get(result.status, 0) + 1
            state, count = jobs.get(se.series_uid, ("", -1))
            if state != "done" or count != se.n_instances or result.created_at < se.last_received:
                report.stale_results.append(f"{se.series_uid}: job {state} saw {count} of {se.n_instances}, "
                                            f"result {result.created_at:.3f}, last instance {se.last_received:.3f}")
        for folder in store.results_dir.iterdir():
            files = sorted(p.name for p in folder.iterdir())
            if folder.name not in results or len(files) > 1 or (
                    results[folder.name].overlay_path and files != [Path(results[folder.name].overlay_path).name]):
                report.stray_overlays.append(f"{folder.name}: {files}")
        report.analysis_runs = sum(1 for line in log_path.read_text(errors="replace").splitlines()
                                   if "INFO app.core.pipeline: series " in line)
    finally:
        store.close()


def cxr_pngs(shared_dir: Path, n: int) -> list[Path]:
    pngs = sorted((shared_dir / "data" / "cxr" / "images").glob("*.png"))[:n]
    for p in pngs:  # only 8-bit greyscale/RGBA images the factory reads
        Image.open(p).close()
    return pngs


def chexnet_only_packs(build_packs: Path, work: Path) -> Path | None:
    """A packs folder with CheXNet only (BLAST-CT, when built, would make every CT minutes long)."""
    if not (build_packs / "chexnet" / "manifest.json").is_file():
        return None
    out = work / "packs"
    if not (out / "chexnet").exists():
        def link(src: str, dst: str) -> None:
            try:
                os.link(src, dst)  # same file system: no copy
            except OSError:
                shutil.copy2(src, dst)

        shutil.copytree(build_packs / "chexnet", out / "chexnet", copy_function=link)
    return out
