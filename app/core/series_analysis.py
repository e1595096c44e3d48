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
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable

import numpy as np
import pydicom

from app.core.config import Config
from app.core.model_registry import ModelRegistry, ModelUnavailable
from app.core.models import ModelSpec, ModelSpecs
from app.core.models.spec import progressive
from app.core.router import SeriesInfo, route
from app.core.results import AnalysisResult
from app.core.store import StudyStore
from app.core.triage import effective_priority, priority_from_rules

log = logging.getLogger(__name__)

UNVALIDATED_PREFIX = "UNVALIDATED model, not for diagnosis: "
PRELIMINARY_PREFIX = "preliminary"


def not_analysed_result(series_uid: str, study_uid: str, reason: str, **extra: Any) -> AnalysisResult:
    return AnalysisResult(series_uid=series_uid, study_uid=study_uid, status="not_analysed",
                          priority="not_analysed", reason=reason, summary=f"not analysed: {reason}", **extra)


def failed_result(series_uid: str, study_uid: str, reason: str, **extra: Any) -> AnalysisResult:
    return AnalysisResult(series_uid=series_uid, study_uid=study_uid, status="failed", priority="failed",
                          reason=reason, summary=f"failed: {reason}", **extra)


def save_npz_atomically(store: StudyStore, target: Path, **arrays: Any) -> None:
    """Write an overlay under a temporary name in the store's tmp dir (cleared at start) and
    rename it into place: a crash mid-write never leaves a truncated overlay behind a result."""
    tmp = store.tmp_dir / f"{uuid.uuid4().hex}.part"
    try:
        with open(tmp, "wb") as fh:
            np.savez_compressed(fh, **arrays)
        os.replace(tmp, target)
    finally:
        tmp.unlink(missing_ok=True)


@dataclass
class StoreOverlaySink:
    """Overlay files of one series' result, written crash-safely into the store's results folder."""

    store: StudyStore
    series_uid: str

    def save_npz(self, filename: str, **arrays: Any) -> Path:
        target = self.store.result_overlay_dir(self.series_uid) / filename
        save_npz_atomically(self.store, target, **arrays)
        return target


def _thresholds(config: Config, model: str, pack_thresholds: dict[str, float]) -> dict[str, float]:
    merged = dict(pack_thresholds)
    merged.update({k: float(v) for k, v in config.thresholds.get(model, {}).items() if k in merged})
    return merged


