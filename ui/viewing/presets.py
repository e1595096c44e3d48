"""Window presets (centre, width) in HU; only offered on CT, where the Modality LUT gives HU."""

from __future__ import annotations

AS_STORED = "As stored"   # the window the file carries, or one from the pixels when it has none

PRESETS: dict[str, tuple[float, float]] = {
    "Lung": (-600.0, 1500.0),
    "Mediastinum": (50.0, 350.0),
    "Bone": (400.0, 1800.0),
    "Brain": (40.0, 80.0),
    "Subdural": (75.0, 215.0),
    "Stroke": (35.0, 40.0),
}


def presets_for(modality: str) -> list[str]:
    """The names offered for a series, "As stored" first (keys 0, 1-6)."""
    return [AS_STORED, *PRESETS] if modality == "CT" else [AS_STORED]
