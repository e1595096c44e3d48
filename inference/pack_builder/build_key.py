"""The content address of a model pack build: one sha256 over everything that determines it.

Why one hash and no partial invalidation: a cold build costs ~25 min, a wrong reuse costs a
pack that differs from what the code would build today. Hashing every input (file bytes, the
recipe, the code of the whole ``inference`` package, the library versions and the CPU, which
decides what the fidelity gates measure) makes any change a different key, and a key either
matches an entry exactly or not at all.

No torch or nncf here: versions come from the installed distributions' metadata, so the key
can be computed (and tested) without importing the build libraries.
"""

from __future__ import annotations

import hashlib
import json
import platform
from dataclasses import dataclass, field
from importlib import metadata
from pathlib import Path
from typing import Any, Mapping

from inference.packs import sha256_file

KEY_SCHEMA = 1  # bump if the way the key is computed changes
LIBRARIES = ("torch", "nncf", "openvino", "numpy")
CODE_ROOT = Path(__file__).resolve().parents[1]  # the ``inference`` package: builder and runtime


@dataclass(frozen=True)
class KeyInputs:
    """What one pack build depends on.

    ``files`` maps a stable role name (e.g. ``weights/model_01.pt``) to a file whose bytes are
    hashed; ``params`` holds the recipe constants and options (JSON-serialisable);
    ``environment`` the library versions, Python and CPU (see :func:`current_environment`).
    """

    pack: str
    files: Mapping[str, Path]
    params: Mapping[str, Any]
    environment: Mapping[str, str]
    code_root: Path = field(default=CODE_ROOT)


def code_digest(root: Path) -> str:
    """sha256 over every ``.py`` under ``root`` (relative path and bytes), sorted by path."""
    root = Path(root)
    digest = hashlib.sha256()
    for path in sorted(root.rglob("*.py"), key=lambda p: p.relative_to(root).as_posix()):
        if "__pycache__" in path.parts:
            continue
        rel = path.relative_to(root).as_posix()
        digest.update(f"{rel}\0{sha256_file(path)}\n".encode())
    return digest.hexdigest()


def _version(dist: str) -> str:
    try:
        return metadata.version(dist)
    except metadata.PackageNotFoundError:
        return "not installed"


def cpu_description() -> str:
    """The CPU as OpenVINO sees it: name and capabilities (INT8, BF16...). The gates run on
    this CPU, so the chosen runtime precision can depend on it (a shared home directory
    across machines must not hand one CPU's pack to another)."""
    try:
        import openvino as ov

        core = ov.Core()
        name = str(core.get_property("CPU", "FULL_DEVICE_NAME"))
        caps = core.get_property("CPU", "OPTIMIZATION_CAPABILITIES")
        return f"{name} [{' '.join(sorted(str(c) for c in caps))}]"
    except Exception as exc:  # no usable CPU plugin: fall back to the platform's description
        return f"{platform.machine()} {platform.processor()} (openvino: {type(exc).__name__})"


def current_environment() -> dict[str, str]:
    """Library versions, Python and CPU of this process, for :class:`KeyInputs`."""
    env = {name: _version(name) for name in LIBRARIES}
    env["python"] = platform.python_version()
    env["cpu"] = cpu_description()
    return env


def build_key(inputs: KeyInputs) -> str:
    """The 64-hex-digit key of a build (stable across processes and machines for equal inputs)."""
    payload = {
        "schema": KEY_SCHEMA,
        "pack": inputs.pack,
        "files": {role: sha256_file(Path(path)) for role, path in sorted(inputs.files.items())},
        "params": inputs.params,
        "code": code_digest(inputs.code_root),
        "environment": dict(sorted(inputs.environment.items())),
    }
    text = json.dumps(payload, sort_keys=True, separators=(",", ":"), default=str)
    return hashlib.sha256(text.encode()).hexdigest()
