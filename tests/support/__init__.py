"""Helpers shared by the test areas: synthetic DICOM, node start/stop, fuzz cases, the crash
harness, UI data. Nothing here is a test; the areas (store, node, inference, pack_builder, ui,
app) import what they need from here, never from each other."""

from __future__ import annotations

import os
import socket
import time
from pathlib import Path
from typing import Callable

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


def wait_until(condition: Callable[[], bool], timeout: float = 30.0, step: float = 0.05) -> bool:
    """Poll ``condition`` until it holds or ``timeout`` passes; its last answer."""
    end = time.monotonic() + timeout
    while time.monotonic() < end:
        if condition():
            return True
        time.sleep(step)
    return condition()
