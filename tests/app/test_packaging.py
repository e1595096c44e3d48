"""The offline installer end to end: build the PyInstaller bundle from this interpreter's
packages, unpack it as IT would, install it into a staging root, and run the *frozen* program:
self-test without a network, headless node receiving from DCMTK storescu, the desktop under
Xvfb (screenshot in tests/artifacts/).

One build per module (fixture) in a temporary work folder, so concurrent runs never share
PyInstaller's cache; set FIRSTLOOK_BUNDLE_WORK to a folder to make local re-runs incremental.
Timings and sizes go to tests/artifacts/packaging.json.
"""

from __future__ import annotations

import ctypes
import ctypes.util
import json
import os
import re
import shutil
import signal
import subprocess
import sys
import tarfile
import time
import tomllib
from dataclasses import dataclass, field
from pathlib import Path
from typing import Iterator

import pytest

from app import __version__
from app.core.config import load_config
from app.core.models import default_specs
from app.commands.selftest import synthetic_cxr
from inference.packs import load_pack
from tests.support import REPO, free_port
from tests.support.node_helpers import dcmtk, dcmtk_env

pytestmark = [pytest.mark.slow, pytest.mark.timeout(1800)]

MODEL_NAMES = default_specs().names
ARTIFACTS = REPO / "tests" / "artifacts"
PREFIX = "/opt/firstlook"
# Guards against bloat (e.g. torch or a second Qt creeping in); measured ~170 / ~400 MiB.
MAX_PACKED_MIB = 260
MAX_UNPACKED_MIB = 520

# Run inside `unshare -n`: bring up loopback only (no other interface exists in the new
# network namespace), prove there is no route out, then exec the program.
LOOPBACK_ONLY = r"""
import errno, fcntl, os, socket, struct, sys
s = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
flags = struct.unpack("16sh", fcntl.ioctl(s, 0x8913, struct.pack("16sh", b"lo", 0)))[1]
fcntl.ioctl(s, 0x8914, struct.pack("16sh", b"lo", flags | 1))
names = sorted(n for _, n in socket.if_nameindex())
assert names == ["lo"], names
try:
    socket.create_connection(("192.0.2.1", 80), timeout=2)
    sys.exit("network reachable inside the namespace")
except OSError as exc:
    assert exc.errno in (errno.ENETUNREACH, errno.EHOSTUNREACH), exc
sys.stderr.write("network namespace: only loopback, no route out\n")
sys.stderr.flush()
os.execv(sys.argv[1], sys.argv[1:])
"""


@dataclass
class Bundle:
    archive: Path
    unpacked: Path   # firstlook-<version>/ as extracted from the archive
    root: Path       # install.sh --root staging
    timings: dict[str, float] = field(default_factory=dict)

    @property
    def program(self) -> Path:
        return self.root / PREFIX.lstrip("/") / "firstlook"


def _record(key: str, value: object) -> None:
    ARTIFACTS.mkdir(parents=True, exist_ok=True)
    path = ARTIFACTS / "packaging.json"
    data = json.loads(path.read_text()) if path.exists() else {}
    data[key] = value
    path.write_text(json.dumps(data, indent=2) + "\n")


def _tree_bytes(root: Path) -> int:
    return sum(p.stat().st_size for p in root.rglob("*") if p.is_file() and not p.is_symlink())


