"""The worklist and analysis records as JSON, and back: the wire format of ``/api/v1``.

The service serialises with ``dataclasses.asdict`` (fields in declaration order, so the JSON
keeps the desktop's column order); a desktop attached over the network rebuilds the very
same dataclasses, so its worklist model and viewer cannot tell the two modes apart.
"""

from __future__ import annotations

import dataclasses
from typing import Any

from app.core.results import AnalysisResult
from app.core.store.records import SeriesRecord, StudyRecord
from app.core.worklist import WorklistRow

_ROW_FIELDS = tuple(f.name for f in dataclasses.fields(WorklistRow))
_RESULT_FIELDS = tuple(f.name for f in dataclasses.fields(AnalysisResult))
_STUDY_FIELDS = tuple(f.name for f in dataclasses.fields(StudyRecord))
_SERIES_FIELDS = tuple(f.name for f in dataclasses.fields(SeriesRecord))


def _pick(data: dict[str, Any], names: tuple[str, ...], what: str) -> dict[str, Any]:
    """The dataclass's fields from ``data``; a missing field is a protocol error (ValueError),
    an extra one (a newer server) is ignored."""
    missing = [n for n in names if n not in data]
    if missing:
        raise ValueError(f"{what} JSON lacks {', '.join(missing)}")
    return {n: data[n] for n in names}


def row_to_json(row: WorklistRow) -> dict[str, Any]:
    return dataclasses.asdict(row)


def row_from_json(data: dict[str, Any]) -> WorklistRow:
    return WorklistRow(**_pick(data, _ROW_FIELDS, "worklist row"))


def result_to_json(result: AnalysisResult) -> dict[str, Any]:
    return dataclasses.asdict(result)


def result_from_json(data: dict[str, Any]) -> AnalysisResult:
    values = _pick(data, _RESULT_FIELDS, "analysis result")
    values["findings"] = dict(values["findings"] or {})
    values["timings"] = {k: float(v) for k, v in (values["timings"] or {}).items()}
    return AnalysisResult(**values)


def study_to_json(study: StudyRecord) -> dict[str, Any]:
    return dataclasses.asdict(study)


def study_from_json(data: dict[str, Any]) -> StudyRecord:
    return StudyRecord(**_pick(data, _STUDY_FIELDS, "study"))


def series_to_json(series: SeriesRecord) -> dict[str, Any]:
    return dataclasses.asdict(series)


def series_from_json(data: dict[str, Any]) -> SeriesRecord:
    return SeriesRecord(**_pick(data, _SERIES_FIELDS, "series"))
