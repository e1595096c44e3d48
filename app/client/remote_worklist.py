"""The worklist over the API (``app.core.service_api.WorklistSource``).

Every live event carries the study's current row; the event stream leaves it here (``offer``)
so the refresh the event triggers costs no request.
"""

from __future__ import annotations

import threading

from app.client.api_client import ApiClient, NotFound
from app.core.worklist import WorklistRow
from app.core.worklist_json import row_from_json


class RemoteWorklist:
    def __init__(self, api: ApiClient) -> None:
        self.api = api
        self._offered: dict[str, WorklistRow] = {}
        self._lock = threading.Lock()

    def offer(self, row: WorklistRow) -> None:
        with self._lock:
            self._offered[row.study_uid] = row

    def rows(self) -> list[WorklistRow]:
        data = self.api.get_json("/api/v1/worklist")
        with self._lock:
            self._offered.clear()  # the whole list is newer than anything offered before
        return [row_from_json(item) for item in data["rows"]]

    def row(self, study_uid: str) -> WorklistRow | None:
        with self._lock:
            row = self._offered.pop(study_uid, None)
        if row is not None:
            return row
        try:
            return row_from_json(self.api.get_json(f"/api/v1/worklist/{study_uid}")["row"])
        except NotFound:
            return None

    def set_reviewed(self, study_uid: str, reviewed: bool) -> None:
        answer = self.api.put_json(f"/api/v1/studies/{study_uid}/reviewed", {"reviewed": bool(reviewed)})
        if answer.get("row"):
            self.offer(row_from_json(answer["row"]))