@pytest.fixture(scope="module")
def bundle(packs_dir: Path, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Bundle]:
    out = tmp_path_factory.mktemp("dist")
    work = Path(os.environ.get("FIRSTLOOK_BUNDLE_WORK") or tmp_path_factory.mktemp("bundle-work"))
    t0 = time.monotonic()
    done = subprocess.run([sys.executable, str(REPO / "packaging" / "build_bundle.py"), "--packs", str(packs_dir),
                           "--out", str(out), "--work", str(work)], cwd=REPO, capture_output=True, text=True,
                          timeout=1500)
    build_s = time.monotonic() - t0
    assert done.returncode == 0, f"bundle build failed:\n{done.stdout[-3000:]}\n{done.stderr[-6000:]}"
    archives = list(out.glob("firstlook-*-linux-x86_64.tar.gz"))
    assert len(archives) == 1, list(out.iterdir())
    t1 = time.monotonic()
    unpack_dir = tmp_path_factory.mktemp("unpacked")
    subprocess.run(["tar", "-xzf", str(archives[0]), "-C", str(unpack_dir)], check=True, timeout=600)
    (unpacked,) = unpack_dir.iterdir()
    root = tmp_path_factory.mktemp("root")
    installed = subprocess.run([str(unpacked / "install.sh"), "--root", str(root)], capture_output=True, text=True,
                               timeout=600)
    assert installed.returncode == 0, installed.stdout + installed.stderr
    timings = {"build_s": round(build_s, 1), "unpack_and_install_s": round(time.monotonic() - t1, 1)}
    _record("timings", timings)
    yield Bundle(archives[0], unpacked, root, timings)
    # About 2 GB per run; pytest keeps several base temp folders, so free it now.
    for folder in (out, unpack_dir, root, *([] if os.environ.get("FIRSTLOOK_BUNDLE_WORK") else [work])):
        shutil.rmtree(folder, ignore_errors=True)


def _config(tmp_path: Path, **extra: object) -> Path:
    """A service-like configuration file in a temporary folder."""
    values = {"data_dir": str(tmp_path / "data"), "cache_dir": str(tmp_path / "cache"), "min_free_mb": 0,
              "bind": "127.0.0.1", **extra}
    lines = [f"{k} = {json.dumps(v)}" for k, v in values.items()]
    path = tmp_path / "firstlook.toml"
    path.write_text("\n".join(lines) + "\n")
    return path


def _env(tmp_path: Path, **extra: str) -> dict[str, str]:
    """What a service or a fresh login has: no proxies, no Python variables, own HOME."""
    home = tmp_path / "home"
    home.mkdir(exist_ok=True)
    return {"PATH": "/usr/local/bin:/usr/bin:/bin", "HOME": str(home), "LANG": "C.UTF-8", **extra}


def test_archive_ships_runtime_plugins_and_runtime_packs_but_not_torch_or_nncf(bundle: Bundle) -> None:
    assert bundle.archive.name == f"firstlook-{__version__}-linux-x86_64.tar.gz"
    digest = (bundle.archive.parent / (bundle.archive.name + ".sha256")).read_text().split()[0]
    assert digest == subprocess.run(["sha256sum", str(bundle.archive)], capture_output=True, text=True).stdout.split()[0]
    with tarfile.open(bundle.archive) as tar:
        names = tar.getnames()
    top = f"firstlook-{__version__}"
    assert all(n == top or n.startswith(top + "/") for n in names)
    parts = {part.lower() for n in names for part in n.split("/")}
    for banned in ("torch", "nncf", "functorch", "torchgen", "openvino_telemetry", "requests"):
        assert not any(p == banned or p.startswith((banned + "-", banned + ".", "lib" + banned)) for p in parts), banned
    internal = f"{top}/firstlook/_internal"
    for required in ("openvino/libs/libopenvino_intel_cpu_plugin.so", "openvino/libs/libopenvino_intel_gpu_plugin.so",
                     "openvino/libs/libopenvino_auto_plugin.so", "PySide6/Qt/plugins/platforms/libqxcb.so",
                     "PySide6/Qt/plugins/platforms/libqoffscreen.so"):
        assert f"{internal}/{required}" in names, required
    for decoder in (r"_libjpeg\..*\.so", r"_openjpeg\..*\.so", r"rle/rle\..*\.so"):
        assert any(re.fullmatch(f"{re.escape(internal)}/{decoder}", n) for n in names), decoder
    assert not any("/Qt/plugins/platforms/libqwayland" in n or "/Qt/translations/" in n for n in names)
    for script in ("install.sh", "uninstall.sh", "SHA256SUMS", "VERSION", "docs/install.md",
                   "share/firstlook.service", "share/firstlook.desktop", "share/firstlookctl"):
        assert f"{top}/{script}" in names, script
    # Packs: hash-verified in the bundle, with exactly the IR each runtime runs (CheXNet INT8;
    # BLAST-CT whatever its fidelity gate chose) and no other precision's files.
    packs = bundle.unpacked / "firstlook" / "_internal" / "model-packs"
    assert sorted(p.name for p in packs.iterdir()) == sorted(MODEL_NAMES)
    for name in MODEL_NAMES:
        pack = load_pack(packs / name, verify=True)
        runtime = pack.manifest.get("runtime") or {}
        wanted = runtime.get("ir") or "int8"
        assert pack.name == name and all(set(m.files) <= {wanted, runtime.get("precision")} for m in pack.members)
        assert all(wanted in m.files for m in pack.members), name
        folders = {p.name for p in (packs / name).iterdir() if p.is_dir()}
        assert folders == {wanted}, (name, folders)
    packed_mib = bundle.archive.stat().st_size / 2**20
    unpacked_mib = _tree_bytes(bundle.unpacked) / 2**20
    _record("size_mib", {"packed": round(packed_mib, 1), "unpacked": round(unpacked_mib, 1),
                         "packs": round(_tree_bytes(packs) / 2**20, 1)})
    assert packed_mib < MAX_PACKED_MIB and unpacked_mib < MAX_UNPACKED_MIB, (packed_mib, unpacked_mib)


