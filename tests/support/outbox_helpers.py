"""Helpers for the outbox tests: a stand-in object builder (plain pydicom SR + SC, so the outbox
can be tested without the real builder's cost), a pynetdicom Storage SCP on 127.0.0.1 answering a
chosen status, and results stored the way the pipeline stores them."""

from __future__ import annotations

import threading
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Sequence

import numpy as np
import pydicom
from pydicom.dataset import Dataset, FileMetaDataset
from pydicom.uid import ExplicitVRLittleEndian, generate_uid
from pynetdicom import AE, AllStoragePresentationContexts, evt

from app.core.pacs_objects import OutgoingObject
from app.core.results import AnalysisResult
from tests.support import free_port

SC_CLASS = "1.2.840.10008.5.1.4.1.1.7"
SR_CLASS = "1.2.840.10008.5.1.4.1.1.88.34"


def _dataset(kind: str, source: Dataset, version: int, supersedes: Sequence[str], uid_root: str | None) -> Dataset:
    ds = Dataset()
    prefix = f"{uid_root}." if uid_root else None
    ds.SOPClassUID = SR_CLASS if kind == "sr" else SC_CLASS
    ds.SOPInstanceUID = generate_uid(prefix)
    ds.StudyInstanceUID = source.StudyInstanceUID
    ds.SeriesInstanceUID = generate_uid(prefix)
    ds.PatientID = source.get("PatientID", "")
    ds.PatientName = source.get("PatientName", "")
    ds.Modality = "SR" if kind == "sr" else "OT"
    ds.SeriesNumber = 900 + version
    ds.SeriesDescription = f"FirstLook AI {kind} v{version}" + (f" supersedes {len(supersedes)}" if supersedes else "")
    ds.InstanceNumber = 1
    if kind == "sc":
        ds.SamplesPerPixel, ds.PhotometricInterpretation = 1, "MONOCHROME2"
        ds.Rows = ds.Columns = 8
        ds.BitsAllocated, ds.BitsStored, ds.HighBit, ds.PixelRepresentation = 8, 8, 7, 0
        ds.ConversionType = "WSD"
        ds.PixelData = np.arange(64, dtype=np.uint8).tobytes()
    meta = FileMetaDataset()
    meta.MediaStorageSOPClassUID = ds.SOPClassUID
    meta.MediaStorageSOPInstanceUID = ds.SOPInstanceUID
    meta.TransferSyntaxUID = ExplicitVRLittleEndian
    ds.file_meta = meta
    return ds


@dataclass
class StandInBuilder:
    """``build_result_objects``' signature; records its calls."""

    kinds: tuple[str, ...] = ("sr", "sc")
    calls: list[dict[str, Any]] = field(default_factory=list)

    def __call__(self, result: AnalysisResult, source_files: Sequence[Path], specs: Any, data_dir: Path,
                 uid_root: str | None = None, version: int = 1, supersedes: Sequence[str] = (),
                 **extra: Any) -> list[OutgoingObject]:
        self.calls.append({"series_uid": result.series_uid, "version": version, "supersedes": tuple(supersedes)})
        source = pydicom.dcmread(source_files[0], stop_before_pixels=True)
        return [OutgoingObject(kind, _dataset(kind, source, version, supersedes, uid_root)) for kind in self.kinds]


class RecordingSCP:
    """A real Storage SCP (pynetdicom) on 127.0.0.1 that answers ``status`` and keeps what it got."""

    def __init__(self, ae_title: str = "PACS", status: int = 0x0000, port: int | None = None) -> None:
        self.ae_title = ae_title
        self.status = status
        self.port = port or free_port()
        self.received: list[tuple[str, str, str]] = []  # (calling AE, SOP Class UID, SOP Instance UID)
        self._lock = threading.Lock()
        self._server: Any = None

    def _on_store(self, event: Any) -> int:
        ds = event.dataset
        with self._lock:
            self.received.append((event.assoc.requestor.ae_title, str(ds.SOPClassUID), str(ds.SOPInstanceUID)))
        return self.status

    def start(self, ssl_context: Any = None) -> "RecordingSCP":
        """``ssl_context``: a TLS server context (DICOM over TLS)."""
        ae = AE(ae_title=self.ae_title)
        ae.supported_contexts = AllStoragePresentationContexts
        self._server = ae.start_server(("127.0.0.1", self.port), block=False, ssl_context=ssl_context,
                                       evt_handlers=[(evt.EVT_C_STORE, self._on_store)])
        return self

    def stop(self) -> None:
        if self._server is not None:
            self._server.shutdown()
            self._server = None

    def sop_uids(self) -> list[str]:
        with self._lock:
            return [r[2] for r in self.received]


def done_result(series_uid: str, study_uid: str, priority: str = "urgent") -> AnalysisResult:
    return AnalysisResult(series_uid=series_uid, study_uid=study_uid, status="done", priority=priority,
                          model="chexnet", model_version="1.0.0", device="CPU", summary="test finding",
                          findings={"probabilities": {}, "flagged": []})
