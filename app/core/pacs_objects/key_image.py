"""A key image as a Secondary Capture: the rendered pixels, the legend and (unvalidated model)
the warning burned in, referencing the source image it was made from."""

from __future__ import annotations

from typing import Sequence

import highdicom as hd
import numpy as np
from pydicom.dataset import Dataset
from pydicom.uid import ExplicitVRLittleEndian

from app.core.pacs_objects.common import UNVALIDATED_WARNING, ObjectContext, finish
from app.core.pacs_objects.identity import MANUFACTURER
from app.core.pacs_objects.render import LegendEntry, compose
from app.core.pacs_objects.sr_report import notes

MIN_WIDTH = 512   # small images are enlarged (nearest neighbour) so the legend stays legible


def _letter(vector: Sequence[float]) -> str:
    """The patient direction (LPS) a unit vector mostly points to."""
    axis = int(np.argmax(np.abs(vector)))
    positive = float(vector[axis]) > 0
    return (("L", "R"), ("P", "A"), ("H", "F"))[axis][0 if positive else 1]


def patient_orientation(source: Dataset) -> tuple[str, str]:
    if "PatientOrientation" in source and len(source.PatientOrientation) == 2:
        return str(source.PatientOrientation[0]), str(source.PatientOrientation[1])
    if "ImageOrientationPatient" in source:
        iop = [float(v) for v in source.ImageOrientationPatient]
        return _letter(iop[:3]), _letter(iop[3:])
    return "L", "F"   # a frontal radiograph as displayed: patient's left on the viewer's right


def enlarge(rgb: np.ndarray) -> np.ndarray:
    factor = -(-MIN_WIDTH // rgb.shape[1]) if rgb.shape[1] < MIN_WIDTH else 1
    return np.repeat(np.repeat(rgb, factor, axis=0), factor, axis=1) if factor > 1 else rgb


def key_image(ctx: ObjectContext, rgb: np.ndarray, legend: Sequence[LegendEntry], source: Dataset) -> Dataset:
    banner = None if ctx.identity.validated else UNVALIDATED_WARNING
    pixels = compose(enlarge(rgb), legend, banner)
    sc = hd.sc.SCImage.from_ref_dataset(
        ref_dataset=source, pixel_array=pixels, photometric_interpretation="RGB", bits_allocated=8,
        coordinate_system="PATIENT", series_instance_uid=ctx.series_uid("sc"),
        series_number=ctx.series_number("sc"), sop_instance_uid=ctx.uid("sc", "instance"), instance_number=1,
        manufacturer=MANUFACTURER, patient_orientation=patient_orientation(source),
        transfer_syntax_uid=ExplicitVRLittleEndian)
    sc.BurnedInAnnotation = "YES"
    if source.get("BodyPartExamined"):
        sc.BodyPartExamined = source.BodyPartExamined
    if "Laterality" in source:
        sc.Laterality = source.Laterality
    elif not source.get("BodyPartExamined"):
        sc.Laterality = None  # type 2C: without a body part nothing says it is unpaired, so present and empty
    ref = Dataset()
    ref.ReferencedSOPClassUID = source.SOPClassUID
    ref.ReferencedSOPInstanceUID = source.SOPInstanceUID
    sc.SourceImageSequence = [ref]
    sc.DerivationDescription = f"FirstLook AI key image ({ctx.identity.one_line()})"[:1024]
    sc.ImageComments = " ".join(notes(ctx))[:10240]
    return finish(sc, ctx, "sc", source)
