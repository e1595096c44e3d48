"""Model packs: a folder of OpenVINO IR files described by ``manifest.json``.

A pack is trusted only after every file listed in the manifest is present and
matches its SHA-256, so a truncated copy or a hand-edited model never runs.
"""

from __future__ import annotations

import hashlib
import json
import logging
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from inference.errors import PackError

log = logging.getLogger(__name__)

MANIFEST = "manifest.json"
SCHEMA_VERSION = 1
REQUIRED_KEYS = ("schema", "name", "version", "task", "validated", "members", "files", "labels")


def sha256_file(path: Path) -> str:
    """Hex SHA-256 of a file, streamed (packs and stored DICOM instances both use this one)."""
    with open(path, "rb") as fh:
        return hashlib.file_digest(fh, "sha256").hexdigest()


def write_manifest(pack_dir: Path, manifest: dict[str, Any]) -> Path:
    """Write ``manifest.json`` with the hash of every other file in the pack."""
    pack_dir = Path(pack_dir)
    files = {
        p.relative_to(pack_dir).as_posix(): sha256_file(p)
        for p in sorted(pack_dir.rglob("*"))
        if p.is_file() and p.name != MANIFEST
    }
    body = dict(manifest)
    body.setdefault("schema", SCHEMA_VERSION)
    body["files"] = files
    target = pack_dir / MANIFEST
    tmp = target.with_suffix(".json.tmp")
    tmp.write_text(json.dumps(body, indent=2, sort_keys=False) + "\n", encoding="utf-8")
    tmp.replace(target)
    return target


@dataclass(frozen=True)
class PackMember:
    name: str
    files: dict[str, str]  # precision -> relative xml path


@dataclass(frozen=True)
class ModelPack:
    name: str
    version: str
    task: str
    path: Path
    validated: bool
    manifest: dict[str, Any] = field(repr=False)
    members: tuple[PackMember, ...] = ()

    @property
    def labels(self) -> list[str]:
        return list(self.manifest["labels"])

    @property
    def validation_note(self) -> str:
        return str(self.manifest.get("validation_note", ""))

    @property
    def manifest_sha256(self) -> str:
        """SHA-256 of ``manifest.json``, which lists the SHA-256 of every pack file: the pack's
        identity in results and in the objects sent to PACS."""
        return hashlib.sha256((self.path / "manifest.json").read_bytes()).hexdigest()

    @property
    def runtime_precision(self) -> str:
        """The precision the runtime uses: the manifest's ``runtime.precision``, INT8 by default."""
        runtime = self.manifest.get("runtime") or {}
        return str(runtime.get("precision") or runtime.get("ir") or "int8")

    def member_xml(self, member_name: str, precision: str = "int8") -> Path:
        for member in self.members:
            if member.name == member_name:
                if precision not in member.files:
                    raise PackError(self.name, f"member '{member_name}' has no {precision} model")
                return self.path / member.files[precision]
        raise PackError(self.name, f"no member named '{member_name}'")

    def file(self, relative: str) -> Path:
        """A file the manifest lists (e.g. classifier weights for CAM)."""
        if relative not in self.manifest["files"]:
            raise PackError(self.name, f"'{relative}' is not listed in the manifest")
        return self.path / relative


def _inside(pack_dir: Path, relative: str) -> Path:
    """Resolve a manifest path, refusing anything that leaves the pack folder."""
    if not relative or Path(relative).is_absolute() or "\\" in relative:
        raise ValueError(relative)
    resolved = (pack_dir / relative).resolve()
    if not resolved.is_relative_to(pack_dir.resolve()):
        raise ValueError(relative)
    return resolved


def load_pack(pack_dir: Path, verify: bool = True) -> ModelPack:
    """Load and (by default) hash-check a pack; any problem raises one ``PackError``."""
    pack_dir = Path(pack_dir)
    label = pack_dir.name
    manifest_path = pack_dir / MANIFEST
    if not manifest_path.is_file():
        raise PackError(label, f"no {MANIFEST} in {pack_dir}")
    try:
        manifest = json.loads(manifest_path.read_text(encoding="utf-8"))
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as exc:
        raise PackError(label, f"{MANIFEST} is unreadable ({exc})") from exc
    if not isinstance(manifest, dict):
        raise PackError(label, f"{MANIFEST} is not a JSON object")
    missing = [k for k in REQUIRED_KEYS if k not in manifest]
    if missing:
        raise PackError(label, f"{MANIFEST} lacks {', '.join(missing)}")
    label = str(manifest["name"])
    if manifest["schema"] != SCHEMA_VERSION:
        raise PackError(label, f"unsupported manifest schema {manifest['schema']!r}")
    files = manifest["files"]
    if not isinstance(files, dict) or not files:
        raise PackError(label, "manifest lists no files")
    for relative in files:
        try:
            _inside(pack_dir, relative)
        except ValueError:
            raise PackError(label, f"manifest path '{relative}' points outside the pack folder") from None

    members: list[PackMember] = []
    for entry in manifest["members"]:
        precisions = {k: v for k, v in entry.items() if k != "name"}
        for relative in precisions.values():
            if relative not in files:
                raise PackError(label, f"member '{entry.get('name')}' file '{relative}' is not hashed in the manifest")
        members.append(PackMember(name=str(entry["name"]), files=precisions))
    if not members:
        raise PackError(label, "manifest lists no model members")

    if verify:
        for relative, expected in files.items():
            path = pack_dir / relative
            if not path.is_file():
                raise PackError(label, f"file '{relative}' is missing")
            if sha256_file(path) != expected:
                raise PackError(label, f"file '{relative}' does not match its SHA-256 (truncated or altered)")
    pack = ModelPack(
        name=label,
        version=str(manifest["version"]),
        task=str(manifest["task"]),
        path=pack_dir,
        validated=bool(manifest["validated"]),
        manifest=manifest,
        members=tuple(members),
    )
    if not pack.validated:
        log.warning("model pack %s %s is NOT validated: %s", pack.name, pack.version, pack.validation_note)
    return pack


def discover_packs(packs_dir: Path, verify: bool = True) -> dict[str, ModelPack | PackError]:
    """Every pack folder under ``packs_dir``; a bad pack is reported, the others still load."""
    found: dict[str, ModelPack | PackError] = {}
    if not Path(packs_dir).is_dir():
        return found
    for child in sorted(Path(packs_dir).iterdir()):
        if not child.is_dir():
            continue
        try:
            pack = load_pack(child, verify=verify)
            found[pack.name] = pack
        except PackError as exc:
            log.error("%s", exc)
            found[child.name] = exc
    return found
