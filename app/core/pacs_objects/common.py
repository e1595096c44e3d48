"""What every object FirstLook creates shares: UIDs, series naming, dates, patient module.

An object is a pure function of the stored result, its source files, the UID root and the
series version: the UIDs are derived from them and the content date/time is the result's
creation time, so rebuilding after a crash gives byte-for-byte the same objects.
"""

from __future__ import annotations

import datetime
import logging
from dataclasses import dataclass
from pathlib import Path
from typing import Sequence

import pydicom
from pydicom.dataset import Dataset, FileMetaDataset
from pydicom.uid import ExplicitVRLittleEndian

from app.core.pacs_objects.identity import MANUFACTURER, AlgorithmIdentity
from app.core.results import AnalysisResult
from app.core.uids import derived_uid

log = logging.getLogger(__name__)

UNVALIDATED_WARNING = "UNVALIDATED AI OUTPUT - NOT FOR DIAGNOSIS"
_WHAT = {"sr": "SR measurements", "seg": "SEG segmentation", "sc": "SC key image"}
SERIES_NUMBER_BASE = {"sr": 9100, "seg": 9200, "sc": 9300}

# Patient (and patient-study) attributes highdicom does not copy from the source itself.
_PATIENT_EXTRAS = (
    "SpecificCharacterSet", "IssuerOfPatientID", "IssuerOfPatientIDQualifiersSequence", "OtherPatientIDsSequence",
    "PatientBirthTime", "PatientComments", "PatientIdentityRemoved", "DeidentificationMethod",
    "DeidentificationMethodCodeSequence", "EthnicGroup", "PatientAge", "PatientSize", "PatientWeight",
    "StudyDescription", "IssuerOfAccessionNumberSequence",
)
_PATIENT_STUDY = ("PatientName", "PatientID", "PatientBirthDate", "PatientSex", "StudyInstanceUID", "StudyDate",
                  "StudyTime", "StudyID", "AccessionNumber", "ReferringPhysicianName")


@dataclass(frozen=True)
class SourceInstance:
    path: Path
    header: Dataset                  # read without pixel data


def read_sources(source_files: Sequence[Path]) -> dict[str, SourceInstance]:
    """The analysed series' instances by SOP Instance UID (headers only)."""
    out: dict[str, SourceInstance] = {}
    for path in source_files:
        header = pydicom.dcmread(path, stop_before_pixels=True)
        for keyword in _PATIENT_STUDY:  # type 2 in every object: present, possibly empty
            if keyword not in header:
                setattr(header, keyword, None)
        out[str(header.SOPInstanceUID)] = SourceInstance(Path(path), header)
    return out


@dataclass(frozen=True)
class ObjectContext:
    """The facts every object of one result needs."""

    result: AnalysisResult
    identity: AlgorithmIdentity
    uid_root: str | None
    version: int
    supersedes: tuple[str, ...]

    def uid(self, kind: str, role: str) -> str:
        r = self.result
        return derived_uid(self.uid_root, "firstlook-object", r.study_uid, r.series_uid, r.model,
                           repr(r.created_at), self.version, kind, role)

    def series_uid(self, kind: str) -> str:
        return self.uid(kind, "series")

    def series_number(self, kind: str) -> int:
        return SERIES_NUMBER_BASE[kind] + self.version

    def series_description(self, kind: str) -> str:
        what = f"FirstLook AI {_WHAT[kind]} v{self.version}"
        if not self.identity.validated:
            return f"UNVALIDATED NOT FOR DIAGNOSIS {what}"[:64]
        return what[:64]

    @property
    def content_datetime(self) -> datetime.datetime:
        return datetime.datetime.fromtimestamp(self.result.created_at)

    @property
    def software_versions(self) -> str:
        from app import __version__

        return f"FirstLook {__version__}"

    def supersedes_text(self) -> str | None:
        if not self.supersedes:
            return None
        return (f"Version {self.version} of FirstLook's output for this series; it supersedes "
                + ", ".join(self.supersedes))


