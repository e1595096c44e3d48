"""A chest radiograph's probabilities (CheXNet) as TID 1500 SR + a heatmap key image.

One measurement group per finding: its probability, the threshold and whether it is
flagged, referencing the analysed image. The key image shows the heatmap of the most
probable flagged finding, or of the most probable finding when none is flagged.
"""

from __future__ import annotations

import logging

import highdicom as hd
import numpy as np
from pydicom.dataset import Dataset

from app.core.models.overlay import HeatmapOverlay
from app.core.pacs_objects import codes
from app.core.pacs_objects.common import ObjectContext, SourceInstance
from app.core.pacs_objects.key_image import key_image
from app.core.pacs_objects.outgoing import OutgoingObject
from app.core.pacs_objects.render import LegendEntry, blend_heatmap, grey_to_rgb
from app.core.pacs_objects.sr_report import algorithm_id, build_sr, flag_evaluation, tracking, triage_group

log = logging.getLogger(__name__)


def analysed_instance(ctx: ObjectContext, sources: dict[str, SourceInstance]) -> SourceInstance:
    sop = (ctx.result.findings or {}).get("sop_uid")
    if sop is not None:
        if sop not in sources:
            raise ValueError(f"the analysed image {sop} is not among the source files")
        return sources[sop]
    if not sources:
        raise ValueError("no source files")
    return next(iter(sources.values()))


def shown_finding(probabilities: dict[str, float], flagged: list[str]) -> str:
    pool = [label for label in flagged if label in probabilities] or list(probabilities)
    return max(pool, key=lambda label: probabilities[label])


def measurement_groups(ctx: ObjectContext, image: SourceInstance) -> list:
    findings = ctx.result.findings or {}
    probabilities: dict[str, float] = findings.get("probabilities", {})
    thresholds: dict[str, float] = findings.get("thresholds", {})
    flagged = set(findings.get("flagged", []))
    sop_class, sop = str(image.header.SOPClassUID), str(image.header.SOPInstanceUID)
    groups: list = []
    for label, probability in probabilities.items():
        reference = [hd.sr.SourceImageForMeasurement(sop_class, sop)]
        measurements = [hd.sr.Measurement(name=codes.PROBABILITY, value=float(probability), unit=codes.NO_UNITS,
                                          referenced_images=reference)]
        if label in thresholds:
            measurements.append(hd.sr.Measurement(name=codes.THRESHOLD, value=float(thresholds[label]),
                                                  unit=codes.NO_UNITS))
        groups.append(hd.sr.MeasurementsAndQualitativeEvaluations(
            tracking_identifier=tracking(ctx, label, f"FirstLook {label}"), finding_type=codes.finding_code(label),
            algorithm_id=algorithm_id(ctx), measurements=measurements,
            qualitative_evaluations=[flag_evaluation(label in flagged)],
            source_images=[hd.sr.SourceImageForMeasurementGroup(sop_class, sop)]))
    groups.append(triage_group(ctx))
    return groups


def heatmap(overlay: HeatmapOverlay, label: str, rows: int, cols: int) -> np.ndarray:
    from inference.cam import cam_to_image

    index = overlay.labels.index(label)
    if overlay.cam_raw is not None:
        return cam_to_image(overlay.cam_raw[index:index + 1], rows, cols)[0]
    assert overlay.cam is not None
    return overlay.cam[index]


def build_key_image(ctx: ObjectContext, overlay: HeatmapOverlay, image: SourceInstance) -> Dataset:
    from inference.cxr_input import load_cxr

    findings = ctx.result.findings or {}
    probabilities: dict[str, float] = findings.get("probabilities", {})
    flagged = [label for label in findings.get("flagged", []) if label in overlay.labels]
    label = shown_finding({k: v for k, v in probabilities.items() if k in overlay.labels}, flagged)
    grey = load_cxr(image.path).pixels
    rows, cols = grey.shape
    rgb = blend_heatmap(grey_to_rgb(grey), heatmap(overlay, label, rows, cols))
    state = "flagged" if label in flagged else "highest, not flagged"
    legend = [LegendEntry(f"FirstLook AI {ctx.identity.name} heatmap: {label.replace('_', ' ')} "
                          f"p={probabilities[label]:.2f} ({state})", (255, 64, 0))]
    return key_image(ctx, rgb, legend, image.header)


def build_chest(ctx: ObjectContext, overlay: HeatmapOverlay | None,
                sources: dict[str, SourceInstance]) -> list[OutgoingObject]:
    image = analysed_instance(ctx, sources)
    sr = build_sr(ctx, measurement_groups(ctx, image), [image.header], codes.CHEST_XRAY, image.header)
    objects = [OutgoingObject("sr", sr)]
    if overlay is not None and (ctx.result.findings or {}).get("probabilities"):
        objects.append(OutgoingObject("sc", build_key_image(ctx, overlay, image)))
    else:
        log.info("series %s: no heatmap, no key image", ctx.result.series_uid)
    return objects
