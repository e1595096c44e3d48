"""TID 1500 Measurement Report as a Comprehensive 3D SR, built with highdicom's templates.

The measurement groups come from the model-specific builders; this module adds what every
report of FirstLook carries: the device observer, the algorithm, the triage priority as a
qualitative evaluation, and (TID 1500's root "Qualitative Evaluations" container) a text
item saying an unvalidated model is not for diagnosis, plus which earlier objects a
re-analysis supersedes.
"""

from __future__ import annotations

from typing import Sequence

import highdicom as hd
from pydicom.dataset import Dataset
from pydicom.sr.codedict import codes as dcm_codes
from pydicom.sr.coding import Code

from app.core.pacs_objects import codes
from app.core.pacs_objects.common import UNVALIDATED_WARNING, ObjectContext, finish
from app.core.pacs_objects.identity import MANUFACTURER

Group = (hd.sr.MeasurementsAndQualitativeEvaluations | hd.sr.VolumetricROIMeasurementsAndQualitativeEvaluations)


def algorithm_id(ctx: ObjectContext) -> hd.sr.AlgorithmIdentification:
    ident = ctx.identity
    return hd.sr.AlgorithmIdentification(
        name=ident.name, version=ident.version, manufacturer=MANUFACTURER,
        family=dcm_codes.cid7162.ArtificialIntelligence,
        parameters=[f"{key}={value}" for key, value in ident.parameters().items()])


def tracking(ctx: ObjectContext, key: str, text: str) -> hd.sr.TrackingIdentifier:
    return hd.sr.TrackingIdentifier(uid=ctx.uid("sr", f"tracking-{key}"), identifier=text[:64])


def triage_group(ctx: ObjectContext) -> hd.sr.MeasurementsAndQualitativeEvaluations:
    """The result's triage priority (unvalidated packs never raise it above routine)."""
    priority = codes.PRIORITIES.get(ctx.result.priority)
    evaluations = [hd.sr.QualitativeEvaluation(codes.PRIORITY, priority)] if priority is not None else None
    return hd.sr.MeasurementsAndQualitativeEvaluations(
        tracking_identifier=tracking(ctx, "triage", "FirstLook triage"), finding_type=codes.TRIAGE_FINDING,
        algorithm_id=algorithm_id(ctx), qualitative_evaluations=evaluations)


def flag_evaluation(flagged: bool) -> hd.sr.QualitativeEvaluation:
    return hd.sr.QualitativeEvaluation(codes.AI_FLAG, codes.PRESENT if flagged else codes.ABSENT)


def _observation_context(ctx: ObjectContext) -> hd.sr.ObservationContext:
    device = hd.sr.DeviceObserverIdentifyingAttributes(
        uid=ctx.uid("sr", "device-observer"), name=f"FirstLook {ctx.identity.name}"[:64],
        manufacturer_name=MANUFACTURER, model_name=f"{ctx.identity.name} {ctx.identity.version}"[:64],
        serial_number=ctx.identity.pack_hash[:64])
    return hd.sr.ObservationContext(observer_device_context=hd.sr.ObserverContext(
        observer_type=dcm_codes.cid270.Device, observer_identifying_attributes=device))


def _text(value: str) -> hd.sr.TextContentItem:
    return hd.sr.TextContentItem(name=codes.COMMENT, value=value,
                                 relationship_type=hd.sr.RelationshipTypeValues.CONTAINS)


def notes(ctx: ObjectContext) -> list[str]:
    """The free-text notes of the report: the unvalidated warning first, then provenance."""
    ident = ctx.identity
    out = []
    if not ident.validated:
        out.append(f"{UNVALIDATED_WARNING}: the {ident.name} model pack is not validated; "
                   "this report must not be used for diagnosis.")
    out.append(f"Produced by FirstLook AI ({ident.one_line()}); not reviewed by a physician.")
    superseded = ctx.supersedes_text()
    if superseded:
        out.append(superseded)
    return out


def build_sr(ctx: ObjectContext, groups: Sequence[Group], evidence: Sequence[Dataset], procedure: Code,
             source: Dataset) -> Dataset:
    title = codes.VALIDATED_TITLE if ctx.identity.validated else codes.UNVALIDATED_TITLE
    report = hd.sr.MeasurementReport(observation_context=_observation_context(ctx), procedure_reported=procedure,
                                     imaging_measurements=list(groups), title=title)
    root = report[0]
    container = hd.sr.ContainerContentItem(name=codes.QUALITATIVE_EVALUATIONS,
                                           relationship_type=hd.sr.RelationshipTypeValues.CONTAINS)
    container.ContentSequence = hd.sr.ContentSequence([_text(note) for note in notes(ctx)])
    root.ContentSequence.append(container)
    sr = hd.sr.Comprehensive3DSR(
        evidence=list(evidence), content=root, series_instance_uid=ctx.series_uid("sr"),
        series_number=ctx.series_number("sr"), sop_instance_uid=ctx.uid("sr", "instance"), instance_number=1,
        manufacturer=MANUFACTURER, is_complete=True, is_final=False, is_verified=False)
    return finish(sr, ctx, "sr", source)
