"""``firstlook --self-test``: prove on the target machine, offline, that this install works.

Hospital IT runs it after installing from a USB stick (and after any driver or hardware
change). Every check runs even when an earlier one failed, so one report shows everything
that is wrong; each check is PASS, FAIL, WARN or INFO and only FAIL makes the exit code 1.

Checks, in order: OpenVINO runtime and devices; the pixel decoders the bundle must carry
(libjpeg, openjpeg, RLE through pylibjpeg); TLS files when configured; the data folder;
every model pack's hashes; each model compiled and run on each OpenVINO device on a
synthetic sample its spec's probe generates (a chest radiograph, a small head-CT phantom),
with latency; the DICOM node on a loopback port storing a sample over a real association.

Samples are made at run time (seeded, ``app.core.synthetic_dicom``), never read from patient
data. No Qt, no network beyond 127.0.0.1.
"""

from __future__ import annotations

import datetime
import html
import io
import logging
import os
import platform
import socket
import sys
import tempfile
import time
import traceback
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any, Callable

import numpy as np

from app import __version__
from app.core.config import Config
from app.core.models import ModelSpec, ModelSpecs, ProbeKnobs, default_specs
from app.core.synthetic_dicom import base_dataset, save_part10, set_pixels, synthetic_cxr, synthetic_head_ct

__all__ = ["Check", "Latency", "SelfTestOptions", "SelfTestReport", "report_dir", "run_cli", "run_self_test",
           "synthetic_cxr", "synthetic_head_ct", "write_html"]

log = logging.getLogger(__name__)

PASS, FAIL, WARN, INFO = "PASS", "FAIL", "WARN", "INFO"
SELFTEST_AE = "FL_SELFTEST"
Writer = Callable[[str], Any]


@dataclass
class Check:
    """One line of the report."""

    name: str
    status: str
    detail: str = ""
    seconds: float | None = None


@dataclass
class Latency:
    """Measured cost of one model on one device (seconds)."""

    model: str
    device: str
    device_name: str
    compile_s: float
    first_s: float
    median_s: float
    runs: int
    note: str = ""


@dataclass
class SelfTestOptions:
    """Knobs for tests and slow machines; the defaults are what IT runs."""

    chexnet_runs: int = 5            # timed runs after the first (warm-up) run, for models that repeat
    blastct_members: int | None = None  # ensemble members to compile; None: the whole ensemble
    devices: list[str] | None = None  # None: every device OpenVINO reports
    report_dir: Path | None = None    # None: report_dir(config)


