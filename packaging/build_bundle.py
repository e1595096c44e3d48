#!/usr/bin/env python3
"""Build the offline installer: dist/firstlook-<version>-linux-x86_64.tar.gz.

Steps: check and stage the model packs (only the IR each runtime uses), freeze the app with
PyInstaller (packaging/firstlook.spec) using *this* interpreter's packages, check the
frozen folder (required plugins present, torch/nncf absent), add the install scripts,
service unit, desktop entry and docs, write SHA256SUMS, pack, and report the sizes.

Run it with the project venv's Python (``make bundle`` does). Never touches the network.
"""

from __future__ import annotations

import argparse
import hashlib
import json
import logging
import os
import re
import shutil
import subprocess
import sys
import tarfile
import time
from dataclasses import dataclass
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO))

from app.core.models import default_specs  # noqa: E402
from inference.errors import PackError  # noqa: E402
from inference.packs import MANIFEST, load_pack, sha256_file  # noqa: E402

MODEL_NAMES = default_specs().names  # the models the bundle ships packs for

log = logging.getLogger("build_bundle")

ARCH = "linux-x86_64"
# Anything matching these (as a path component prefix) in the frozen folder fails the build.
FORBIDDEN = ("torch", "nncf", "functorch", "torchgen", "libtorch", "libc10", "openvino_telemetry",
             "requests", "cryptography")
# Globs (relative to the frozen folder) that must match at least one file.
REQUIRED = (
    "firstlook",
    "_internal/openvino/libs/libopenvino.so*",
    "_internal/openvino/libs/libopenvino_intel_cpu_plugin.so",
    "_internal/openvino/libs/libopenvino_intel_gpu_plugin.so",
    "_internal/openvino/libs/libopenvino_auto_plugin.so",
    "_internal/openvino/libs/libopenvino_ir_frontend.so*",
    "_internal/PySide6/Qt/plugins/platforms/libqxcb.so",
    "_internal/PySide6/Qt/plugins/platforms/libqoffscreen.so",
    "_internal/_libjpeg*.so",
    "_internal/_openjpeg*.so",
    "_internal/rle/rle*.so",
    *(f"_internal/model-packs/{name}/{MANIFEST}" for name in MODEL_NAMES),
)
SHARE_FILES = ("firstlook.service", "firstlook.desktop", "firstlook.svg", "firstlookctl", "firstlook.logrotate",
               "firstlook.toml.default")


class BundleError(Exception):
    """The bundle cannot be built; the message says what to do."""


@dataclass
class BundleResult:
    archive: Path
    packed_bytes: int
    unpacked_bytes: int
    files: int
    seconds: dict[str, float]


def version() -> str:
    text = (REPO / "app" / "__init__.py").read_text(encoding="utf-8")
    match = re.search(r'__version__\s*=\s*"([^"]+)"', text)
    if not match:
        raise BundleError("app/__init__.py has no __version__")
    return match.group(1)


def runtime_irs(manifest: dict) -> set[str]:
    """Member IR keys the app runs: the pack's ``runtime`` block (e.g. BLAST-CT's FP32 IR with
    the bf16 hint when INT8 failed its fidelity gate), INT8 by default (CheXNet)."""
    runtime = manifest.get("runtime") or {}
    wanted = {str(v) for v in (runtime.get("ir"), runtime.get("precision")) if v} or {"int8"}
    present = {k for m in manifest["members"] for k in m if k != "name"}
    return wanted & present


def stage_packs(source: Path, target: Path) -> None:
    """Copy every pack with only the IR its runtime uses, and rewrite its manifest.

    The other precisions (the reference IR, a rejected INT8 candidate) stay in
    build/model-packs for the fidelity tests. Hashes are kept from the source manifest and
    re-verified on the copy.
    """
    if target.exists():
        shutil.rmtree(target)
    for name in MODEL_NAMES:
        pack_dir = source / name
        if not (pack_dir / MANIFEST).is_file():
            raise BundleError(f"model pack '{name}' is missing from {source}: build the packs first "
                              f"(`make models`, i.e. `firstlook build-models --out {source}`)")
        try:
            pack = load_pack(pack_dir, verify=True)
        except PackError as exc:
            raise BundleError(f"{exc}; rebuild it with `firstlook build-models --force`") from exc
        manifest = dict(pack.manifest)
        keep = runtime_irs(manifest)
        if not keep:
            raise BundleError(f"model pack '{name}': its members have no IR for the runtime precision "
                              f"{manifest.get('runtime')!r}")
        members = [{k: v for k, v in m.items() if k == "name" or k in keep} for m in manifest["members"]]
        dropped = {str(v).split("/", 1)[0] + "/" for m in manifest["members"] for k, v in m.items()
                   if k != "name" and k not in keep}
        files = {rel: sha for rel, sha in manifest["files"].items() if not rel.startswith(tuple(dropped))}
        for rel in files:
            dst = target / name / rel
            dst.parent.mkdir(parents=True, exist_ok=True)
            shutil.copy2(pack_dir / rel, dst)
        manifest["files"] = files
        manifest["members"] = members
        manifest["bundle"] = {"kept_ir": sorted(keep), "removed": sorted(dropped),
                              "source_manifest_sha256": sha256_file(pack_dir / MANIFEST)}
        (target / name).mkdir(parents=True, exist_ok=True)
        (target / name / MANIFEST).write_text(json.dumps(manifest, indent=2) + "\n", encoding="utf-8")
        load_pack(target / name, verify=True)
        log.info("pack %s %s staged: %d files, IR %s", name, pack.version, len(files), ", ".join(sorted(keep)))


