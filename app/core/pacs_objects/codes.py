"""The coded concepts FirstLook writes into SR and SEG (SNOMED CT and DCM where they exist).

Where DICOM's code lists offer no concept (e.g. "extra-axial haemorrhage", "AI flag"),
FirstLook uses its private coding scheme ``99FIRSTLOOK`` (PS3.16 8.2: schemes starting
with "99" are private), listed in docs/conformance.md.
"""

from __future__ import annotations

from dataclasses import dataclass

from pydicom.sr.coding import Code

PRIVATE_SCHEME = "99FIRSTLOOK"


def private(value: str, meaning: str) -> Code:
    return Code(value, PRIVATE_SCHEME, meaning)


# Segmented property category (CID 7150) shared by every BLAST-CT class.
MORPHOLOGICALLY_ABNORMAL = Code("49755003", "SCT", "Morphologically Abnormal Structure")
BRAIN = Code("12738006", "SCT", "Brain")
BRAIN_VENTRICLE = Code("35764002", "SCT", "Brain ventricle")
CRANIAL_CAVITY = Code("1101003", "SCT", "Intracranial")


@dataclass(frozen=True)
class SegmentCode:
    """Type and (optional) anatomic region of one segmentation class."""

    category: Code
    type: Code
    region: Code | None


# BLAST-CT label keys -> codes (the labels are app.core.models.blast_ct.CLASSES).
BLAST_CT_SEGMENTS: dict[str, SegmentCode] = {
    "IPH": SegmentCode(MORPHOLOGICALLY_ABNORMAL, Code("50960005", "SCT", "Hemorrhage"), BRAIN),
    "EAH": SegmentCode(MORPHOLOGICALLY_ABNORMAL, Code("50960005", "SCT", "Hemorrhage"), CRANIAL_CAVITY),
    "oedema": SegmentCode(MORPHOLOGICALLY_ABNORMAL, Code("79654002", "SCT", "Edema"), BRAIN),
    "IVH": SegmentCode(MORPHOLOGICALLY_ABNORMAL, Code("50960005", "SCT", "Hemorrhage"), BRAIN_VENTRICLE),
}

# CheXNet (ChestX-ray14) labels -> finding codes; SNOMED CT where a concept matches the label.
CHEXNET_FINDINGS: dict[str, Code] = {
    "Atelectasis": Code("46621007", "SCT", "Atelectasis"),
    "Cardiomegaly": Code("8186001", "SCT", "Cardiomegaly"),
    "Effusion": Code("60046008", "SCT", "Pleural effusion"),
    "Infiltration": Code("112121", "DCM", "Infiltrate"),
    "Mass": Code("4147007", "SCT", "Mass"),
    "Nodule": Code("27925004", "SCT", "Nodule"),
    "Pneumonia": Code("233604007", "SCT", "Pneumonia"),
    "Pneumothorax": Code("36118008", "SCT", "Pneumothorax"),
    "Consolidation": Code("95436008", "SCT", "Lung consolidation"),
    "Edema": Code("19242006", "SCT", "Pulmonary edema"),
    "Emphysema": Code("87433001", "SCT", "Pulmonary emphysema"),
    "Fibrosis": Code("51615001", "SCT", "Fibrosis of lung"),
    "Pleural_Thickening": private("PLEURAL-THICK", "Pleural thickening"),
    "Hernia": Code("84089009", "SCT", "Hiatal hernia"),
}


def finding_code(label: str) -> Code:
    """A chest finding's code; an unknown label gets a private code named after it."""
    return CHEXNET_FINDINGS.get(label) or private(label.upper()[:16], label.replace("_", " "))


# Measurements and evaluations.
VOLUME = Code("118565006", "SCT", "Volume")
MILLILITRE = Code("ml", "UCUM", "milliliter")
SLICES_INVOLVED = private("SLICES-INVOLVED", "Number of slices involved")
SLICES_UNIT = Code("{slices}", "UCUM", "slices")
PROBABILITY = Code("122157", "DCM", "Probability")
NO_UNITS = Code("1", "UCUM", "no units")
AI_FLAG = private("AI-FLAG", "Flagged by AI (value at or above threshold)")
THRESHOLD = private("AI-THRESHOLD", "AI operating threshold")
PRESENT = Code("52101004", "SCT", "Present")
ABSENT = Code("2667000", "SCT", "Absent")
PRIORITY = Code("260870009", "SCT", "Priority")
PRIORITIES: dict[str, Code] = {
    "critical": private("PRIORITY-CRIT", "Critical (FirstLook triage)"),
    "urgent": Code("103391001", "SCT", "Urgent"),
    "routine": Code("50811001", "SCT", "Routine"),
}
TRIAGE_FINDING = private("AI-TRIAGE", "AI triage of the series")
QUALITATIVE_EVALUATIONS = Code("C0034375", "UMLS", "Qualitative Evaluations")
COMMENT = Code("121106", "DCM", "Comment")
UNVALIDATED_TITLE = private("UNVALIDATED-REPORT", "UNVALIDATED AI - NOT FOR DIAGNOSIS - Imaging Measurements")
VALIDATED_TITLE = Code("126000", "DCM", "Imaging Measurement Report")
SUPERSEDES = private("SUPERSEDES", "Supersedes earlier FirstLook object")
# Procedure reported (TID 1500 row 5): CT of head, X-ray of chest.
CT_HEAD = Code("303653007", "SCT", "Computed tomography of head")
CHEST_XRAY = Code("399208008", "SCT", "Plain chest X-ray")