class SeriesAnalyser:
    def __init__(self, config: Config, store: StudyStore, models: ModelRegistry) -> None:
        self.config = config
        self.store = store
        self.models = models
        self.specs: ModelSpecs = models.specs

    def analyse(self, series_uid: str, wait_for_models: float | None = None,
                on_preliminary: Callable[[AnalysisResult], None] | None = None) -> AnalysisResult:
        """The series' final result; ``on_preliminary`` (if given) receives the preliminary results
        of a progressive model (``ModelSpec.run_progressive``) as they come, before it returns."""
        series = self.store.get_series(series_uid)
        if series is None:
            raise KeyError(series_uid)
        started = time.perf_counter()
        base = {"arrival_at": series.first_received}
        try:
            files = self.store.series_files(series_uid)
            if not files:
                return not_analysed_result(series_uid, series.study_uid, "the series has no stored instances", **base)
            try:
                first = pydicom.dcmread(files[0], stop_before_pixels=True, force=True)
                info = SeriesInfo.from_dataset(first, len(files))
            except Exception as exc:
                return not_analysed_result(series_uid, series.study_uid,
                                           f"headers cannot be read ({exc.__class__.__name__})", **base)
            decision = route(info, self.specs)
            if decision.model is None:
                return not_analysed_result(series_uid, series.study_uid, decision.reason, **base)
            try:
                model = self.models.get(decision.model, wait=wait_for_models)
            except ModelUnavailable as exc:
                return failed_result(series_uid, series.study_uid, f"{decision.model} unavailable: {exc}",
                                     model=decision.model, **base)
            preliminary = None
            if on_preliminary is not None:
                def preliminary(result: AnalysisResult) -> None:
                    self._stamp(result, series.first_received, started)
                    on_preliminary(result)
            result = self._run(self.specs[decision.model], model, series_uid, series.study_uid, files, preliminary)
        except BaseException as exc:  # BaseException too: a native decoder's pyo3 PanicException
            if isinstance(exc, (KeyboardInterrupt, SystemExit)):
                raise
            from inference.errors import NotAnalysable

            if isinstance(exc, NotAnalysable):
                return not_analysed_result(series_uid, series.study_uid, exc.reason, **base)
            log.exception("analysis of series %s failed", series_uid)
            return failed_result(series_uid, series.study_uid, f"{exc.__class__.__name__}: {str(exc)[:300]}", **base)
        self._stamp(result, series.first_received, started)
        return result

    @staticmethod
    def _stamp(result: AnalysisResult, arrival: float, started: float) -> None:
        result.arrival_at = arrival
        result.timings["total"] = time.perf_counter() - started
        result.created_at = time.time()
        result.timings["arrival_to_result"] = max(0.0, result.created_at - arrival)

    def _run(self, spec: ModelSpec, model: Any, series_uid: str, study_uid: str, files: list[Path],
             on_preliminary: Callable[[AnalysisResult], None] | None = None) -> AnalysisResult:
        """Input, model, overlay, then thresholds and triage from the pack's manifest."""
        t0 = time.perf_counter()
        model_input = spec.load_input(files)
        decode = time.perf_counter() - t0
        stepwise = progressive(spec) if on_preliminary is not None else None
        first_at: list[float] = []

        def partial(done: int, total: int, output: Any) -> None:
            result = self._result(spec, model, series_uid, study_uid, model_input, output, decode,
                                  members=(done, total), preliminary=True)
            on_preliminary(result)
            first_at[:1] = first_at[:1] or [result.timings["arrival_to_result"]]

        if stepwise is None:
            output = spec.run(model, model_input)
        else:
            output = stepwise.run_progressive(model, model_input, partial)
        total = getattr(output, "members", None)  # an ensemble's output says how many members it reflects
        result = self._result(spec, model, series_uid, study_uid, model_input, output, decode,
                              members=(total, total) if isinstance(total, int) else None)
        if first_at:
            result.timings["arrival_to_preliminary"] = first_at[0]
        return result

    def _result(self, spec: ModelSpec, model: Any, series_uid: str, study_uid: str, model_input: Any, output: Any,
                decode: float, members: tuple[int, int] | None = None, preliminary: bool = False) -> AnalysisResult:
        """One (final or preliminary) output as a result: overlay, reading, thresholds, triage."""
        overlay = spec.write_overlay(model_input, output, StoreOverlaySink(self.store, series_uid))
        reading = spec.read(model_input, output)
        pack = model.pack
        thresholds = _thresholds(self.config, spec.name, pack.manifest.get("thresholds", {}))
        flagged = spec.flagged(reading.values, thresholds)
        rule_priority = priority_from_rules(flagged, pack.manifest.get("triage", {}), reading.values)
        text = spec.summary(reading.values, flagged)
        if preliminary and members is not None:
            text = f"{PRELIMINARY_PREFIX} ({members[0]}/{members[1]}): {text}"
        return AnalysisResult(
            series_uid=series_uid, study_uid=study_uid, status="done",
            priority=effective_priority(rule_priority, pack.validated),
            device=reading.device, device_note=reading.device_note,
            # which pack made it, recorded now: objects built later (a re-send) name this pack
            # even if the site has upgraded since
            findings={**reading.findings, "thresholds": thresholds, "flagged": flagged, "rule_priority": rule_priority,
                      "pack_sha256": pack.manifest_sha256, "precision": pack.runtime_precision},
            timings={"decode": decode, **reading.timings},
            overlay_path=str(overlay.relative_to(self.store.data_dir)) if overlay is not None else None,
            summary=text if pack.validated else UNVALIDATED_PREFIX + text,
            validated=pack.validated, model=pack.name, model_version=pack.version,
            preliminary=preliminary, members_done=members[0] if members else None,
            members_total=members[1] if members else None,
        )
