"""Analyse one stored series: route it, run its model, triage, and save overlays.

Always returns an ``AnalysisResult``: bad input becomes "not analysed: <reason>", a broken
model or an unexpected error becomes "failed: <reason>"; nothing here may take the
pipeline down.
"""

from __future__ import annotations

import logging
import os
import time
import uuid
from pathlib import Path
from typing import Any

import numpy as np
import pydicom

from app.core.config import Config
from app.core.model_registry import ModelRegistry, ModelUnavailable
from app.core.router import BLAST_CT, CHEXNET, SeriesInfo, route
from app.core.store import AnalysisResult, StudyStore
from app.core.triage import effective_priority, flagged_labels, priority_from_rules

log = logging.getLogger(__name__)

UNVALIDATED_PREFIX = "UNVALIDATED model, not for diagnosis: "
BLAST_CT_CLASSES = ("IPH", "EAH", "oedema", "IVH")


def _not_analysed(series_uid: str, study_uid: str, reason: str, **extra: Any) -> AnalysisResult:
    return AnalysisResult(series_uid=series_uid, study_uid=study_uid, status="not_analysed",
                          priority="not_analysed", reason=reason, summary=f"not analysed: {reason}", **extra)


def _failed(series_uid: str, study_uid: str, reason: str, **extra: Any) -> AnalysisResult:
    return AnalysisResult(series_uid=series_uid, study_uid=study_uid, status="failed", priority="failed",
                          reason=reason, summary=f"failed: {reason}", **extra)


def _save_npz(store: StudyStore, target: Path, **arrays: Any) -> None:
    """Write an overlay under a temporary name in the store's tmp dir (cleared at start) and
    rename it into place: a crash mid-write never leaves a truncated overlay behind a result."""
    tmp = store.tmp_dir / f"{uuid.uuid4().hex}.part"
    try:
        with open(tmp, "wb") as fh:
            np.savez_compressed(fh, **arrays)
        os.replace(tmp, target)
    finally:
        tmp.unlink(missing_ok=True)


def _thresholds(config: Config, model: str, pack_thresholds: dict[str, float]) -> dict[str, float]:
    merged = dict(pack_thresholds)
    merged.update({k: float(v) for k, v in config.thresholds.get(model, {}).items() if k in merged})
    return merged


