"""Which algorithm made a result: name, version, pack hash, device and precision.

Every object FirstLook creates names these, so a PACS admin can tell which pack on which
device produced a finding. The result record carries name, version and device, and its
findings the pack hash and precision the analysis ran with; results of releases that did not
record them take them from the loaded pack, or read "not recorded" rather than being guessed.
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
    """SHA-256 of the pack's ``manifest.json`` (``inference.packs.ModelPack.manifest_sha256``)."""
    return hashlib.sha256((Path(pack_dir) / "manifest.json").read_bytes()).hexdigest()


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
        """From the result; what the analysis recorded wins over the loaded ``pack``
        (``inference.packs.ModelPack``), which only fills in results of releases that did not
        record it (a pack upgraded since must not be named for an older result)."""
        findings = result.findings or {}
        digest = str(findings.get("pack_sha256") or NOT_RECORDED)
        precision = str(findings.get("precision") or NOT_RECORDED)
        if pack is not None and digest == NOT_RECORDED:
            digest = pack.manifest_sha256
        if pack is not None and precision == NOT_RECORDED:
            precision = pack.runtime_precision
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
