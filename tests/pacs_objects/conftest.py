"""Results to turn into DICOM objects, and the checkers every object goes through.

Head CT: a label volume on the REAL gantry-tilted series' slices and geometry (BLAST-CT
itself takes minutes here; bench/bench_pacs_objects.py runs it), written through the
spec's own ``write_overlay``. Chest: the real CheXNet pack through the real pipeline.
"""

from __future__ import annotations

import shutil
import subprocess
from dataclasses import replace
from pathlib import Path
from types import SimpleNamespace
from typing import Callable, Sequence

import numpy as np
import pydicom
import pytest

from app.core.config import Config
from app.core.events import EventHub
from app.core.models.blast_ct import BlastCtSpec
from app.core.pacs_objects import OutgoingObject
from app.core.pipeline import Pipeline
from app.core.results import AnalysisResult
from app.core.store import StudyStore
from app.core.triage import flagged_labels
from tests.support.dicom_factory import make_cxr_dataset, write


class DirSink:
    """The spec's overlay sink, writing under ``<data_dir>/results/<series>/`` like the store does."""

    def __init__(self, data_dir: Path, series_uid: str) -> None:
        self.folder = data_dir / "results" / series_uid
        self.folder.mkdir(parents=True, exist_ok=True)

    def save_npz(self, filename: str, **arrays: object) -> Path:
        target = self.folder / filename
        np.savez_compressed(target, **arrays)
        return target


def slices_along_normal(files: Sequence[Path]) -> list[pydicom.Dataset]:
    headers = [pydicom.dcmread(f, stop_before_pixels=True) for f in files]
    iop = np.array(headers[0].ImageOrientationPatient, dtype=float)
    normal = np.cross(iop[:3], iop[3:])
    return sorted(headers, key=lambda h: float(np.dot(normal, np.array(h.ImagePositionPatient, dtype=float))))


def head_result(data_dir: Path, files: Sequence[Path], labels_for: Callable[[int, int, int], np.ndarray], validated: bool = True,
                created_at: float = 1_790_000_000.0) -> tuple[AnalysisResult, np.ndarray]:
    """A blast-ct result whose overlay is ``labels_for(rows, cols, n_slices)`` on the series' own slices."""
    spec = BlastCtSpec()
    headers = slices_along_normal(files)
    first = headers[0]
    labels = labels_for(int(first.Rows), int(first.Columns), len(headers)).astype(np.uint8)
    model_input = SimpleNamespace(sop_uids=[str(h.SOPInstanceUID) for h in headers])
    overlay = spec.write_overlay(model_input, SimpleNamespace(labels=labels),
                                 DirSink(data_dir, str(first.SeriesInstanceUID)))
    spacing = [float(v) for v in first.PixelSpacing]
    thickness = float(first.get("SliceThickness") or 1.0)
    volumes = {c.key: float(np.count_nonzero(labels == k)) * spacing[0] * spacing[1] * thickness / 1000.0
               for k, c in enumerate(spec.label_classes, start=1)}
    involved = {c.key: int(np.count_nonzero((labels == k).any(axis=(1, 2))))
                for k, c in enumerate(spec.label_classes, start=1)}
    thresholds = dict(spec.default_thresholds)
    flagged = flagged_labels(volumes, thresholds)
    result = AnalysisResult(
        series_uid=str(first.SeriesInstanceUID), study_uid=str(first.StudyInstanceUID), status="done",
        priority="urgent" if flagged else "routine", model=spec.name, model_version="1.0.0", device="CPU",
        validated=validated, summary="test", created_at=created_at,
        findings={"volumes_ml": volumes, "slices_involved": involved, "max_slice": {}, "thresholds": thresholds,
                  "flagged": flagged, "rule_priority": "urgent" if flagged else "routine"},
        overlay_path=str(overlay.relative_to(data_dir)))
    return result, labels


def blobs(rows: int, cols: int, n: int) -> np.ndarray:
    """IPH over several slices, IVH on one, oedema around the IPH; no EAH (absent class)."""
    labels = np.zeros((n, rows, cols), dtype=np.uint8)
    yy, xx = np.mgrid[0:rows, 0:cols]
    mid = n // 2
    for k in range(max(0, mid - 3), min(n, mid + 3)):
        ring = np.hypot(yy - rows * 0.45, xx - cols * 0.55)
        labels[k][ring < rows * 0.10] = 3
        labels[k][ring < rows * 0.06] = 1
    labels[mid][np.hypot(yy - rows * 0.5, xx - cols * 0.4) < rows * 0.03] = 4
    return labels


@pytest.fixture
def headct_files(headct_dir: Path) -> list[Path]:
    return sorted(headct_dir.glob("*.dcm"))


@pytest.fixture(scope="module")
def chexnet_run(packs_dir: Path, cxr_dir: Path, tmp_path_factory: pytest.TempPathFactory):
    """One radiograph through the real pipeline and the real (unvalidated) CheXNet pack."""
    tmp = tmp_path_factory.mktemp("chexnet")
    data_dir = tmp / "data"
    store = StudyStore(data_dir)
    ds = make_cxr_dataset(cxr_dir / "images/00000211_000.png", modality="CR", photometric="MONOCHROME1")
    ds.PatientName, ds.PatientID = "Test^Chest", "PACSOBJ-1"
    path = write(ds, tmp)
    series_uid = store.store_instance(path.read_bytes(), "CR01").header.series_uid
    store.enqueue_job(series_uid)
    config = replace(Config(), data_dir=data_dir, packs_dir=packs_dir, cache_dir=tmp / "cache")
    pipeline = Pipeline(config, store, EventHub())
    pipeline.models.load()
    pipeline.run_until_idle()
    result = store.get_result(series_uid)
    assert result is not None and result.status == "done"
    yield SimpleNamespace(result=result, files=store.series_files(series_uid), data_dir=store.data_dir,
                          source=pydicom.dcmread(path, stop_before_pixels=True))
    store.close()


def save(obj: OutgoingObject, directory: Path) -> Path:
    path = directory / f"{obj.kind}-{obj.sop_instance_uid}.dcm"
    pydicom.dcmwrite(path, obj.dataset, enforce_file_format=True)
    return path


def dciodvfy(path: Path) -> tuple[list[str], list[str]]:
    """(errors, warnings) dicom3tools reports for a file."""
    tool = shutil.which("dciodvfy")
    assert tool, "dciodvfy (Debian dicom3tools) is required"
    proc = subprocess.run([tool, str(path)], capture_output=True, text=True, timeout=120)
    lines = (proc.stdout + proc.stderr).splitlines()
    return [l for l in lines if l.startswith("Error")], [l for l in lines if l.startswith("Warning")]


def dsrdump(path: Path) -> str:
    tool = shutil.which("dsrdump")
    assert tool, "dsrdump (DCMTK) is required"
    proc = subprocess.run([tool, "+Pl", str(path)], capture_output=True, text=True, timeout=60)
    assert proc.returncode == 0, proc.stderr
    return proc.stdout
