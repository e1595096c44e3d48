"""The pack builder (torch, nncf): network re-implementations, conversion, quantisation gates."""

from __future__ import annotations

from pathlib import Path

import pytest


@pytest.fixture(scope="session")
def model_dir(shared_dir: Path) -> Path:
    """The trained BLAST-CT weights in ../shared (never copied into the repo)."""
    return shared_dir / "models" / "blast-ct"