def test_install_upgrade_keeps_config_and_data_and_uninstall_keeps_them_unless_purged(bundle: Bundle,
                                                                                       tmp_path: Path) -> None:
    root = tmp_path / "root"
    run = lambda *args: subprocess.run([*map(str, args), "--root", str(root)], capture_output=True, text=True,  # noqa: E731
                                       timeout=600)
    first = run(bundle.unpacked / "install.sh")
    assert first.returncode == 0, first.stderr
    assert "archive verified" in first.stdout and "wrote" in first.stdout
    etc = root / "etc" / "firstlook" / "firstlook.toml"
    config = load_config(etc)  # the shipped default is a valid service configuration
    assert config.data_dir == Path("/var/lib/firstlook") and config.port == 11112 and config.bind == "0.0.0.0"
    unit = (root / "etc/systemd/system/firstlook.service").read_text()
    assert f"ExecStart={PREFIX}/firstlook --headless --config /etc/firstlook/firstlook.toml" in unit
    assert "User=firstlook" in unit and "@PREFIX@" not in unit
    assert f"Exec={PREFIX}/firstlook" in (root / "usr/share/applications/firstlook.desktop").read_text()
    assert f"{PREFIX}/firstlook --config /etc/firstlook/firstlook.toml" in (root / "usr/local/sbin/firstlookctl").read_text()
    assert os.readlink(root / "usr/local/bin/firstlook") == f"{PREFIX}/firstlook"
    assert (root / PREFIX.lstrip("/") / "uninstall.sh").is_file()

    # Upgrade: an edited config and stored studies survive; the program is replaced.
    etc.write_text(etc.read_text().replace('allow_ae = []', 'allow_ae = ["CT01"]'))
    study = root / "var/lib/firstlook/studies/1.2.3/x.dcm"
    study.parent.mkdir(parents=True)
    study.write_bytes(b"DICM")
    stale = root / PREFIX.lstrip("/") / "_internal" / "stale-from-old-version"
    stale.write_text("old")
    second = run(bundle.unpacked / "install.sh")
    assert second.returncode == 0, second.stderr
    assert "kept existing" in second.stdout
    assert tomllib.loads(etc.read_text())["allow_ae"] == ["CT01"]
    assert study.read_bytes() == b"DICM" and not stale.exists()

    # A damaged copy of the archive is refused before anything is installed.
    doc = bundle.unpacked / "docs" / "install.md"
    original = doc.read_bytes()
    try:
        doc.write_bytes(original + b"\n")
        damaged = run(bundle.unpacked / "install.sh")
    finally:
        doc.write_bytes(original)
    assert damaged.returncode != 0 and "SHA256SUMS" in damaged.stderr

    removed = run(root / PREFIX.lstrip("/") / "uninstall.sh")
    assert removed.returncode == 0, removed.stderr
    assert not (root / PREFIX.lstrip("/")).exists() and not (root / "etc/systemd/system/firstlook.service").exists()
    assert not (root / "usr/local/bin/firstlook").is_symlink()
    assert etc.is_file() and study.is_file()  # config and data stay
    purged = run(bundle.unpacked / "uninstall.sh", "--purge")
    assert purged.returncode == 0, purged.stderr
    assert not etc.exists() and not study.exists()