@dataclass
class SelfTestReport:
    version: str
    started_at: str
    host: str
    environment: dict[str, str] = field(default_factory=dict)
    checks: list[Check] = field(default_factory=list)
    latencies: list[Latency] = field(default_factory=list)
    html_path: Path | None = None

    @property
    def failed(self) -> list[Check]:
        return [c for c in self.checks if c.status == FAIL]

    @property
    def ok(self) -> bool:
        return not self.failed

    def to_text(self) -> str:
        out = io.StringIO()
        out.write(f"FirstLook {self.version} self-test, {self.started_at}, host {self.host}\n")
        for key, value in self.environment.items():
            out.write(f"  {key}: {value}\n")
        out.write("\n")
        width = max([len(c.name) for c in self.checks] + [10])
        for c in self.checks:
            took = f"  ({c.seconds:.2f} s)" if c.seconds is not None else ""
            out.write(f"{c.status:4}  {c.name:{width}}  {c.detail}{took}\n")
        if self.latencies:
            out.write("\nLatency per model per device (seconds; first run includes warm-up)\n")
            out.write(f"  {'model':9} {'device':8} {'compile':>8} {'first':>8} {'median':>8} {'runs':>5}  device name\n")
            for lat in self.latencies:
                out.write(f"  {lat.model:9} {lat.device:8} {lat.compile_s:8.2f} {lat.first_s:8.3f} {lat.median_s:8.3f} "
                          f"{lat.runs:5d}  {lat.device_name}{'  ' + lat.note if lat.note else ''}\n")
        out.write("\n")
        if self.ok:
            out.write(f"RESULT: PASS ({len(self.checks)} checks)\n")
        else:
            names = "; ".join(c.name for c in self.failed)
            out.write(f"RESULT: FAIL ({len(self.failed)} of {len(self.checks)} checks failed): {names}\n")
        return out.getvalue()

    def to_html(self) -> str:
        e = html.escape
        colour = {PASS: "#1b7f2a", FAIL: "#b00020", WARN: "#a86400", INFO: "#555"}
        rows = "\n".join(
            f"<tr><td style='color:{colour.get(c.status, '#000')};font-weight:bold'>{e(c.status)}</td>"
            f"<td>{e(c.name)}</td><td>{e(c.detail)}</td>"
            f"<td style='text-align:right'>{'' if c.seconds is None else f'{c.seconds:.2f}'}</td></tr>"
            for c in self.checks)
        lat_rows = "\n".join(
            f"<tr><td>{e(x.model)}</td><td>{e(x.device)}</td><td>{e(x.device_name)}</td>"
            f"<td style='text-align:right'>{x.compile_s:.2f}</td><td style='text-align:right'>{x.first_s:.3f}</td>"
            f"<td style='text-align:right'>{x.median_s:.3f}</td><td style='text-align:right'>{x.runs}</td>"
            f"<td>{e(x.note)}</td></tr>" for x in self.latencies)
        env = "".join(f"<tr><th style='text-align:left'>{e(k)}</th><td>{e(v)}</td></tr>"
                      for k, v in self.environment.items())
        verdict = ("<p style='color:#1b7f2a;font-size:1.4em'><b>PASS</b>: every check passed.</p>" if self.ok else
                   f"<p style='color:#b00020;font-size:1.4em'><b>FAIL</b>: "
                   f"{e('; '.join(c.name for c in self.failed))}</p>")
        return f"""<!DOCTYPE html>
<html><head><meta charset="utf-8"><title>FirstLook self-test {e(self.started_at)}</title>
<style>body{{font-family:sans-serif;margin:2em}} table{{border-collapse:collapse;margin-bottom:1.5em}}
td,th{{border:1px solid #ccc;padding:4px 8px;vertical-align:top}}</style></head>
<body><h1>FirstLook {e(self.version)} self-test</h1>
<p>{e(self.started_at)} on {e(self.host)}</p>{verdict}
<table>{env}</table>
<h2>Checks</h2>
<table><tr><th>status</th><th>check</th><th>detail</th><th>seconds</th></tr>
{rows}</table>
<h2>Latency per model per device (seconds)</h2>
<table><tr><th>model</th><th>device</th><th>device name</th><th>compile</th><th>first run</th><th>median</th>
<th>runs</th><th>note</th></tr>
{lat_rows}</table>
<p>Samples are synthetic images generated by FirstLook; results on them say nothing about diagnostic accuracy.</p>
</body></html>
"""


def report_dir(config: Config) -> Path:
    """Where the HTML report goes: next to the logs. The installed service logs to
    /var/log/firstlook (FIRSTLOOK_LOG_DIR, set by the unit and firstlookctl); otherwise
    ``<data_dir>/logs``."""
    env = os.environ.get("FIRSTLOOK_LOG_DIR")
    return Path(env) if env else config.data_dir / "logs"


# -- the checks ----------------------------------------------------------------------------

