"""The durable store on its own: files, index, job queue, recovery, migrations."""

from __future__ import annotations

from pathlib import Path

import pytest

from app.core.store import StudyStore


@pytest.fixture
def store(data_dir: Path):
    s = StudyStore(data_dir)
    yield s
    s.close()
