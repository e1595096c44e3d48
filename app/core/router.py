"""Which model, if any, should look at a series, decided from headers alone.

Routing is cheap and conservative: it never decodes pixels, and anything it is unsure of
goes to no model with a reason a radiologist can read ("not analysed: MR has no model").
Each model's spec says which series it takes or refuses (``ModelSpec.route``); the model's
own input checks (lateral film, missing slices, ...) come later and may still refuse a
series the router accepted.
"""

from __future__ import annotations

from app.core.models import ModelSpecs, default_specs
from app.core.series_info import Route, SeriesInfo

__all__ = ["Route", "SeriesInfo", "route"]

_NON_IMAGE_SOP_PREFIXES = (
    "1.2.840.10008.5.1.4.1.1.88.",   # structured reports
    "1.2.840.10008.5.1.4.1.1.104.",  # encapsulated PDF/CDA
    "1.2.840.10008.5.1.4.1.1.11.",   # presentation states
    "1.2.840.10008.5.1.4.1.1.66",    # raw data, registration, segmentation
    "1.2.840.10008.5.1.4.1.1.481.",  # RT objects
    "1.2.840.10008.5.1.4.1.1.9.",    # waveforms
)


def route(info: SeriesInfo, specs: ModelSpecs | None = None) -> Route:
    if any(info.sop_class_uid.startswith(prefix) for prefix in _NON_IMAGE_SOP_PREFIXES):
        return Route(None, "not an image (structured report, document or other non-image object)")
    decision = (specs if specs is not None else default_specs()).route(info)
    if decision is not None:
        return decision
    if not info.modality:
        return Route(None, "no modality in the header")
    return Route(None, f"no model for {info.modality} images")