class _Runner:
    def __init__(self, config: Config, options: SelfTestOptions, report: SelfTestReport, work: Path,
                 specs: ModelSpecs) -> None:
        self.config = config
        self.options = options
        self.report = report
        self.work = work
        self.specs = specs
        self.knobs = ProbeKnobs(runs=options.chexnet_runs, members=options.blastct_members)
        self.core: Any = None
        self.devices: list[Any] = []
        self.loaded: dict[str, Any] = {}
        self.samples: dict[str, list[Path]] = {}  # model name -> its synthetic series

    def add(self, name: str, status: str, detail: str = "", seconds: float | None = None) -> Check:
        check = Check(name, status, detail, seconds)
        self.report.checks.append(check)
        log.debug("self-test %s %s: %s", status, name, detail)
        return check

    def guarded(self, name: str, fn: Callable[[], tuple[str, str]]) -> bool:
        """Run one check; an exception is that check's FAIL, never the end of the self-test."""
        start = time.perf_counter()
        try:
            status, detail = fn()
        except Exception as exc:  # the report must name what failed, not print a traceback
            log.debug("self-test check %s raised\n%s", name, traceback.format_exc())
            status, detail = FAIL, f"{exc.__class__.__name__}: {str(exc).splitlines()[0][:300] if str(exc) else ''}"
        self.add(name, status, detail, time.perf_counter() - start)
        return status != FAIL

    # environment and runtime
    def runtime(self) -> None:
        env = self.report.environment
        env["program"] = (f"bundle {Path(sys.executable).resolve().parent}" if getattr(sys, "frozen", False)
                          else f"source, Python {platform.python_version()} ({sys.executable})")
        env["system"] = f"{platform.system()} {platform.release()} {platform.machine()}"
        env["configuration"] = f"data {self.config.data_dir}; packs {self.config.packs_dir}; node {self.config.ae_title} " \
                               f"on {self.config.bind}:{self.config.port}"

        def check() -> tuple[str, str]:
            import openvino as ov

            from inference.devices import available_devices

            env["openvino"] = ov.get_version()
            self.core = ov.Core()  # no compile cache: compile times below are honest
            self.devices = [d for d in available_devices(self.core)
                            if self.options.devices is None or d.name in self.options.devices]
            names = ", ".join(f"{d.name} ({d.full_name})" for d in self.devices)
            if not any(d.name.startswith("CPU") for d in self.devices) and self.options.devices is None:
                return FAIL, f"OpenVINO lists no CPU device (found: {names or 'none'}); the bundle's CPU plugin is missing"
            return PASS, f"devices: {names or 'none'}"

        self.guarded("openvino runtime", check)
        env["devices"] = ", ".join(f"{d.name} = {d.full_name}" for d in self.devices) or "none"
        if self.core is not None and not any(d.name.startswith("GPU") for d in self.devices):
            plugin = self._gpu_plugin_state()
            render = sorted(Path("/dev/dri").glob("renderD*")) if Path("/dev/dri").is_dir() else []
            if render and self.options.devices is None:
                self.add("intel gpu", WARN, f"{render[0]} exists but OpenVINO lists no GPU ({plugin}): install the Intel "
                         "GPU compute runtime (intel-opencl-icd) and add the user to the 'render' group; models run on CPU")
            else:
                self.add("intel gpu", INFO, f"no GPU render node on this machine; models run on CPU ({plugin})")

    def _gpu_plugin_state(self) -> str:
        """Tell 'GPU plugin missing from the install' from 'no GPU driver' (libOpenCL.so.1)."""
        try:
            self.core.get_versions("GPU")
        except Exception as exc:
            text = str(exc).strip().splitlines()[-1] if str(exc).strip() else exc.__class__.__name__
            if "Cannot load library" in text and '": ' in text:
                return "GPU plugin bundled, cannot load here: " + text.split('": ', 1)[1][:200]
            return f"GPU plugin not usable: {text[:200]}"
        return "GPU plugin bundled and loads; no GPU device found"

    def decoders(self) -> None:
        """Each pylibjpeg decoder the bundle must carry decodes a sample it (or Pillow) encoded."""
        from pydicom.uid import JPEG2000Lossless, JPEGBaseline8Bit, RLELossless

        rng = np.random.default_rng(1)
        base16 = (np.add.outer(np.arange(64), np.arange(64)) * 16 + rng.integers(0, 16, (64, 64))).astype(np.uint16)

        def lossless(uid: Any) -> Callable[[], tuple[str, str]]:
            def check() -> tuple[str, str]:
                ds = base_dataset("OT", "1.2.840.10008.5.1.4.1.1.7", "1.2.3", "1.2.3.4", "SELFTEST^CODEC")
                set_pixels(ds, base16, bits_stored=12, signed=False)
                save_part10(ds, self.work / "codec.dcm")
                ds.compress(uid, encoding_plugin="pylibjpeg")
                ds.pixel_array_options(decoding_plugin="pylibjpeg")
                got = ds.pixel_array
                if not np.array_equal(got, base16):
                    return FAIL, "decoded pixels differ from the encoded ones"
                return PASS, f"{uid.name}: encoded and decoded {got.shape[0]}x{got.shape[1]}, identical"
            return check

        def baseline() -> tuple[str, str]:
            from PIL import Image
            from pydicom.encaps import encapsulate
            from pydicom.uid import JPEGBaseline8Bit as jpeg

            pixels8 = (base16 >> 4).astype(np.uint8)
            buf = io.BytesIO()
            Image.fromarray(pixels8).save(buf, format="JPEG", quality=95)
            ds = base_dataset("OT", "1.2.840.10008.5.1.4.1.1.7", "1.2.3", "1.2.3.4", "SELFTEST^CODEC")
            set_pixels(ds, pixels8.astype(np.uint16), bits_stored=8, signed=False)
            ds.BitsAllocated, ds.BitsStored, ds.HighBit = 8, 8, 7
            ds.PixelData = encapsulate([buf.getvalue()])
            ds["PixelData"].VR = "OB"
            save_part10(ds, self.work / "jpeg.dcm")
            ds.file_meta.TransferSyntaxUID = jpeg
            ds.pixel_array_options(decoding_plugin="pylibjpeg")
            got = ds.pixel_array.astype(np.int16)
            err = float(np.abs(got - pixels8).mean())
            if got.shape != pixels8.shape or err > 3:
                return FAIL, f"decoded image differs (shape {got.shape}, mean error {err:.1f})"
            return PASS, f"{JPEGBaseline8Bit.name}: decoded, mean error {err:.2f} grey levels"

        self.guarded("decoder pylibjpeg-libjpeg", baseline)
        self.guarded("decoder pylibjpeg-openjpeg", lossless(JPEG2000Lossless))
        self.guarded("decoder pylibjpeg-rle", lossless(RLELossless))

    def tls(self) -> None:
        if self.config.tls_cert is None:
            self.add("tls certificates", INFO, "DICOM TLS not configured (tls_cert/tls_key unset)")
            return

        def check() -> tuple[str, str]:
            from app.core.config import ConfigError
            from dicom_node.tls import server_context

            try:
                context = server_context(self.config)  # exactly what the node loads at start
            except ConfigError as exc:
                return FAIL, str(exc)
            assert context is not None
            detail = f"{self.config.tls_cert} and its key load (TLS port {self.config.tls_port}"
            detail += ", plaintext port closed)" if self.config.tls_only else f", plaintext port {self.config.port} also open)"
            if self.config.tls_ca is not None:
                detail += f"; client certificates required, issued by {self.config.tls_ca}"
            return PASS, detail

        self.guarded("tls certificates", check)

    def data_dir(self) -> None:
        def check() -> tuple[str, str]:
            target = self.config.data_dir
            probe = target
            while not probe.exists() and probe != probe.parent:
                probe = probe.parent
            if not os.access(probe, os.W_OK | os.X_OK):
                return FAIL, f"{probe} is not writable by this user ({os.getuid()})"
            free_mb = os.statvfs(probe).f_bavail * os.statvfs(probe).f_frsize >> 20
            state = "exists" if target.exists() else f"will be created under {probe}"
            if free_mb < self.config.min_free_mb:
                return FAIL, f"{target} {state}; only {free_mb} MB free, below min_free_mb {self.config.min_free_mb}"
            return PASS, f"{target} {state}, writable, {free_mb} MB free"

        self.guarded("data folder", check)

    def packs(self) -> None:
        for spec in self.specs:
            def check(name: str = spec.name) -> tuple[str, str]:
                from inference.errors import PackError
                from inference.packs import load_pack

                pack_dir = self.config.packs_dir / name
                if not pack_dir.is_dir():
                    raise PackError(name, f"not installed in {self.config.packs_dir}")
                pack = load_pack(pack_dir, verify=True)
                self.loaded[name] = pack
                size = sum((pack_dir / f).stat().st_size for f in pack.manifest["files"]) / 1e6
                flag = "validated" if pack.validated else "NOT VALIDATED (not for diagnosis)"
                return PASS, f"{pack.version}, {flag}; {len(pack.manifest['files'])} files, {size:.1f} MB, SHA-256 verified"

            self.guarded(f"pack {spec.name}", check)

    def make_samples(self) -> None:
        def check() -> tuple[str, str]:
            described = []
            for spec in self.specs:
                if spec.self_test is not None:
                    files = spec.self_test.make_sample(self.work / "samples")
                    self.samples[spec.name] = files
                    described.append(spec.self_test.describe_sample(files))
            return PASS, f"{' and '.join(described)} generated"

        self.guarded("synthetic samples", check)

    def models(self) -> None:
        for device in self.devices:
            for spec in self.specs:
                if spec.name in self.loaded and self.samples.get(spec.name):
                    self._exercise(spec, device)

    def _compiled_on(self, runtime: Any, device: str) -> str | None:
        """Why the model is not on ``device`` (CompiledModel falls back to CPU), or None."""
        note = getattr(runtime, "fallback_note", None)
        used = str(getattr(runtime, "device", device))
        if note or used.split(":")[0] != device.split(":")[0]:
            return note or f"ran on {used} instead of {device}"
        return None

    def _exercise(self, spec: ModelSpec, device: Any) -> None:
        """Compile the model on the device, then run its synthetic sample and time it."""
        probe = spec.self_test
        assert probe is not None
        state: dict[str, Any] = {}

        def compile_() -> tuple[str, str]:
            t0 = time.perf_counter()
            model = probe.compile(self.loaded[spec.name], self.core, device.name, self.knobs)
            state["compile"] = time.perf_counter() - t0
            why = self._compiled_on(model, device.name)
            if why:
                close = getattr(model, "close", None)
                if close is not None:
                    close()
                return FAIL, why
            state["model"] = model
            return PASS, probe.compiled_detail(model, state["compile"])

        if not self.guarded(f"compile {spec.name} on {device.name}", compile_):
            return

        def run() -> tuple[str, str]:
            model = state["model"]
            outcome = probe.exercise(model, self.samples[spec.name], self.knobs)
            if outcome.problem is not None:
                return FAIL, outcome.problem
            why = self._compiled_on(model, device.name)
            if why:
                return FAIL, why
            compile_s = outcome.compile_s if outcome.compile_s is not None else state["compile"]
            self.report.latencies.append(Latency(spec.name, device.name, device.full_name, compile_s, outcome.first_s,
                                                 outcome.median_s, outcome.runs, outcome.note))
            return PASS, outcome.detail

        self.guarded(f"run {spec.name} on {device.name}", run)

    def node(self) -> None:
        def check() -> tuple[str, str]:
            from app.core.store import StudyStore
            from dicom_node.scp import StorageSCP
            from dicom_node.scu import echo, send_files

            sample = next((files[0] for files in self.samples.values() if files), None)
            if sample is None:
                return FAIL, "no sample to send"
            store_dir = self.work / "node-data"
            # Plaintext only: the TLS files have their own check, and the configured tls_port may
            # be held by the running service.
            node_config = replace(self.config, bind="127.0.0.1", port=0, data_dir=store_dir, allow_ae=[SELFTEST_AE],
                                  allow_ip=["127.0.0.1"], min_free_mb=0, tls_cert=None, tls_key=None, tls_ca=None,
                                  tls_only=False)
            store = StudyStore(store_dir)
            scp = StorageSCP(node_config, store)
            scp.start()
            try:
                host, port = scp.address
                t0 = time.perf_counter()
                echoed = echo(host, port, node_config.ae_title, calling_ae=SELFTEST_AE)
                statuses = send_files(host, port, node_config.ae_title, [sample], calling_ae=SELFTEST_AE)
                took = time.perf_counter() - t0
            finally:
                scp.stop(timeout=10)
            try:
                studies = store.list_studies()
            finally:
                store.close()
            if echoed != 0:
                return FAIL, f"C-ECHO to {host}:{port} answered {echoed}"
            if statuses != [0]:
                return FAIL, f"C-STORE to {host}:{port} answered {[hex(s) if s >= 0 else s for s in statuses]}"
            if len(studies) != 1 or studies[0].n_instances != 1:
                return FAIL, f"the store lists {len(studies)} studies after one C-STORE"
            return PASS, (f"{node_config.ae_title} on {host}:{port}: C-ECHO and C-STORE from {SELFTEST_AE} accepted, "
                          f"stored and indexed in {took * 1000:.0f} ms")

        self.guarded("dicom node (loopback)", check)

        def port() -> tuple[str, str]:
            ports = [] if self.config.tls_only else [self.config.port]
            if self.config.tls_cert is not None:
                ports.append(self.config.tls_port)
            notes = []
            for number in ports:
                with socket.socket(socket.AF_INET6 if ":" in self.config.bind else socket.AF_INET) as sock:
                    try:
                        sock.bind((self.config.bind, number))
                        notes.append(f"{self.config.bind}:{number} is free for the node")
                    except OSError as exc:
                        notes.append(f"{self.config.bind}:{number} is in use ({exc.strerror}); "
                                     "expected while the FirstLook service runs")
            return INFO, "; ".join(notes)

        self.guarded("configured node port", port)

        def api_port() -> tuple[str, str]:
            where = f"{self.config.api_bind}:{self.config.api_port}"
            scheme = "https" if self.config.api_tls else "http"
            with socket.socket(socket.AF_INET6 if ":" in self.config.api_bind else socket.AF_INET) as sock:
                try:
                    sock.bind((self.config.api_bind, self.config.api_port))
                    return INFO, f"{where} is free for the HTTP API ({scheme})"
                except OSError as exc:
                    return INFO, (f"{where} is in use ({exc.strerror}); expected while the FirstLook service "
                                  f"serves its API there ({scheme}://{where}/status)")

        self.guarded("configured API port", api_port)


