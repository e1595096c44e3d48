"""Which algorithm made a result: name, version, pack hash, device and precision.

Every object FirstLook creates names these, so a PACS admin can tell which pack on which
device produced a finding. The result record carries name, version and device; the pack
hash and precision come from the pack (``from_pack``) or the findings when the analyser
recorded them, and read "not recorded" otherwise rather than being guessed.
"""

from __future__ import annotations

import hashlib
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from app.core.results import AnalysisResult

NOT_RECORDED = "not recorded"
MANUFACTURER = "FirstLook"


def pack_hash(pack_dir: Path) -> str:
    """SHA-256 of the pack's ``manifest.json``, which itself lists the SHA-256 of every pack file."""
    return hashlib.sha256((Path(pack_dir) / "manifest.json").read_bytes()).hexdigest()


def pack_precision(manifest: dict[str, Any]) -> str:
    """The precision the runtime uses: the manifest's ``runtime.precision``, INT8 by default."""
    runtime = manifest.get("runtime") or {}
    return str(runtime.get("precision") or runtime.get("ir") or "int8")


@dataclass(frozen=True)
class AlgorithmIdentity:
    name: str
    version: str
    pack_hash: str
    device: str
    precision: str
    validated: bool

    @classmethod
    def from_result(cls, result: AnalysisResult, pack: Any | None = None) -> AlgorithmIdentity:
        """From the result, completed by a loaded ``inference.packs.ModelPack`` when given."""
        findings = result.findings or {}
        digest = str(findings.get("pack_sha256") or NOT_RECORDED)
        precision = str(findings.get("precision") or NOT_RECORDED)
        if pack is not None:
            digest = pack_hash(pack.path)
            precision = pack_precision(pack.manifest)
        device = result.device or NOT_RECORDED
        if result.device_note:
            device = f"{device} ({result.device_note})"
        return cls(name=result.model or "unknown", version=result.model_version or NOT_RECORDED,
                   pack_hash=digest, device=device, precision=precision, validated=bool(result.validated))

    @property
    def model_name(self) -> str:
        """Manufacturer's model name (LO, 64 characters)."""
        return f"FirstLook {self.name}"[:64]

    def parameters(self) -> dict[str, str]:
        return {"pack_sha256": self.pack_hash, "device": self.device[:200], "precision": self.precision,
                "validated": "yes" if self.validated else "NO (not for diagnosis)"}

    def one_line(self) -> str:
        return (f"{self.name} {self.version}, pack sha256 {self.pack_hash[:16]}, device {self.device}, "
                f"precision {self.precision}")
