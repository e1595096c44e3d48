"""What a front end (the desktop) may use of the running service, and nothing more.

The wiring hands the desktop a factory that builds an ``app.service.Service``; the desktop
only knows this protocol, so a service in another process (or a test double) can stand in
as long as it offers the same members. ``tests/app/test_service_api.py`` checks that the
real ``Service`` does.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Protocol, runtime_checkable

from app.core.events import EventHub
from app.core.store import StudyStore


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
class DesktopService(Protocol):
    """The node + analysis service as the desktop drives it. ``start`` and ``stop`` block
    (models load, the port binds): the desktop calls them off its GUI thread."""

    store: StudyStore     # the worklist and the viewer read it
    hub: EventHub         # live events: instances, results, node status

    def start(self) -> bool: ...                             # False: the node could not listen
    def stop(self) -> None: ...
    def models_status(self) -> Sequence[ModelStatusView]: ...  # thread-safe; polled every second
    def queue_length(self) -> int: ...                       # series waiting for analysis
    def send_study(self, study_uid: str) -> int: ...         # "Send to PACS": sends queued (0: none configured)
