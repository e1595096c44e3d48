"""The /api/v1 wire format: every record survives JSON and back as the very same dataclass."""

from __future__ import annotations

import dataclasses
import json

import pytest

from app.core.results import AnalysisResult
from app.core.store.records import SeriesRecord, StudyRecord
from app.core.worklist import WorklistRow
from app.core.worklist_json import (
    result_from_json,
    result_to_json,
    row_from_json,
    row_to_json,
    series_from_json,
    series_to_json,
    study_from_json,
    study_to_json,
)


def _row() -> WorklistRow:
    return WorklistRow(study_uid="1.2.3", patient_name="DOE^JANE", patient_id="P1", study_date="20260101",
                       study_time="101010", modalities="CT", description="HEAD", priority="critical",
                       validated=False, summary="IPH 3.2 mL", arrival=1000.5, result_at=1010.25,
                       arrival_to_result_s=9.75, status="ready", n_series=1, n_instances=30)


def test_row_round_trip_keeps_fields_and_order() -> None:
    row = _row()
    wire = json.loads(json.dumps(row_to_json(row)))
    assert list(wire) == [f.name for f in dataclasses.fields(WorklistRow)]
    assert row_from_json(wire) == row


def test_row_missing_field_is_an_error_extra_field_ignored() -> None:
    wire = row_to_json(_row())
    with pytest.raises(ValueError, match="priority"):
        row_from_json({k: v for k, v in wire.items() if k != "priority"})
    assert row_from_json({**wire, "added_later": 1}) == _row()


def test_result_study_series_round_trip() -> None:
    result = AnalysisResult(series_uid="1.2.3.4", study_uid="1.2.3", status="done", priority="urgent",
                            model="chexnet", model_version="1.0.0", device="CPU", validated=False,
                            summary="Effusion 0.71", findings={"probabilities": {"Effusion": 0.71}, "flagged": ["Effusion"]},
                            timings={"total": 0.5, "infer": 0.25}, overlay_path="results/1.2.3.4/cam.npz",
                            arrival_at=999.0, created_at=1001.0)
    assert result_from_json(json.loads(json.dumps(result_to_json(result)))) == result
    study = StudyRecord("1.2.3", "P1", "DOE^JANE", "20260101", "101010", "HEAD", "CT", "A1", 1, 30,
                        1000.0, 1001.0, "CT01", None)
    assert study_from_json(json.loads(json.dumps(study_to_json(study)))) == study
    series = SeriesRecord("1.2.3.4", "1.2.3", "CT", "HEAD", "AXIAL", 2, 30, 1000.0, 1001.0, 1006.0)
    assert series_from_json(json.loads(json.dumps(series_to_json(series)))) == series