def freeze(packs: Path, work: Path) -> Path:
    try:
        import PyInstaller  # noqa: F401
    except ImportError as exc:
        raise BundleError(f"PyInstaller is not installed for {sys.executable}: pip install -e '.[package]'") from exc
    env = {**os.environ, "FIRSTLOOK_BUNDLE_PACKS": str(packs)}
    cmd = [sys.executable, "-m", "PyInstaller", "--noconfirm", "--log-level", "WARN",
           "--distpath", str(work / "dist"), "--workpath", str(work / "pyinstaller"),
           str(REPO / "packaging" / "firstlook.spec")]
    log.info("freezing with %s", " ".join(cmd))
    done = subprocess.run(cmd, cwd=REPO, env=env)
    if done.returncode != 0:
        raise BundleError(f"PyInstaller failed (exit {done.returncode})")
    return work / "dist" / "firstlook"


def check_frozen(frozen: Path) -> None:
    missing = [pattern for pattern in REQUIRED if not list(frozen.glob(pattern))]
    if missing:
        raise BundleError(f"the frozen app lacks {', '.join(missing)}")
    bad = sorted({str(p.relative_to(frozen)) for p in frozen.rglob("*")
                  if any(p.name.lower().startswith(f) for f in FORBIDDEN)})
    if bad:
        raise BundleError(f"the frozen app contains what must not ship: {', '.join(bad[:10])}")


def tree_size(root: Path) -> tuple[int, int]:
    files = [p for p in root.rglob("*") if p.is_file() and not p.is_symlink()]
    return sum(p.stat().st_size for p in files), len(files)


def assemble(frozen: Path, stage: Path, ver: str) -> Path:
    root = stage / f"firstlook-{ver}"
    if stage.exists():
        shutil.rmtree(stage)
    root.mkdir(parents=True)
    shutil.copytree(frozen, root / "firstlook", symlinks=True)
    for script in ("install.sh", "uninstall.sh"):
        shutil.copy2(REPO / "packaging" / script, root / script)
        (root / script).chmod(0o755)
    (root / "share").mkdir()
    for name in SHARE_FILES:
        shutil.copy2(REPO / "packaging" / name, root / "share" / name)
    (root / "share" / "firstlookctl").chmod(0o755)
    (root / "docs").mkdir()
    shutil.copy2(REPO / "docs" / "install.md", root / "docs" / "install.md")
    glibc = os.confstr("CS_GNU_LIBC_VERSION") or "glibc unknown"
    (root / "VERSION").write_text(f"firstlook {ver}\narch {ARCH}\nbuilt_with {glibc}\n"
                                  f"built_at {time.strftime('%Y-%m-%dT%H:%M:%SZ', time.gmtime())}\n")
    lines = []
    for path in sorted(p for p in root.rglob("*") if p.is_file() and not p.is_symlink()):
        lines.append(f"{sha256_file(path)}  ./{path.relative_to(root).as_posix()}")
    (root / "SHA256SUMS").write_text("\n".join(lines) + "\n")
    return root


def pack(root: Path, archive: Path) -> None:
    archive.parent.mkdir(parents=True, exist_ok=True)
    tmp = archive.with_name(archive.name + ".tmp")

    def owner(info: tarfile.TarInfo) -> tarfile.TarInfo:
        info.uid = info.gid = 0
        info.uname = info.gname = "root"
        return info

    with tarfile.open(tmp, "w:gz", compresslevel=6) as tar:
        tar.add(root, arcname=root.name, filter=owner)
    os.replace(tmp, archive)
    (archive.parent / (archive.name + ".sha256")).write_text(f"{sha256_file(archive)}  {archive.name}\n")


def build(packs: Path, out: Path, work: Path) -> BundleResult:
    ver = version()
    seconds: dict[str, float] = {}
    t0 = time.perf_counter()
    stage_packs(packs, work / "model-packs")
    seconds["packs"] = time.perf_counter() - t0
    t1 = time.perf_counter()
    frozen = freeze(work / "model-packs", work)
    seconds["pyinstaller"] = time.perf_counter() - t1
    check_frozen(frozen)
    t2 = time.perf_counter()
    root = assemble(frozen, work / "stage", ver)
    archive = out / f"firstlook-{ver}-{ARCH}.tar.gz"
    pack(root, archive)
    seconds["archive"] = time.perf_counter() - t2
    unpacked, files = tree_size(root)
    return BundleResult(archive, archive.stat().st_size, unpacked, files, seconds)


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--packs", type=Path, default=REPO / "build" / "model-packs",
                   help="built model packs (default: build/model-packs)")
    p.add_argument("--out", type=Path, default=REPO / "dist", help="where the archive goes (default: dist/)")
    p.add_argument("--work", type=Path, default=REPO / "build" / "bundle", help="scratch folder (default: build/bundle)")
    args = p.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(levelname)s %(name)s: %(message)s")
    try:
        result = build(args.packs.resolve(), args.out.resolve(), args.work.resolve())
    except BundleError as exc:
        sys.stderr.write(f"build_bundle: {exc}\n")
        return 1
    timing = ", ".join(f"{k} {v:.0f} s" for k, v in result.seconds.items())
    sys.stdout.write(f"{result.archive}\n  packed   {result.packed_bytes / 2**20:7.1f} MiB\n"
                     f"  unpacked {result.unpacked_bytes / 2**20:7.1f} MiB in {result.files} files\n  took: {timing}\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
