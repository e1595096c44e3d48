"""The header facts routing needs, and the router's verdict, shared by the router and the model specs."""

from __future__ import annotations

from dataclasses import dataclass

import pydicom


@dataclass(frozen=True)
class SeriesInfo:
    """The header facts routing needs, from one instance of the series."""

    modality: str
    body_part: str
    view_position: str
    image_type: tuple[str, ...]
    sop_class_uid: str
    study_description: str
    series_description: str
    instances: int

    @classmethod
    def from_dataset(cls, ds: pydicom.Dataset, instances: int) -> "SeriesInfo":
        def text(keyword: str) -> str:
            value = ds.get(keyword, "")
            return str(value).strip().upper() if value is not None else ""

        image_type = ds.get("ImageType", [])
        if isinstance(image_type, str):
            image_type = [image_type]
        return cls(
            modality=text("Modality"), body_part=text("BodyPartExamined"), view_position=text("ViewPosition"),
            image_type=tuple(str(v).strip().upper() for v in (image_type or [])),
            sop_class_uid=str(ds.get("SOPClassUID", "") or ""), study_description=text("StudyDescription"),
            series_description=text("SeriesDescription"), instances=instances,
        )


@dataclass(frozen=True)
class Route:
    model: str | None
    reason: str = ""  # why no model, when model is None
