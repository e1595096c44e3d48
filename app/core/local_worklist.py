"""The worklist of the embedded service: rows straight from this process's store.

``app.client.RemoteWorklist`` is the same interface (``app.core.service_api.WorklistSource``)
over the API; the desktop cannot tell them apart.
"""

from __future__ import annotations

from app.core.audit import os_user
from app.core.events import EventHub, ReviewedChanged
from app.core.store import StudyStore
from app.core.worklist import WorklistRow, build_rows, row_for_study


class StoreWorklist:
    """Reads rows from the store; writing the reviewed flag announces it on the hub, as the
    API does for its writers, so anything listening (an API's event stream) hears it."""

    def __init__(self, store: StudyStore, hub: EventHub | None = None) -> None:
        self.store = store
        self.hub = hub

    def rows(self) -> list[WorklistRow]:
        return build_rows(self.store)

    def row(self, study_uid: str) -> WorklistRow | None:
        return row_for_study(self.store, study_uid)

    def set_reviewed(self, study_uid: str, reviewed: bool) -> None:
        self.store.set_reviewed(study_uid, reviewed)
        if self.hub is not None:
            study = self.store.get_study(study_uid)
            self.hub.publish(ReviewedChanged(study_uid, reviewed, study.reviewed_at if study else None, os_user()))
