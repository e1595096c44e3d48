"""Fuzz the DICOM-to-tensor path directly: head-CT series for inference.ct_volume and damaged
radiograph datasets for inference.cxr_input (no store in between, so more cases per second)."""

from __future__ import annotations

import os

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from tests.support.fuzz_cases import (
    DERANDOMIZE, cxr_dataset, _deterministic, check_ct_series, check_tensor_path, ct_series_cases, dataset_damage)

EXAMPLES = int(os.environ.get("FIRSTLOOK_FUZZ_EXAMPLES", "300"))


@pytest.mark.timeout(300)
@settings(max_examples=EXAMPLES, deadline=None, suppress_health_check=list(HealthCheck), database=None,
          derandomize=DERANDOMIZE)
@given(ct_series_cases())
def test_fuzz_ct_series_to_volume(case: tuple) -> None:
    """A finite HU volume or NotAnalysable with a reason; never another exception."""
    slices, _steps = case
    check_ct_series(slices)


@st.composite
def _damaged_cxr(draw: st.DrawFn) -> object:
    ds = _deterministic(cxr_dataset(64, 64))
    steps: list[str] = []
    syntax = draw(dataset_damage(ds, steps))
    ds.file_meta.TransferSyntaxUID = syntax
    return ds


@pytest.mark.timeout(300)
@settings(max_examples=EXAMPLES, deadline=None, suppress_health_check=list(HealthCheck), database=None,
          derandomize=DERANDOMIZE)
@given(_damaged_cxr())
def test_fuzz_radiograph_dataset_to_tensor(ds: object) -> None:
    """Damaged datasets straight into load_cxr: finite tensor or NotAnalysable."""
    check_tensor_path(ds)  # type: ignore[arg-type]
