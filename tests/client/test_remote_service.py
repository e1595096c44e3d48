"""RemoteService against a real headless service with the built packs: a chest radiograph sent
by storescu reaches the client's worklist with its result; its overlay and images land in the
client's cache exactly as the service stores them, and re-opening needs no service at all."""

from __future__ import annotations

import time
from pathlib import Path

import numpy as np

from app.client import RemoteService
from app.core.audit import AuditLog
from app.core.events import Event, ResultStored
from app.core.models import HeatmapOverlay, default_specs, load_overlay
from tests.support.api_service import HeadlessService
from tests.support.dicom_factory import write_cxr


def test_result_overlay_and_images_reach_the_client_cache(tmp_path: Path, cxr_dir: Path, packs_dir: Path):
    service = HeadlessService(tmp_path / "server", packs_dir=packs_dir).start()
    client = RemoteService(service.url, service.users_add("reader"), tmp_path / "client-cache")
    events: list[Event] = []
    client.hub.subscribe(events.append)
    try:
        assert client.start()
        png = sorted((cxr_dir / "images").glob("*.png"))[0]
        service.storescu(write_cxr(tmp_path / "send", png, patient_name="ATTACHED^TEST"))
        deadline = time.monotonic() + 120
        while not any(isinstance(e, ResultStored) for e in events) and time.monotonic() < deadline:
            time.sleep(0.1)
        (stored,) = [e for e in events if isinstance(e, ResultStored)]
        (row,) = client.worklist.rows()
        assert row.study_uid == stored.study_uid and row.patient_name == "ATTACHED^TEST"
        assert row.status == "ready" and row.summary

        (series,) = client.store.list_series(row.study_uid)
        (result,) = client.store.results_for_study(row.study_uid)
        assert client.store.get_study(row.study_uid).patient_name == "ATTACHED^TEST"
        assert result.status == "done" and result.overlay_path
        cached_overlay = client.store.data_dir / result.overlay_path
        assert cached_overlay.read_bytes() == (service.data_dir / result.overlay_path).read_bytes()
        specs = default_specs()
        heatmap, original = load_overlay(specs, result, client.store.data_dir), load_overlay(specs, result, service.data_dir)
        assert isinstance(heatmap, HeatmapOverlay) and isinstance(original, HeatmapOverlay)
        assert heatmap.labels == original.labels and heatmap.shape == original.shape
        assert np.array_equal(heatmap.cam_raw, original.cam_raw)

        (path,) = client.store.series_files(series.series_uid)
        assert path.read_bytes() == next((service.data_dir / "studies").rglob("*.dcm")).read_bytes()
        fetched_at = path.stat().st_mtime_ns
        opened = [r for r in AuditLog(service.data_dir).records() if r.get("event") == "api.study_opened"]
        assert len(opened) == 1 and opened[0]["user"] == "reader"   # one opening, one request, one record
        assert path.stat().st_mode & 0o777 == 0o600 and client.store.data_dir.stat().st_mode & 0o777 == 0o700
        service.stop()
        # Re-opening the same series reads the cache only: it works with the service gone.
        assert client.store.series_files(series.series_uid) == [path] and path.stat().st_mtime_ns == fetched_at
    finally:
        client.stop()
        service.stop()
