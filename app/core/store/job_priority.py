"""Clinical dispatch order under backlog: "high", "medium" or "low", as DICOM names them.

A job's level is the highest of its calling AE's level (``ae_priority`` in the config: e.g. the
emergency department's CT) and the Priority a modality put in its C-STORE requests (PS3.7 9.1.1:
0 MEDIUM, 1 HIGH, 2 LOW). The queue claims by level, then by arrival.
"""

from __future__ import annotations

from typing import Mapping

LEVELS = ("high", "medium", "low")
RANK = {level: rank for rank, level in enumerate(LEVELS)}
DEFAULT = "medium"
_DIMSE = {0: "medium", 1: "high", 2: "low"}


def from_dimse(value: object) -> str | None:
    """The level of a C-STORE request's Priority; None for medium/absent (the default)."""
    try:
        level = _DIMSE.get(int(value))  # type: ignore[arg-type]
    except (TypeError, ValueError):
        return None
    return None if level in (None, DEFAULT) else level


def rank(calling_ae: str | None, hint: str | None, ae_priority: Mapping[str, str]) -> int:
    """0 (high) .. 2 (low): the more urgent of the AE's configured level and the request's."""
    levels = [ae_priority.get((calling_ae or "").strip(), DEFAULT)] + ([hint] if hint else [])
    return min(RANK.get(level, RANK[DEFAULT]) for level in levels)
