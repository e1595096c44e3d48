"""The service declares what the desktop uses of it: the real ``Service`` must offer every
member of ``DesktopService``, so the UI needs no probing (and a missing one fails here, not
silently in the status bar's poller)."""

from __future__ import annotations

import inspect
from dataclasses import replace
from pathlib import Path

from app.core.config import Config
from app.core.service_api import DesktopService, ModelStatusView, StudyReader, WorklistSource
from app.service import Service


def test_service_satisfies_the_desktop_interface(tmp_path: Path):
    # No packs: the models stay "waiting"; nothing is started, so no port is bound.
    config = replace(Config(), data_dir=tmp_path / "data", cache_dir=tmp_path / "cache", packs_dir=tmp_path / "packs",
                     port=0)
    service = Service(config)
    try:
        assert isinstance(service, DesktopService)
        assert isinstance(service.store, StudyReader) and isinstance(service.worklist, WorklistSource)
        assert service.worklist.rows() == [] and service.worklist.row("1.2.3") is None
        statuses = service.models_status()
        assert statuses and all(isinstance(s, ModelStatusView) for s in statuses)
        assert {s.name for s in statuses} >= {"chexnet", "blast-ct"}
        assert service.queue_length() == 0
        for name in ("start", "stop", "models_status", "queue_length"):   # callable as the desktop calls them
            inspect.signature(getattr(service, name)).bind()
        inspect.signature(service.send_study).bind("1.2.3")
        assert service.send_study("1.2.3") == 0  # no destination configured: nothing queued
    finally:
        service.store.close()