class SeriesAnalyser:
    def __init__(self, config: Config, store: StudyStore, models: ModelRegistry) -> None:
        self.config = config
        self.store = store
        self.models = models

    def analyse(self, series_uid: str, wait_for_models: float | None = None) -> AnalysisResult:
        series = self.store.get_series(series_uid)
        if series is None:
            raise KeyError(series_uid)
        started = time.perf_counter()
        base = {"arrival_at": series.first_received}
        try:
            files = self.store.series_files(series_uid)
            if not files:
                return _not_analysed(series_uid, series.study_uid, "the series has no stored instances", **base)
            try:
                first = pydicom.dcmread(files[0], stop_before_pixels=True, force=True)
                info = SeriesInfo.from_dataset(first, len(files))
            except Exception as exc:
                return _not_analysed(series_uid, series.study_uid, f"headers cannot be read ({exc.__class__.__name__})", **base)
            decision = route(info)
            if decision.model is None:
                return _not_analysed(series_uid, series.study_uid, decision.reason, **base)
            try:
                model = self.models.get(decision.model, wait=wait_for_models)
            except ModelUnavailable as exc:
                return _failed(series_uid, series.study_uid, f"{decision.model} unavailable: {exc}",
                               model=decision.model, **base)
            if decision.model == CHEXNET:
                result = self._chexnet(model, series_uid, series.study_uid, files)
            else:
                result = self._blastct(model, series_uid, series.study_uid, files)
        except BaseException as exc:  # BaseException too: a native decoder's pyo3 PanicException
            if isinstance(exc, (KeyboardInterrupt, SystemExit)):
                raise
            from inference.errors import NotAnalysable

            if isinstance(exc, NotAnalysable):
                return _not_analysed(series_uid, series.study_uid, exc.reason, **base)
            log.exception("analysis of series %s failed", series_uid)
            return _failed(series_uid, series.study_uid, f"{exc.__class__.__name__}: {str(exc)[:300]}", **base)
        result.arrival_at = series.first_received
        result.timings["total"] = time.perf_counter() - started
        result.created_at = time.time()
        result.timings["arrival_to_result"] = max(0.0, result.created_at - series.first_received)
        return result

    # -- models ------------------------------------------------------------------------
    def _finish(self, result: AnalysisResult, pack: Any, values: dict[str, float], model: str,
                fmt: str) -> AnalysisResult:
        thresholds = _thresholds(self.config, model, pack.manifest.get("thresholds", {}))
        flagged = flagged_labels(values, thresholds)
        rule_priority = priority_from_rules(flagged, pack.manifest.get("triage", {}), values)
        result.priority = effective_priority(rule_priority, pack.validated)
        result.findings.update({"thresholds": thresholds, "flagged": flagged, "rule_priority": rule_priority})
        text = ", ".join(fmt.format(label=label, value=values[label]) for label in flagged)
        if not text:
            text = "no finding above threshold" if model == CHEXNET else "no haemorrhage or oedema above threshold"
        result.summary = text if pack.validated else UNVALIDATED_PREFIX + text
        result.validated = pack.validated
        result.model = pack.name
        result.model_version = pack.version
        return result

    def _chexnet(self, model: Any, series_uid: str, study_uid: str, files: list[Path]) -> AnalysisResult:
        from inference.cxr_input import load_cxr
        from inference.errors import NotAnalysable

        t0 = time.perf_counter()
        reasons: list[str] = []
        image = None
        chosen: Path | None = None
        for path in files:  # the first frontal image of the series is the one read
            try:
                image = load_cxr(path)
                chosen = path
                break
            except NotAnalysable as exc:
                reasons.append(exc.reason)
        if image is None or chosen is None:
            raise NotAnalysable(reasons[0] if reasons else "no readable chest radiograph in the series")
        decode = time.perf_counter() - t0
        # The 7x7 CAM is stored; the viewer upsamples the finding it shows (inference.cam).
        out = model.analyse(image, full_cam=False)
        overlay_dir = self.store.result_overlay_dir(series_uid)
        labels = list(out.probabilities)
        _save_npz(self.store, overlay_dir / "cam.npz", cam_raw=out.cam_raw.astype(np.float32),
                  labels=np.array(labels), shape=np.array([image.rows, image.cols]))
        sop = pydicom.dcmread(chosen, stop_before_pixels=True, specific_tags=["SOPInstanceUID"]).SOPInstanceUID
        result = AnalysisResult(
            series_uid=series_uid, study_uid=study_uid, status="done", priority="routine",
            device=out.device, device_note=out.fallback_note,
            findings={"probabilities": {k: float(v) for k, v in out.probabilities.items()}, "sop_uid": str(sop)},
            timings={"decode": decode, **{k: float(v) for k, v in out.timings.items()}},
            overlay_path=str((overlay_dir / "cam.npz").relative_to(self.store.data_dir)),
        )
        return self._finish(result, model.pack, result.findings["probabilities"], CHEXNET, "{label} {value:.2f}")

    def _blastct(self, model: Any, series_uid: str, study_uid: str, files: list[Path]) -> AnalysisResult:
        from inference.ct_volume import load_ct_series

        t0 = time.perf_counter()
        volume = load_ct_series(files)
        decode = time.perf_counter() - t0
        out = model.analyse(volume)
        overlay_dir = self.store.result_overlay_dir(series_uid)
        _save_npz(self.store, overlay_dir / "labels.npz", labels=out.labels, sop_uids=np.array(volume.sop_uids),
                  classes=np.array(BLAST_CT_CLASSES))
        volumes = {k: float(v) for k, v in out.volumes_ml.items()}
        result = AnalysisResult(
            series_uid=series_uid, study_uid=study_uid, status="done", priority="routine",
            device=out.device, device_note=out.fallback_note,
            findings={"volumes_ml": volumes,
                      "slices_involved": {k: int(v) for k, v in out.slices_involved.items()},
                      "max_slice": {k: (int(v) if v is not None else None) for k, v in out.max_slice.items()}},
            timings={"decode": decode, **{k: float(v) for k, v in out.timings.items()}},
            overlay_path=str((overlay_dir / "labels.npz").relative_to(self.store.data_dir)),
        )
        return self._finish(result, model.pack, volumes, BLAST_CT, "{label} {value:.1f} mL")
