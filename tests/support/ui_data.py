"""Real studies for the UI tests, benchmark and screenshots: factory DICOM through
``StudyStore.store_instance`` and results through ``save_result`` with real overlay files
in the documented formats (cam.npz, labels.npz). No mocks: real SQLite, real files.
"""

from __future__ import annotations

import io
import time
from dataclasses import dataclass
from pathlib import Path

import numpy as np
from pydicom.dataset import Dataset
from pydicom.uid import generate_uid

from app.core.results import AnalysisResult
from app.core.store import StudyStore
from tests.support.dicom_factory import make_ct_slice, make_cxr_dataset

CHEXNET_LABELS = ("Atelectasis", "Cardiomegaly", "Effusion", "Infiltration", "Mass", "Nodule", "Pneumonia",
                  "Pneumothorax", "Consolidation", "Edema", "Emphysema", "Fibrosis", "Pleural_Thickening", "Hernia")
BLAST_CLASSES = ("IPH", "EAH", "oedema", "IVH")


def encode(ds: Dataset) -> bytes:
    buf = io.BytesIO()
    ds.save_as(buf, enforce_file_format=True)
    return buf.getvalue()


@dataclass
class Stored:
    study_uid: str
    series_uid: str
    sop_uids: list[str]


def add_cxr(store: StudyStore, png: Path, patient_name: str = "TEST^CHEST", patient_id: str | None = None,
            received_at: float | None = None, photometric: str = "MONOCHROME2") -> Stored:
    ds = make_cxr_dataset(png, patient_name=patient_name, patient_id=patient_id, photometric=photometric)
    store.store_instance(encode(ds), calling_ae="CR01", received_at=received_at)
    return Stored(str(ds.StudyInstanceUID), str(ds.SeriesInstanceUID), [str(ds.SOPInstanceUID)])


def synthetic_head(n: int, size: int = 128, bleed_slices: range | None = None) -> list[np.ndarray]:
    """HU slices: air, a skull ring, brain at 35 HU, and a 70 HU blob on ``bleed_slices``."""
    yy, xx = np.mgrid[0:size, 0:size]
    r = np.hypot(yy - size / 2, xx - size / 2)
    out = []
    for k in range(n):
        img = np.full((size, size), -1000.0)
        img[r < size * 0.42] = 900.0
        img[r < size * 0.38] = 35.0 + (k % 5)
        if bleed_slices is not None and k in bleed_slices:
            img[(yy - size * 0.4) ** 2 + (xx - size * 0.6) ** 2 < (size * 0.08) ** 2] = 70.0
        out.append(img)
    return out


def add_ct(store: StudyStore, n: int = 12, size: int = 128, patient_id: str = "CT0001",
           received_at: float | None = None, shuffle: bool = True, spacing: tuple[float, float] = (0.5, 0.5),
           thickness: float = 5.0, bleed_slices: range | None = None) -> Stored:
    """A head CT stored in a shuffled order with instance numbers that disagree with position,
    so only ordering along the slice normal puts it right."""
    study, series = generate_uid(), generate_uid()
    slices = synthetic_head(n, size, bleed_slices)
    order = list(range(n))
    if shuffle:
        order = order[::2][::-1] + order[1::2]
    sops = [""] * n
    for k in order:
        ds = make_ct_slice(slices[k], position=(0.0, 0.0, k * thickness), spacing=spacing, thickness=thickness,
                           instance=n - k, study_uid=study, series_uid=series, patient_id=patient_id)
        ds.SliceLocation = k * thickness
        store.store_instance(encode(ds), calling_ae="CT01", received_at=received_at)
        sops[k] = str(ds.SOPInstanceUID)
    return Stored(study, series, sops)  # sops in true inferior -> superior order


def cam_with_hotspot(rows: int, cols: int, label_index: int, box: tuple[int, int, int, int]) -> np.ndarray:
    """uint8 [14, rows, cols]: zero everywhere except a full-strength box (r0, r1, c0, c1)."""
    cam = np.zeros((len(CHEXNET_LABELS), rows, cols), dtype=np.uint8)
    r0, r1, c0, c1 = box
    cam[label_index, r0:r1, c0:c1] = 255
    return cam