def run_self_test(config: Config, options: SelfTestOptions | None = None,
                  specs: ModelSpecs | None = None) -> SelfTestReport:
    """Run every check and return the report (nothing printed, nothing written)."""
    options = options or SelfTestOptions()
    specs = specs if specs is not None else default_specs()
    report = SelfTestReport(version=__version__,
                            started_at=datetime.datetime.now(datetime.timezone.utc).strftime("%Y-%m-%d %H:%M:%S UTC"),
                            host=socket.gethostname())
    with tempfile.TemporaryDirectory(prefix="firstlook-selftest-") as tmp:
        runner = _Runner(config, options, report, Path(tmp), specs)
        runner.runtime()
        runner.decoders()
        runner.tls()
        runner.data_dir()
        runner.packs()
        runner.make_samples()
        if runner.core is not None:
            runner.models()
        runner.node()
    return report


def write_html(report: SelfTestReport, directory: Path) -> Path:
    """selftest-<UTC time>.html plus selftest-latest.html in ``directory``."""
    directory.mkdir(parents=True, exist_ok=True)
    stamp = datetime.datetime.now(datetime.timezone.utc).strftime("%Y%m%d-%H%M%S")
    path = directory / f"selftest-{stamp}.html"
    body = report.to_html()
    path.write_text(body, encoding="utf-8")
    (directory / "selftest-latest.html").write_text(body, encoding="utf-8")
    return path


def run_cli(config: Config, options: SelfTestOptions | None = None, write: Writer = sys.stdout.write,
            specs: ModelSpecs | None = None) -> int:
    """``firstlook --self-test``: print the report, save the HTML, exit 0 only if all passed."""
    options = options or SelfTestOptions()
    for noisy in ("pynetdicom", "openjpeg"):  # per-association and codec chatter
        logging.getLogger(noisy).setLevel(max(logging.WARNING, logging.getLogger(noisy).getEffectiveLevel()))
    report = run_self_test(config, options, specs if specs is not None else default_specs())
    target = options.report_dir or report_dir(config)
    try:
        report.html_path = write_html(report, target)
    except OSError as exc:
        report.checks.append(Check("html report", FAIL, f"cannot write to {target}: {exc.strerror or exc}"))
    write(report.to_text())
    if report.html_path is not None:
        write(f"HTML report: {report.html_path}\n")
    return 0 if report.ok else 1
