"""A segmented volume (BLAST-CT) as SEG + TID 1500 SR + one key image.

The SEG sits on the analysed series' own slices: one frame per source slice and segment,
each referencing its source instance and carrying that slice's position and orientation,
so a gantry-tilted series comes out aligned with its slices (no resampling). Frames where
a segment is empty are left out. No segment present: no SEG and no key image; the SR still
reports 0 mL per class, so "looked, found nothing" reaches the PACS too.
"""

from __future__ import annotations

import logging
from typing import Sequence

import highdicom as hd
import numpy as np
import pydicom
from pydicom.dataset import Dataset
from pydicom.sr.codedict import codes as dcm_codes

from app.core.models.overlay import LabelClass, LabelVolumeOverlay
from app.core.pacs_objects import codes
from app.core.pacs_objects.common import UNVALIDATED_WARNING, ObjectContext, SourceInstance, finish
from app.core.pacs_objects.identity import MANUFACTURER
from app.core.pacs_objects.key_image import key_image
from app.core.pacs_objects.outgoing import OutgoingObject
from app.core.pacs_objects.render import LegendEntry, draw_outlines, grey_to_rgb, window
from app.core.pacs_objects.sr_report import algorithm_id, build_sr, flag_evaluation, tracking, triage_group

log = logging.getLogger(__name__)

HAEMORRHAGE_KEYS = ("IPH", "EAH", "IVH")
BRAIN_WINDOW = (40.0, 80.0)


def segment_code(key: str) -> codes.SegmentCode:
    known = codes.BLAST_CT_SEGMENTS.get(key)
    if known is not None:
        return known
    return codes.SegmentCode(codes.MORPHOLOGICALLY_ABNORMAL, codes.private(key.upper()[:16], key), None)


def ordered_sources(ctx: ObjectContext, overlay: LabelVolumeOverlay,
                    sources: dict[str, SourceInstance]) -> list[SourceInstance]:
    """The source slices in the label volume's order.

    A CT without Frame of Reference UID (non-conformant, but it happens) gets one derived from
    its series UID in these in-memory headers, so the SEG can still say which slices it sits on.
    """
    missing = [sop for sop in overlay.sop_uids if sop not in sources]
    if missing:
        raise ValueError(f"{len(missing)} labelled slice(s) are not among the source files (first: {missing[0]})")
    slices = [sources[sop] for sop in overlay.sop_uids]
    if any("FrameOfReferenceUID" not in s.header for s in slices):
        log.warning("series %s has no Frame of Reference UID; the SEG uses one derived from the series UID",
                    ctx.result.series_uid)
        frame_of_reference = ctx.uid("seg", "frame-of-reference")
        for s in slices:
            s.header.setdefault("FrameOfReferenceUID", frame_of_reference)
    return slices


def build_seg(ctx: ObjectContext, overlay: LabelVolumeOverlay, slices: Sequence[SourceInstance],
              present: Sequence[int]) -> hd.seg.Segmentation:
    """Binary SEG, segment numbers 1..n for the present classes in class order."""
    ident = ctx.identity
    remap = np.zeros(max(256, len(overlay.classes) + 1), dtype=np.uint8)
    descriptions = []
    for number, value in enumerate(present, start=1):
        remap[value] = number
        cls: LabelClass = overlay.classes[value - 1]
        code = segment_code(cls.key)
        descriptions.append(hd.seg.SegmentDescription(
            segment_number=number, segment_label=f"{cls.name} ({cls.key})"[:64],
            segmented_property_category=code.category, segmented_property_type=code.type,
            algorithm_type=hd.seg.SegmentAlgorithmTypeValues.AUTOMATIC,
            algorithm_identification=hd.AlgorithmIdentificationSequence(
                name=ident.name, family=dcm_codes.cid7162.ArtificialIntelligence, version=ident.version,
                source=MANUFACTURER, parameters=ident.parameters()),
            tracking_uid=ctx.uid("seg", f"segment-{cls.key}"), tracking_id=f"FirstLook {cls.key}",
            anatomic_regions=[code.region] if code.region is not None else None,
            display_color=hd.color.CIELabColor.from_rgb(*cls.colour)))
    label_map = remap[overlay.labels]
    description = "FirstLook AI segmentation" if ident.validated else UNVALIDATED_WARNING
    seg = hd.seg.Segmentation(
        source_images=[s.header for s in slices], pixel_array=label_map,
        segmentation_type=hd.seg.SegmentationTypeValues.BINARY, segment_descriptions=descriptions,
        series_instance_uid=ctx.series_uid("seg"), series_number=ctx.series_number("seg"),
        sop_instance_uid=ctx.uid("seg", "instance"), instance_number=1, manufacturer=MANUFACTURER,
        manufacturer_model_name=ident.model_name, software_versions=ctx.software_versions,
        device_serial_number=ident.pack_hash[:64], content_label="FIRSTLOOK_AI",
        content_description=description[:64], content_creator_name="FirstLook^AI",
        omit_empty_frames=True)
    return seg