def save_chexnet(store: StudyStore, stored: Stored, probabilities: dict[str, float], priority: str,
                 validated: bool = False, cam: np.ndarray | None = None, arrival_to_result: float = 42.0,
                 thresholds: float = 0.5) -> AnalysisResult:
    flagged = [k for k, v in probabilities.items() if v >= thresholds]
    overlay = None
    if cam is not None:
        directory = store.result_overlay_dir(stored.series_uid)
        np.savez_compressed(directory / "cam.npz", cam=cam, labels=np.array(CHEXNET_LABELS))
        overlay = str((directory / "cam.npz").relative_to(store.data_dir))
    text = ", ".join(f"{k} {probabilities[k]:.2f}" for k in flagged) or "no finding above threshold"
    result = AnalysisResult(
        series_uid=stored.series_uid, study_uid=stored.study_uid, status="done", priority=priority,
        model="chexnet", model_version="1.0.0", device="CPU", validated=validated,
        summary=text if validated else "UNVALIDATED model, not for diagnosis: " + text,
        findings={"probabilities": {k: float(probabilities.get(k, 0.01)) for k in CHEXNET_LABELS},
                  "thresholds": {k: thresholds for k in CHEXNET_LABELS}, "flagged": flagged,
                  "sop_uid": stored.sop_uids[0]},
        timings={"decode": 0.05, "preprocess": 0.02, "infer": 0.3, "total": 0.4,
                 "arrival_to_result": arrival_to_result},
        overlay_path=overlay, arrival_at=time.time() - arrival_to_result,
    )
    store.save_result(result)
    return result


def save_blastct(store: StudyStore, stored: Stored, labels: np.ndarray, priority: str, validated: bool = False,
                 label_order: list[str] | None = None) -> AnalysisResult:
    """labels uint8 [slices, rows, cols] in the order of ``label_order`` SOP UIDs (default: true order)."""
    sops = label_order or stored.sop_uids
    directory = store.result_overlay_dir(stored.series_uid)
    np.savez_compressed(directory / "labels.npz", labels=labels, sop_uids=np.array(sops),
                        classes=np.array(BLAST_CLASSES))
    voxel_ml = 0.5 * 0.5 * 5.0 / 1000.0
    volumes = {c: float(np.count_nonzero(labels == k) * voxel_ml) for k, c in enumerate(BLAST_CLASSES, start=1)}
    flagged = [c for c, v in volumes.items() if v >= 0.01]
    text = ", ".join(f"{c} {volumes[c]:.1f} mL" for c in flagged) or "no haemorrhage or oedema above threshold"
    result = AnalysisResult(
        series_uid=stored.series_uid, study_uid=stored.study_uid, status="done", priority=priority,
        model="blast-ct", model_version="1.0.0", device="CPU", validated=validated,
        summary=text if validated else "UNVALIDATED model, not for diagnosis: " + text,
        findings={"volumes_ml": volumes, "thresholds": {c: 0.01 for c in BLAST_CLASSES}, "flagged": flagged,
                  "slices_involved": {c: int(np.any(labels == k, axis=(1, 2)).sum())
                                      for k, c in enumerate(BLAST_CLASSES, start=1)},
                  "max_slice": {}},
        timings={"decode": 0.4, "infer": 20.0, "total": 21.0, "arrival_to_result": 60.0},
        overlay_path=str((directory / "labels.npz").relative_to(store.data_dir)),
    )
    store.save_result(result)
    return result


def save_status(store: StudyStore, stored: Stored, status: str, reason: str) -> AnalysisResult:
    """A not_analysed or failed result (no model output, no overlay)."""
    result = AnalysisResult(series_uid=stored.series_uid, study_uid=stored.study_uid, status=status,
                            priority=status, reason=reason)
    store.save_result(result)
    return result