def finish(ds: Dataset, ctx: ObjectContext, kind: str, source: Dataset) -> Dataset:
    """Series description, content date/time, the rest of the patient module, File Meta."""
    moment = ctx.content_datetime
    for keyword in _PATIENT_STUDY + _PATIENT_EXTRAS:
        if keyword in source and keyword not in ds:
            ds[keyword] = source[keyword]
    if ds.get("PatientIdentityRemoved") == "YES" and not ds.get("DeidentificationMethod") \
            and not ds.get("DeidentificationMethodCodeSequence"):
        ds.DeidentificationMethod = "not stated in the source images"  # 1C: required once identity is removed
    ds.SeriesDescription = ctx.series_description(kind)
    ds.ContentDate = moment.strftime("%Y%m%d")
    ds.ContentTime = moment.strftime("%H%M%S.%f")
    ds.InstanceCreationDate = ds.ContentDate
    ds.InstanceCreationTime = ds.ContentTime
    if "SeriesDate" not in ds:
        ds.SeriesDate, ds.SeriesTime = ds.ContentDate, ds.ContentTime
    _pin_library_values(ds, ctx, kind, moment)
    _declare_private_scheme(ds)
    ds.Manufacturer = MANUFACTURER
    ds.ManufacturerModelName = ctx.identity.model_name
    ds.SoftwareVersions = [ctx.software_versions, f"{ctx.identity.name} {ctx.identity.version}"]
    ensure_file_meta(ds)
    return ds


def _declare_private_scheme(ds: Dataset) -> None:
    """SOP Common's Coding Scheme Identification: say what ``99FIRSTLOOK`` is (PS3.3 C.12.1.1.4)."""
    from app.core.pacs_objects.codes import PRIVATE_SCHEME

    item = Dataset()
    item.CodingSchemeDesignator = PRIVATE_SCHEME
    item.CodingSchemeName = "FirstLook private codes (see FirstLook DICOM Conformance Statement)"
    item.CodingSchemeResponsibleOrganization = MANUFACTURER
    existing = [i for i in ds.get("CodingSchemeIdentificationSequence", [])
                if i.get("CodingSchemeDesignator") != PRIVATE_SCHEME]
    ds.CodingSchemeIdentificationSequence = [*existing, item]


def _pin_library_values(ds: Dataset, ctx: ObjectContext, kind: str, moment: datetime.datetime) -> None:
    """Values highdicom draws from the clock or at random, pinned so a rebuild is identical."""
    stamp = moment.strftime("%Y%m%d%H%M%S.%f")
    for item in ds.get("ContributingEquipmentSequence", []):
        if "ContributionDateTime" in item:
            item.ContributionDateTime = stamp
    if "DateOfSecondaryCapture" in ds:
        ds.DateOfSecondaryCapture, ds.TimeOfSecondaryCapture = stamp[:8], stamp[8:]
    dimension_uid = ctx.uid(kind, "dimension-organization")
    for keyword in ("DimensionOrganizationSequence", "DimensionIndexSequence"):
        for item in ds.get(keyword, []):
            if "DimensionOrganizationUID" in item:
                item.DimensionOrganizationUID = dimension_uid


def ensure_file_meta(ds: Dataset) -> None:
    meta = getattr(ds, "file_meta", None)
    if meta is None or "TransferSyntaxUID" not in meta:
        meta = FileMetaDataset()
        meta.TransferSyntaxUID = ExplicitVRLittleEndian
        ds.file_meta = meta
    meta.MediaStorageSOPClassUID = ds.SOPClassUID
    meta.MediaStorageSOPInstanceUID = ds.SOPInstanceUID
    ds.set_original_encoding(meta.TransferSyntaxUID.is_implicit_VR, meta.TransferSyntaxUID.is_little_endian)
