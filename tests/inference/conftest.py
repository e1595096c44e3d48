"""The OpenVINO runtime, the DICOM-to-tensor paths and the model packs (most need built packs)."""

from __future__ import annotations

import openvino as ov
import pytest

from inference.runner import make_core


@pytest.fixture(scope="module")
def core() -> ov.Core:
    """A plain OpenVINO core (no compile cache), one per test module."""
    return make_core(None)
