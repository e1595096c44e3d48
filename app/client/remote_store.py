"""What the viewer reads of a study, from the service: records over ``/api/v1``, images by
WADO-RS into the local cache, overlays into the same cache under the result's own relative
path (``app.core.service_api.StudyReader``).

Opening a study is one ``GET /api/v1/studies/{uid}`` (the service audits it as opened): the
first call of an opening fetches it, the calls that follow within ``reuse_s`` read that answer,
and any event about the study (a new result, say) makes the next call fetch again.
"""

from __future__ import annotations

import json
import logging
import threading
import time
from pathlib import Path
from typing import Any, Callable

from app.client.api_client import ApiClient, NotFound
from app.client.series_cache import SeriesCache, write_atomically
from app.core.results import AnalysisResult
from app.core.store.records import SeriesRecord, StudyRecord
from app.core.worklist_json import result_from_json, series_from_json, study_from_json

log = logging.getLogger(__name__)


class _StudyDoc:
    """One answer of ``GET /api/v1/studies/{uid}``, as records."""

    def __init__(self, data: dict[str, Any]) -> None:
        self.study = study_from_json(data["study"])
        self.series = [series_from_json(item["series"]) for item in data["series"]]
        self.sop_uids = {item["series"]["series_uid"]: list(item.get("sop_uids") or []) for item in data["series"]}
        # a service older than the hashes sends none: the cache then trusts the files it holds
        self.sop_sha256 = {item["series"]["series_uid"]: list(item.get("sop_sha256") or []) or None
                           for item in data["series"]}
        self.results = [result_from_json(r) for r in data.get("results") or []]


class RemoteStore:
    reuse_s = 2.0   # one opening (audit record, series list, results, files) = one request

    def __init__(self, api: ApiClient, cache_root: Path, queue_length: Callable[[], int],
                 cache_max_bytes: int | None = None) -> None:
        self.api = api
        self._data_dir = Path(cache_root)
        self.images = SeriesCache(self._data_dir, api, cache_max_bytes)
        self._queue_length = queue_length
        self._docs: dict[str, tuple[_StudyDoc, float]] = {}
        self._series_study: dict[str, str] = {}
        self._lock = threading.Lock()

    @property
    def data_dir(self) -> Path:
        """The local cache: overlay paths of results are relative to it, as to a store's."""
        return self._data_dir

    # -- study records ---------------------------------------------------------------------
    def _fetch(self, study_uid: str) -> _StudyDoc | None:
        try:
            doc = _StudyDoc(self.api.get_json(f"/api/v1/studies/{study_uid}"))
        except NotFound:
            return None
        with self._lock:
            self._docs[study_uid] = (doc, time.monotonic())
            for series in doc.series:
                self._series_study[series.series_uid] = study_uid
        return doc

    def _doc(self, study_uid: str) -> _StudyDoc | None:
        with self._lock:
            kept = self._docs.get(study_uid)
        if kept is not None and time.monotonic() - kept[1] < self.reuse_s:
            return kept[0]
        return self._fetch(study_uid)

    def forget(self, study_uid: str | None = None) -> None:
        """Something changed about the study (or, None, about anything): fetch it again."""
        with self._lock:
            if study_uid is None:
                self._docs.clear()
            else:
                self._docs.pop(study_uid, None)

    def list_series(self, study_uid: str | None = None) -> list[SeriesRecord]:
        if study_uid is None:
            raise ValueError("an attached desktop lists the series of one study at a time")
        doc = self._doc(study_uid)
        return list(doc.series) if doc else []

    def get_study(self, study_uid: str) -> StudyRecord | None:
        doc = self._doc(study_uid)
        return doc.study if doc else None

    def results_for_study(self, study_uid: str) -> list[AnalysisResult]:
        doc = self._doc(study_uid)
        if doc is None:
            return []
        for result in doc.results:
            if result.overlay_path:
                self._ensure_overlay(result)
        return list(doc.results)

    def series_files(self, series_uid: str) -> list[Path]:
        with self._lock:
            study_uid = self._series_study.get(series_uid)
            kept = self._docs.get(study_uid) if study_uid else None
        doc = kept[0] if kept is not None else (self._fetch(study_uid) if study_uid else None)
        if doc is None or study_uid is None:
            raise ValueError(f"series {series_uid} is not part of a study opened from the service")
        return self.images.files(study_uid, series_uid, doc.sop_uids.get(series_uid, []),
                                 doc.sop_sha256.get(series_uid))

    def pending_jobs(self) -> int:
        return self._queue_length()

    # -- overlays --------------------------------------------------------------------------
    def _ensure_overlay(self, result: AnalysisResult) -> None:
        """The overlay file at ``<cache>/<overlay_path>``, fetched again when the result was
        re-run (its ``created_at`` is kept next to it)."""
        assert result.overlay_path is not None
        path = (self._data_dir / result.overlay_path).resolve()
        if not path.is_relative_to(self._data_dir.resolve()):
            raise ValueError(f"overlay path {result.overlay_path!r} leaves the cache")
        stamp = path.with_name(path.name + ".json")
        try:
            if path.is_file() and json.loads(stamp.read_text()).get("created_at") == result.created_at:
                return
        except (OSError, ValueError):
            pass
        try:
            response = self.api.request("GET", f"/api/v1/series/{result.series_uid}/overlay")
        except NotFound:
            log.warning("the service has no overlay for series %s", result.series_uid)
            return
        path.parent.mkdir(parents=True, exist_ok=True)
        write_atomically(path, response.content)
        write_atomically(stamp, json.dumps({"created_at": result.created_at}).encode())
