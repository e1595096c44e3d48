"""Fixtures every area uses: the ../shared resources, built model packs, a fresh data dir, free ports.

Tests that need built model packs carry the ``packs`` marker, set here for every test that asks
for ``packs_dir`` (directly or through another fixture) and by hand where a test reaches the
packs another way. ``pytest -m "not packs"`` runs the rest without a model build.
"""

from __future__ import annotations

from pathlib import Path

import pytest

from tests.support import free_port, packs_path, shared_path


def pytest_collection_modifyitems(items: list[pytest.Item]) -> None:
    for item in items:
        if "packs_dir" in getattr(item, "fixturenames", ()):
            item.add_marker(pytest.mark.packs)


@pytest.fixture(scope="session")
def shared_dir() -> Path:
    path = shared_path()
    assert (path / "data" / "cxr" / "labels.csv").is_file(), f"shared resources not found at {path}"
    return path


@pytest.fixture(scope="session")
def cxr_dir(shared_dir: Path) -> Path:
    return shared_dir / "data" / "cxr"


@pytest.fixture(scope="session")
def headct_dir(shared_dir: Path) -> Path:
    return shared_dir / "data" / "headct" / "dcm_qa_ct_GE_HiSpeed_head" / "dicom"


@pytest.fixture(scope="session")
def packs_dir() -> Path:
    """Packs built by `firstlook build-models` (the test command builds them first)."""
    path = packs_path()
    assert path.is_dir(), f"model packs not built at {path}: run `make models` (the test command does)"
    return path


@pytest.fixture
def data_dir(tmp_path: Path) -> Path:
    path = tmp_path / "data"
    path.mkdir()
    return path


@pytest.fixture
def port() -> int:
    return free_port()