def test_frozen_self_test_passes_without_network(bundle: Bundle, tmp_path: Path) -> None:
    probe = subprocess.run(["unshare", "-n", "true"], capture_output=True, text=True)
    assert probe.returncode == 0, (
        f"`unshare -n` is not permitted here ({probe.stderr.strip()}): the self-test cannot be proven offline "
        "on this machine; run the tests as root or in a container that allows network namespaces")
    config = _config(tmp_path)
    logs = tmp_path / "logs"
    t0 = time.monotonic()
    done = subprocess.run(["unshare", "-n", "--", sys.executable, "-c", LOOPBACK_ONLY, str(bundle.program),
                           "--config", str(config), "--self-test"],
                          capture_output=True, text=True, timeout=900, env=_env(tmp_path, FIRSTLOOK_LOG_DIR=str(logs)))
    took = time.monotonic() - t0
    ARTIFACTS.mkdir(parents=True, exist_ok=True)
    (ARTIFACTS / "selftest-frozen.txt").write_text(done.stdout + "\n--- stderr ---\n" + done.stderr[-20000:])
    _record("frozen_selftest_s", round(took, 1))
    assert "network namespace: only loopback, no route out" in done.stderr, done.stderr[-3000:]
    assert done.returncode == 0, done.stdout + done.stderr[-3000:]
    lines = done.stdout.splitlines()
    assert any(line.startswith("RESULT: PASS") for line in lines), done.stdout
    assert any("program: bundle" in line for line in lines)
    gpu = [line for line in lines if line[6:].startswith("intel gpu")] or [line for line in lines if "GPU" in line]
    # The GPU plugin ships and OpenVINO finds it: it either loads (a GPU or at least its driver
    # is here) or fails only for want of the machine's OpenCL driver, never "not registered".
    assert any("GPU plugin bundled" in line or "PASS  compile chexnet on GPU" in line for line in gpu), gpu
    assert any(f"packs {bundle.program.parent / '_internal' / 'model-packs'}" in line for line in lines), done.stdout
    assert "Traceback" not in done.stderr
    for model in MODEL_NAMES:
        assert any(line.startswith(f"PASS  run {model} on CPU") for line in lines), model
        rows = [line.split() for line in lines if line.split()[:2] == [model, "CPU"]]
        assert len(rows) == 1 and float(rows[0][4]) > 0, done.stdout  # median latency per model per device
    html = logs / "selftest-latest.html"
    assert html.is_file() and "<b>PASS</b>" in html.read_text()
    shutil.copy2(html, ARTIFACTS / "selftest-frozen.html")


def _wait_for(predicate, timeout: float, what: str, proc: subprocess.Popen | None = None,  # type: ignore[type-arg]
              log: Path | None = None) -> None:
    deadline = time.monotonic() + timeout
    while not predicate():
        if proc is not None and proc.poll() is not None:
            raise AssertionError(f"program exited ({proc.returncode}) while waiting for {what}:\n"
                                 f"{log.read_text()[-4000:] if log else ''}")
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out waiting for {what}:\n{log.read_text()[-4000:] if log else ''}")
        time.sleep(0.3)


