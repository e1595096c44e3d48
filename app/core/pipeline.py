"""The analysis worker: takes ready series from the persistent job queue and stores results.

Runs off the node's threads. The queue lives in the store, so a crash or restart loses no
work: jobs left running are re-queued at start, and a result is an upsert per series, so
re-running a job replaces its result instead of duplicating it. A progressive model's
preliminary results are upserts into the same row (``app.core.progressive``). A job that keeps failing
(e.g. a decoder that crashes the process) is given up after ``MAX_ATTEMPTS``.
"""

from __future__ import annotations

import logging
import threading
from typing import Any

from app.core.series_analysis import SeriesAnalyser, failed_result
from app.core.config import Config
from app.core.crashpoints import crash_point
from app.core.events import AnalysisStarted, EventHub, ResultStored
from app.core.model_registry import ModelRegistry, ModelStatus
from app.core.models import ModelSpecs
from app.core.outbox.result_outbox import ResultOutbox
from app.core.progressive import ProgressiveResults
from app.core.store import StudyStore

log = logging.getLogger(__name__)

MAX_ATTEMPTS = 3
# Two workers: head CT takes minutes on 2 cores, a chest film well under a second; the
# "image" lane keeps radiographs (and quick "not analysed" verdicts) from waiting behind it.
LANES = ("image", "volume")


class Pipeline:
    def __init__(self, config: Config, store: StudyStore, hub: EventHub,
                 models: ModelRegistry | None = None, specs: ModelSpecs | None = None,
                 outbox: ResultOutbox | None = None) -> None:
        """``specs`` are the models to load when no registry is given (the shipped ones by default).
        ``outbox``: a result's objects for PACS are written before it is stored and queued with it."""
        self.config = config
        self.store = store
        self.hub = hub
        self.models = models or ModelRegistry(config, specs=specs)
        self.analyser = SeriesAnalyser(config, store, self.models)
        self.outbox = outbox
        self.progressive = ProgressiveResults(store, hub)
        self._wake = {lane: threading.Event() for lane in LANES}
        self._stop = threading.Event()
        self._threads: list[threading.Thread] = []
        self.busy_series: set[str] = set()

    # -- life cycle ------------------------------------------------------------------------
    def start(self) -> None:
        requeued = self.store.requeue_interrupted_jobs()
        if requeued:
            log.info("re-queued %d analysis job(s) interrupted by the last stop", requeued)
        loader = threading.Thread(target=self.models.load, name="model-loader", daemon=True)
        workers = [threading.Thread(target=self._run, args=(lane,), name=f"analysis-{lane}", daemon=True)
                   for lane in LANES]
        self._threads = [loader, *workers]
        for thread in self._threads:
            thread.start()

    def stop(self, timeout: float = 30.0) -> None:
        self._stop.set()
        for wake in self._wake.values():
            wake.set()
        for thread in self._threads:
            thread.join(timeout)

    def submit(self, series_uid: str) -> None:
        """Wake the workers; the job itself is already in the store's queue."""
        for wake in self._wake.values():
            wake.set()

    def models_status(self) -> list[ModelStatus]:
        return self.models.status()

    def queue_length(self) -> int:
        return self.store.pending_jobs()

    # -- worker ------------------------------------------------------------------------------
    def _run(self, lane: str) -> None:
        # Results are only worth computing once the models are in (or known to be missing).
        while not self._stop.is_set() and not self.models.loaded.wait(0.2):
            pass
        wake = self._wake[lane]
        while not self._stop.is_set():
            job = self.store.claim_job(lane, self.config.ae_priority)
            if job is None:
                wake.wait(1.0)
                wake.clear()
                continue
            self.busy_series.add(job.series_uid)
            try:
                self._process(job)
            except Exception:  # e.g. the index is unwritable (disk full): keep the worker for the next job
                log.exception("analysis of series %s could not be recorded; it is re-queued at the next start",
                              job.series_uid)
                self._stop.wait(1.0)
            finally:
                self.busy_series.discard(job.series_uid)

    def _process(self, job: Any) -> None:
        self.hub.publish(AnalysisStarted(job.study_uid, job.series_uid))
        if job.attempts > MAX_ATTEMPTS:
            result = failed_result(job.series_uid, job.study_uid,
                                   f"analysis was interrupted {job.attempts - 1} times; given up")
        else:
            self.progressive.begin(job.series_uid)
            try:
                result = self.analyser.analyse(job.series_uid, on_preliminary=self.progressive.store_preliminary)
            except KeyError:
                log.warning("job for unknown series %s dropped", job.series_uid)
                self.store.finish_job(job.series_uid)
                return
        crash_point("mid-analysis")
        self.progressive.finish(result)  # the final result: its priority against the preliminary ones shown
        # Only final results go out: preliminary ones are never staged for PACS.
        staged = self.outbox.stage(result) if self.outbox is not None and not result.preliminary else None
        crash_point("after-staging")  # files fsynced, rows not yet

        def with_result(conn: Any) -> None:
            # The queued objects and the finished job commit with the result (this thread's
            # connection, same transaction): a crash never re-runs a stored result's analysis,
            # which would build a second set of objects for it.
            if staged is not None:
                staged.record(conn)
            self.store.finish_job(job.series_uid, job.instance_count, job.enqueued_at)

        self.store.save_result(result, also=with_result)
        log.info("series %s: %s (%s) %s", job.series_uid, result.priority, result.status, result.summary)
        self.hub.publish(ResultStored(job.study_uid, job.series_uid, result.priority))

    def run_until_idle(self, timeout: float = 600.0) -> None:
        """Process every queued job on the calling thread (for `analyze` and tests)."""
        self.models.loaded.wait(timeout)
        while True:
            job = self.store.claim_job(None, self.config.ae_priority)
            if job is None:
                return
            self._process(job)