def measurement_groups(ctx: ObjectContext, overlay: LabelVolumeOverlay, seg: hd.seg.Segmentation | None,
                       present: Sequence[int]) -> list:
    findings = ctx.result.findings or {}
    volumes = findings.get("volumes_ml", {})
    slices_involved = findings.get("slices_involved", {})
    thresholds = findings.get("thresholds", {})
    flagged = set(findings.get("flagged", []))
    groups: list = []
    for value, cls in enumerate(overlay.classes, start=1):
        code = segment_code(cls.key)
        if cls.key in slices_involved:
            n_slices = int(slices_involved[cls.key])
        else:
            n_slices = int(np.count_nonzero((overlay.labels == value).any(axis=(1, 2))))
        measurements = []
        if cls.key in volumes:
            measurements.append(hd.sr.Measurement(name=codes.VOLUME, value=float(volumes[cls.key]),
                                                  unit=codes.MILLILITRE))
        else:
            log.warning("no volume in the findings for %s; the SR reports slices only", cls.key)
        measurements.append(hd.sr.Measurement(name=codes.SLICES_INVOLVED, value=n_slices, unit=codes.SLICES_UNIT))
        if cls.key in thresholds:
            measurements.append(hd.sr.Measurement(name=codes.THRESHOLD, value=float(thresholds[cls.key]),
                                                  unit=codes.MILLILITRE))
        common = dict(
            tracking_identifier=tracking(ctx, cls.key, f"FirstLook {cls.key}: {cls.name}"),
            finding_type=code.type, finding_category=code.category, algorithm_id=algorithm_id(ctx),
            finding_sites=[hd.sr.FindingSite(code.region)] if code.region is not None else None,
            measurements=measurements, qualitative_evaluations=[flag_evaluation(cls.key in flagged)])
        if seg is not None and value in present:
            number = list(present).index(value) + 1
            groups.append(hd.sr.VolumetricROIMeasurementsAndQualitativeEvaluations(
                referenced_segment=hd.sr.ReferencedSegment.from_segmentation(seg, number), **common))
        else:
            groups.append(hd.sr.MeasurementsAndQualitativeEvaluations(**common))
    groups.append(triage_group(ctx))
    return groups


def key_slice(overlay: LabelVolumeOverlay) -> int:
    """The slice with the most haemorrhage voxels (any class when there is no haemorrhage)."""
    keys = overlay.class_keys
    values = [k for k, key in enumerate(keys, start=1) if key in HAEMORRHAGE_KEYS]
    counts = np.isin(overlay.labels, values).sum(axis=(1, 2)) if values else np.zeros(len(overlay.labels))
    if not counts.any():
        counts = (overlay.labels > 0).sum(axis=(1, 2))
    return int(np.argmax(counts))


def present_classes(overlay: LabelVolumeOverlay) -> list[int]:
    """Label values (1-based) with at least one voxel, from one pass over the volume."""
    counts = np.bincount(overlay.labels.ravel(), minlength=len(overlay.classes) + 1)
    return [k for k in range(1, len(overlay.classes) + 1) if counts[k] > 0]


def build_key_image(ctx: ObjectContext, overlay: LabelVolumeOverlay, slices: Sequence[SourceInstance],
                    present: Sequence[int]) -> Dataset:
    index = key_slice(overlay)
    source = pydicom.dcmread(slices[index].path)
    hu = source.pixel_array.astype(np.float64) * float(source.get("RescaleSlope", 1) or 1) \
        + float(source.get("RescaleIntercept", 0) or 0)
    rgb = grey_to_rgb(window(hu, *BRAIN_WINDOW))
    labels = overlay.labels[index]
    colours = {k: cls.colour for k, cls in enumerate(overlay.classes, start=1)}
    rgb = draw_outlines(rgb, labels, colours)
    volumes = (ctx.result.findings or {}).get("volumes_ml", {})
    legend = [LegendEntry(f"FirstLook AI {ctx.identity.name}, slice {index + 1}/{len(slices)}:")]
    for k, cls in enumerate(overlay.classes, start=1):
        if k in present:
            volume = volumes.get(cls.key)
            legend.append(LegendEntry(f"{cls.key} {volume:.1f} mL" if volume is not None else cls.key, cls.colour))
    return key_image(ctx, rgb, legend, source)


def build_head_ct(ctx: ObjectContext, overlay: LabelVolumeOverlay,
                  sources: dict[str, SourceInstance]) -> list[OutgoingObject]:
    slices = ordered_sources(ctx, overlay, sources)
    present = present_classes(overlay)
    seg = build_seg(ctx, overlay, slices, present) if present else None
    objects: list[OutgoingObject] = []
    evidence = [s.header for s in slices]
    if seg is not None:
        objects.append(OutgoingObject("seg", finish(seg, ctx, "seg", slices[0].header)))
        evidence = [*evidence, seg]  # the CT first: highdicom takes the acquisition equipment from it
    sr = build_sr(ctx, measurement_groups(ctx, overlay, seg, present), evidence, codes.CT_HEAD, slices[0].header)
    objects.append(OutgoingObject("sr", sr))
    if present:
        objects.append(OutgoingObject("sc", build_key_image(ctx, overlay, slices, present)))
    return objects
