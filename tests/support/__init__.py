"""Helpers shared by the test areas: synthetic DICOM, node start/stop, fuzz cases, the crash
harness, UI data. Nothing here is a test; the areas (store, node, inference, pack_builder, ui,
app) import what they need from here, never from each other."""

from __future__ import annotations

import os
import socket
from pathlib import Path

REPO = Path(__file__).resolve().parents[2]


def shared_path() -> Path:
    """``../shared`` next to the checkout, or ``$FIRSTLOOK_SHARED``."""
    return Path(os.environ.get("FIRSTLOOK_SHARED", REPO.parent / "shared")).resolve()


def packs_path() -> Path:
    """Packs built by ``firstlook build-models`` (``$FIRSTLOOK_PACKS`` overrides)."""
    return Path(os.environ.get("FIRSTLOOK_PACKS", REPO / "build" / "model-packs"))


def free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]
