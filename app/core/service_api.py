"""What a front end (the desktop) may use of the running service, and nothing more.

The wiring hands the desktop a factory that builds either the embedded ``app.service.Service``
or ``app.client.RemoteService`` (a service in another process, over its HTTP API); the desktop
only knows this protocol, so either can stand in. ``tests/app/test_service_api.py`` checks
that the real ``Service`` does, ``tests/client`` that the remote one does.
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path
from typing import Protocol, runtime_checkable

from app.core.events import EventHub
from app.core.results import AnalysisResult
from app.core.store.records import SeriesRecord, StudyRecord
from app.core.worklist import WorklistRow


@runtime_checkable
class ModelStatusView(Protocol):
    """One model as the status bar shows it (``app.core.model_registry.ModelStatus`` is one)."""

    @property
    def name(self) -> str: ...
    @property
    def state(self) -> str: ...          # waiting, loading, ready, unavailable
    @property
    def device(self) -> str: ...
    @property
    def message(self) -> str: ...
    @property
    def validated(self) -> bool | None: ...


@runtime_checkable
class StudyReader(Protocol):
    """What the viewer reads of a study (``StudyStore`` is one; ``app.client.RemoteStore`` fetches
    the same records over the API and the images into a local cache). Blocking: task threads."""

    @property
    def data_dir(self) -> Path: ...  # overlay paths of results are relative to it

    def get_study(self, study_uid: str) -> StudyRecord | None: ...
    def list_series(self, study_uid: str | None = None) -> list[SeriesRecord]: ...
    def results_for_study(self, study_uid: str) -> list[AnalysisResult]: ...
    def series_files(self, series_uid: str) -> list[Path]: ...  # local files the viewer opens
    def pending_jobs(self) -> int: ...


@runtime_checkable
class WorklistSource(Protocol):
    """The worklist rows and the one thing the desktop writes (the reviewed flag). Blocking."""

    def rows(self) -> list[WorklistRow]: ...                     # all, in worklist order
    def row(self, study_uid: str) -> WorklistRow | None: ...
    def set_reviewed(self, study_uid: str, reviewed: bool) -> None: ...


@runtime_checkable
class DesktopService(Protocol):
    """The node + analysis service as the desktop drives it. ``start`` and ``stop`` block
    (models load, the port binds, or the server is reached): the desktop calls them off its
    GUI thread."""

    store: StudyReader        # the viewer reads it
    worklist: WorklistSource  # the worklist reads it, "mark reviewed" writes it
    hub: EventHub             # live events: instances, results, reviewed, node status, connection
    attached_to: str          # the URL of the service a desktop is attached to; "" for the embedded one

    def start(self) -> bool: ...                             # False: the node could not listen
    def stop(self) -> None: ...
    def models_status(self) -> Sequence[ModelStatusView]: ...  # thread-safe; polled every second
    def queue_length(self) -> int: ...                       # series waiting for analysis
    def send_study(self, study_uid: str) -> int: ...         # "Send to PACS": sends queued (0: none configured)
