"""``OutgoingObject``: one DICOM object FirstLook made for a result, ready for C-STORE."""

from __future__ import annotations

from dataclasses import dataclass

import pydicom

KINDS = ("sr", "seg", "sc")


@dataclass(frozen=True)
class OutgoingObject:
    """A complete dataset (with File Meta) and which kind of object it is: "sr", "seg" or "sc"."""

    kind: str
    dataset: pydicom.Dataset

    def __post_init__(self) -> None:
        if self.kind not in KINDS:
            raise ValueError(f"unknown object kind {self.kind!r}")

    @property
    def sop_instance_uid(self) -> str:
        return str(self.dataset.SOPInstanceUID)

    @property
    def sop_class_uid(self) -> str:
        return str(self.dataset.SOPClassUID)

    @property
    def series_uid(self) -> str:
        return str(self.dataset.SeriesInstanceUID)