def test_frozen_headless_receives_from_storescu_analyses_and_lists_the_study(bundle: Bundle, tmp_path: Path) -> None:
    import pydicom

    port = free_port()
    config = _config(tmp_path)
    data = tmp_path / "data"
    sample = synthetic_cxr(tmp_path / "send")
    study_uid = str(pydicom.dcmread(sample, stop_before_pixels=True).StudyInstanceUID)
    series_uid = str(pydicom.dcmread(sample, stop_before_pixels=True).SeriesInstanceUID)
    log = tmp_path / "headless.log"
    with open(log, "w") as err:
        proc = subprocess.Popen([str(bundle.program), "--config", str(config), "--headless", "--port", str(port),
                                 "--api-port", str(free_port()), "--allow-ae", "STORESCU", "--quiet-period", "1"],
                                stdout=err, stderr=subprocess.STDOUT, env=_env(tmp_path))
    try:
        def answers() -> bool:
            return subprocess.run([dcmtk("echoscu"), "-aet", "STORESCU", "-aec", "FIRSTLOOK", "127.0.0.1", str(port)],
                                  capture_output=True, env=dcmtk_env()).returncode == 0

        _wait_for(answers, 120, "C-ECHO", proc, log)
        sent = subprocess.run([dcmtk("storescu"), "-aet", "STORESCU", "-aec", "FIRSTLOOK", "127.0.0.1", str(port),
                               str(sample)], capture_output=True, text=True, env=dcmtk_env(), timeout=60)
        assert sent.returncode == 0, sent.stderr
        _wait_for(lambda: re.search(rf"series {re.escape(series_uid)}: \w+ \(done\)", log.read_text()) is not None,
                  300, "the CheXNet result", proc, log)
        proc.send_signal(signal.SIGTERM)
        proc.wait(timeout=90)
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
    text = log.read_text()
    ARTIFACTS.mkdir(parents=True, exist_ok=True)
    shutil.copy2(log, ARTIFACTS / "headless-frozen.log")
    assert proc.returncode == 0 and "stopped cleanly" in text and "Traceback" not in text, text[-4000:]
    assert "model chexnet 1.0.0 ready" in text and "model blast-ct" in text
    listed = subprocess.run([str(bundle.program), "--config", str(config), "studies", "--json"], capture_output=True,
                            text=True, timeout=120, env=_env(tmp_path))
    assert listed.returncode == 0, listed.stderr
    (study,) = json.loads(listed.stdout)
    assert study["study_uid"] == study_uid and study["calling_ae"] == "STORESCU" and study["n_instances"] == 1
    assert (data / "index.sqlite3").is_file()


# -- X11 helpers for the desktop test (libX11 through ctypes: no extra Debian package) ----------

def _x_window_names(display: str) -> list[bytes]:
    x = ctypes.CDLL(ctypes.util.find_library("X11") or "libX11.so.6")
    c_ulong_p = ctypes.POINTER(ctypes.c_ulong)
    x.XOpenDisplay.restype = ctypes.c_void_p
    x.XOpenDisplay.argtypes = [ctypes.c_char_p]
    x.XDefaultRootWindow.restype = ctypes.c_ulong
    x.XDefaultRootWindow.argtypes = [ctypes.c_void_p]
    x.XInternAtom.restype = ctypes.c_ulong
    x.XInternAtom.argtypes = [ctypes.c_void_p, ctypes.c_char_p, ctypes.c_int]
    x.XQueryTree.argtypes = [ctypes.c_void_p, ctypes.c_ulong, c_ulong_p, c_ulong_p,
                             ctypes.POINTER(c_ulong_p), ctypes.POINTER(ctypes.c_uint)]
    x.XGetWindowProperty.argtypes = [ctypes.c_void_p, ctypes.c_ulong, ctypes.c_ulong, ctypes.c_long, ctypes.c_long,
                                     ctypes.c_int, ctypes.c_ulong, c_ulong_p, ctypes.POINTER(ctypes.c_int), c_ulong_p,
                                     c_ulong_p, ctypes.POINTER(ctypes.POINTER(ctypes.c_ubyte))]
    x.XFree.argtypes = [ctypes.c_void_p]
    x.XCloseDisplay.argtypes = [ctypes.c_void_p]
    dpy = x.XOpenDisplay(display.encode())
    assert dpy, f"cannot open X display {display}"
    atoms = [x.XInternAtom(dpy, name, 0) for name in (b"_NET_WM_NAME", b"WM_NAME")]
    names: list[bytes] = []

    def walk(window: int) -> None:
        for atom in atoms:
            kind, fmt, count, after = ctypes.c_ulong(), ctypes.c_int(), ctypes.c_ulong(), ctypes.c_ulong()
            prop = ctypes.POINTER(ctypes.c_ubyte)()
            if x.XGetWindowProperty(dpy, window, atom, 0, 1024, 0, 0, ctypes.byref(kind), ctypes.byref(fmt),
                                    ctypes.byref(count), ctypes.byref(after), ctypes.byref(prop)) == 0 and prop:
                if count.value:
                    names.append(ctypes.string_at(prop, count.value))
                x.XFree(prop)
        root, parent = ctypes.c_ulong(), ctypes.c_ulong()
        children, n = c_ulong_p(), ctypes.c_uint()
        if x.XQueryTree(dpy, window, ctypes.byref(root), ctypes.byref(parent), ctypes.byref(children), ctypes.byref(n)):
            kids = [children[i] for i in range(n.value)]
            if children:
                x.XFree(children)
            for kid in kids:
                walk(kid)

    try:
        walk(x.XDefaultRootWindow(dpy))
    finally:
        x.XCloseDisplay(dpy)
    return names


