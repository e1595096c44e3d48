"""What the store hands out: plain records, detached from the index rows they came from."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any

from app.core.store.part10 import InstanceHeader


@dataclass(frozen=True)
class StoredInstance:
    header: InstanceHeader
    path: Path
    outcome: str  # "stored", "duplicate", "replaced"


@dataclass
class StudyRecord:
    study_uid: str
    patient_id: str
    patient_name: str
    study_date: str
    study_time: str
    description: str
    modalities: str
    accession: str
    n_series: int
    n_instances: int
    first_received: float
    last_received: float
    calling_ae: str
    reviewed_at: float | None

    def to_json(self) -> dict[str, Any]:
        return dict(self.__dict__)


@dataclass
class SeriesRecord:
    series_uid: str
    study_uid: str
    modality: str
    body_part: str
    description: str
    series_number: int | None
    n_instances: int
    first_received: float
    last_received: float
    ready_at: float | None


@dataclass
class Job:
    series_uid: str
    study_uid: str
    attempts: int
    instance_count: int
    enqueued_at: float
