"""Which model, if any, should look at a series, decided from headers alone.

Routing is cheap and conservative: it never decodes pixels, and anything it is unsure of
goes to no model with a reason a radiologist can read ("not analysed: MR has no model").
The model's own input checks (lateral film, missing slices, ...) come later and may still
refuse a series the router accepted.
"""

from __future__ import annotations

from dataclasses import dataclass

import pydicom

CHEXNET = "chexnet"
BLAST_CT = "blast-ct"

_HEAD_WORDS = ("HEAD", "BRAIN", "SKULL", "CRAN", "CEREB", "NEURO", "SCHAEDEL", "KOPF", "TETE", "CABEZA")
_LATERAL_VIEWS = {"LL", "RL", "LATERAL", "LAT", "LLD", "RLD"}
_FRONTAL_VIEWS = {"PA", "AP", ""}
_NON_IMAGE_SOP_PREFIXES = (
    "1.2.840.10008.5.1.4.1.1.88.",   # structured reports
    "1.2.840.10008.5.1.4.1.1.104.",  # encapsulated PDF/CDA
    "1.2.840.10008.5.1.4.1.1.11.",   # presentation states
    "1.2.840.10008.5.1.4.1.1.66",    # raw data, registration, segmentation
    "1.2.840.10008.5.1.4.1.1.481.",  # RT objects
    "1.2.840.10008.5.1.4.1.1.9.",    # waveforms
)


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


def _is_head(info: SeriesInfo) -> bool | None:
    """True/False when the headers say so; None when they are silent."""
    if info.body_part:
        return any(word in info.body_part for word in _HEAD_WORDS)
    text = f"{info.study_description} {info.series_description}"
    if any(word in text for word in _HEAD_WORDS):
        return True
    return None


def route(info: SeriesInfo) -> Route:
    if any(info.sop_class_uid.startswith(prefix) for prefix in _NON_IMAGE_SOP_PREFIXES):
        return Route(None, "not an image (structured report, document or other non-image object)")
    if info.modality in ("CR", "DX"):
        if info.body_part and "CHEST" not in info.body_part and "THORAX" not in info.body_part:
            return Route(None, f"{info.modality} of {info.body_part.lower()}: the chest model reads chest radiographs only")
        if info.view_position in _LATERAL_VIEWS:
            return Route(None, f"lateral view ({info.view_position}): the chest model reads frontal PA/AP views only")
        if info.view_position not in _FRONTAL_VIEWS:
            return Route(None, f"view position {info.view_position}: the chest model reads frontal PA/AP views only")
        return Route(CHEXNET)
    if info.modality == "CT":
        if "LOCALIZER" in info.image_type or "SCOUT" in info.image_type:
            return Route(None, "CT localizer/scout images are not a volume")
        head = _is_head(info)
        if head is False:
            return Route(None, f"CT of {info.body_part.lower()}: the head-CT model reads head CT only")
        if head is None:
            return Route(None, "CT without a head/brain body part or description: the head-CT model reads head CT only")
        return Route(BLAST_CT)
    if not info.modality:
        return Route(None, "no modality in the header")
    return Route(None, f"no model for {info.modality} images")
