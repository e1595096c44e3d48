"""Stored instances as DICOM JSON (PS3.18 F.2) for QIDO-RS and WADO-RS metadata.

Attributes are read from the stored files' headers (pixel data never read) with pydicom, and
encoded with ``Dataset.to_json_dict``; pixel data becomes a ``BulkDataURI`` to its frames.
"""

from __future__ import annotations

import threading
from collections import OrderedDict
from pathlib import Path
from typing import Any

import pydicom
from pydicom.datadict import tag_for_keyword
from pydicom.dataset import Dataset
from pydicom.tag import Tag

STUDY_KEYWORDS = ("SpecificCharacterSet", "StudyDate", "StudyTime", "AccessionNumber", "ReferringPhysicianName",
                  "PatientName", "PatientID", "PatientBirthDate", "PatientSex", "StudyInstanceUID", "StudyID",
                  "StudyDescription")
SERIES_KEYWORDS = ("SpecificCharacterSet", "Modality", "SeriesDescription", "SeriesNumber", "SeriesInstanceUID",
                   "StudyInstanceUID", "BodyPartExamined", "PerformedProcedureStepStartDate",
                   "PerformedProcedureStepStartTime")
INSTANCE_KEYWORDS = ("SpecificCharacterSet", "SOPClassUID", "SOPInstanceUID", "InstanceNumber", "Rows", "Columns",
                     "BitsAllocated", "NumberOfFrames", "StudyInstanceUID", "SeriesInstanceUID")

PIXEL_TAGS = (0x7FE00010, 0x7FE00008, 0x7FE00009)


def parse_tag(name: str) -> int | None:
    """``PatientID`` or ``00100020`` -> the tag; None if neither."""
    name = name.strip()
    if len(name) == 8:
        try:
            return int(name, 16)
        except ValueError:
            pass
    tag = tag_for_keyword(name)
    return int(tag) if tag is not None else None


def read_header(path: Path) -> Dataset:
    return pydicom.dcmread(path, stop_before_pixels=True, force=True)


def pick(source: Dataset, keywords: tuple[str, ...], extra: set[int]) -> Dataset:
    out = Dataset()
    for keyword in keywords:
        tag = tag_for_keyword(keyword)
        if tag is not None and tag in source:
            out[tag] = source[tag]
    for tag in extra:
        if tag in source and not Tag(tag).group == 0x0002:
            out[tag] = source[tag]
    return out


class HeaderJsonCache:
    """The picked attributes of stored headers as DICOM JSON, kept for repeated QIDO searches
    (a 1,000-study search reads 1,000 headers once). Keyed by the file's path, size and mtime,
    so a replaced instance is read again; bounded (least recently used goes first)."""

    def __init__(self, size: int = 4096) -> None:
        self.size = size
        self._items: OrderedDict[tuple[Any, ...], dict[str, Any]] = OrderedDict()
        self._lock = threading.Lock()

    def picked(self, path: Path, keywords: tuple[str, ...], extra: set[int]) -> dict[str, Any]:
        st = path.stat()
        key = (str(path), st.st_size, st.st_mtime_ns, keywords, frozenset(extra))
        with self._lock:
            found = self._items.get(key)
            if found is not None:
                self._items.move_to_end(key)
                return dict(found)
        value = to_json(pick(read_header(path), keywords, extra))
        with self._lock:
            self._items[key] = value
            while len(self._items) > self.size:
                self._items.popitem(last=False)
        return dict(value)


def to_json(ds: Dataset) -> dict[str, Any]:
    return ds.to_json_dict(bulk_data_threshold=1 << 30)


def instance_metadata(path: Path, instance_url: str) -> dict[str, Any]:
    """The whole header as DICOM JSON, pixel data as a BulkDataURI to all its frames (WADO-RS
    metadata; ``.../frames/1`` or ``.../frames/1,2,...,n``)."""
    full = pydicom.dcmread(path, force=True, defer_size=1024)
    pixel = None
    for tag in PIXEL_TAGS:
        if tag in full:
            pixel = (tag, full[tag].VR)
            del full[tag]
    out = to_json(full)
    if pixel is not None:
        frames = int(getattr(full, "NumberOfFrames", 1) or 1)
        out[f"{pixel[0]:08X}"] = {"vr": pixel[1] if pixel[1] in ("OB", "OW", "OF", "OD") else "OW",
                                  "BulkDataURI": f"{instance_url}/frames/{','.join(str(n) for n in range(1, frames + 1))}"}
    return out
