"""The outbox: results' objects queued with the result, sent by C-STORE to real peers."""

from __future__ import annotations

from pathlib import Path

import pytest
from pydicom.uid import generate_uid

from app.core.store import StudyStore
from tests.support.dicom_factory import make_ct_slice, write

import numpy as np


@pytest.fixture
def store(data_dir: Path):
    s = StudyStore(data_dir)
    yield s
    s.close()


@pytest.fixture
def stored_series(store: StudyStore, tmp_path: Path) -> tuple[str, str]:
    """(study, series) of one small CT slice stored the way the node stores it."""
    study, series = generate_uid(), generate_uid()
    path = write(make_ct_slice(np.zeros((16, 16), np.int16), (0, 0, 0), instance=1, study_uid=study,
                               series_uid=series), tmp_path / "in")
    store.store_instance(path.read_bytes(), calling_ae="CT01")
    return study, series