GRAB = r"""
import sys
from PySide6.QtGui import QGuiApplication
app = QGuiApplication(["grab", "-platform", "xcb"])
pixmap = app.primaryScreen().grabWindow(0)
assert not pixmap.isNull() and pixmap.save(sys.argv[1], "PNG"), "screenshot failed"
"""


def test_frozen_desktop_opens_its_main_window_under_xvfb(bundle: Bundle, tmp_path: Path) -> None:
    import numpy as np
    from PIL import Image

    read_fd, write_fd = os.pipe()
    xvfb = subprocess.Popen(["Xvfb", "-displayfd", str(write_fd), "-screen", "0", "1600x1000x24", "-nolisten", "tcp"],
                            pass_fds=(write_fd,), stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    os.close(write_fd)
    app: subprocess.Popen | None = None  # type: ignore[type-arg]
    try:
        with os.fdopen(read_fd) as fh:
            display = ":" + fh.readline().strip()
        assert display != ":", "Xvfb did not report a display"
        log = tmp_path / "desktop.log"
        env = _env(tmp_path, DISPLAY=display, QT_QPA_PLATFORM="xcb", XDG_RUNTIME_DIR=str(tmp_path))
        with open(log, "w") as err:
            app = subprocess.Popen([str(bundle.program), "--config", str(_config(tmp_path)), "--port", str(free_port())],
                                   stdout=err, stderr=subprocess.STDOUT, env=env)
        # The window is shown before the service starts; the node's "listening" line follows it.
        _wait_for(lambda: "listening on" in log.read_text(), 180, "the desktop's service start", app, log)
        _wait_for(lambda: any(b"FirstLook" in n for n in _x_window_names(display)), 60, "the main window", app, log)
        time.sleep(2.0)  # let the worklist paint
        shot = ARTIFACTS / "frozen-desktop.png"
        ARTIFACTS.mkdir(parents=True, exist_ok=True)
        grabbed = subprocess.run([sys.executable, "-c", GRAB, str(shot)], env={**os.environ, "DISPLAY": display},
                                 capture_output=True, text=True, timeout=60)
        assert grabbed.returncode == 0, grabbed.stderr
        pixels = np.asarray(Image.open(shot).convert("L"), dtype=np.float64)
        assert pixels.shape == (1000, 1600)
        assert (pixels > 30).mean() > 0.2 and pixels.std() > 10, "the screenshot shows no window"
        assert app.poll() is None, log.read_text()[-3000:]
        assert "Traceback" not in log.read_text()
    finally:
        if app is not None and app.poll() is None:
            app.terminate()
            try:
                app.wait(timeout=30)
            except subprocess.TimeoutExpired:
                app.kill()
                app.wait()
        xvfb.terminate()
        xvfb.wait(timeout=30)
