"""The desktop's tests: real Qt widgets (pytest-qt, offscreen or Xvfb) over a real store."""

from __future__ import annotations

from pathlib import Path

import pytest

from app.core.store import StudyStore


@pytest.fixture
def store(data_dir: Path):
    s = StudyStore(data_dir)
    yield s
    s.close()
