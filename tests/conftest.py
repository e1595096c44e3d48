"""Shared fixtures: the ../shared resources, built model packs, a fresh data dir, free ports."""

from __future__ import annotations

import os
import socket
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parent.parent


def _shared_dir() -> Path:
    return Path(os.environ.get("FIRSTLOOK_SHARED", REPO.parent / "shared")).resolve()


@pytest.fixture(scope="session")
def shared_dir() -> Path:
    path = _shared_dir()
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
    path = Path(os.environ.get("FIRSTLOOK_PACKS", REPO / "build" / "model-packs"))
    assert path.is_dir(), f"model packs not built at {path}: run `make models` (the test command does)"
    return path


@pytest.fixture
def data_dir(tmp_path: Path) -> Path:
    path = tmp_path / "data"
    path.mkdir()
    return path


def free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@pytest.fixture
def port() -> int:
    return free_port()
