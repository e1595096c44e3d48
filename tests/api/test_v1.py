"""``/api/v1`` on a real ``ApiServer`` over a real store (in-process): the worklist in the
desktop's order and fields, a study with its series, SOP UIDs and results, a result and its
overlay bytes, the reviewed flag published on the hub, the status snapshot."""

from __future__ import annotations

import dataclasses
from collections.abc import Iterator
from pathlib import Path

import httpx
import numpy as np
import pytest

from app.api.context import ApiContext, NodeState
from app.api.recent_errors import RecentErrors
from app.api.server import ApiServer
from app.core.audit import AuditLog
from app.core.config import Config
from app.core.events import Event, EventHub, NodeStatus, ReviewedChanged
from app.core.results import AnalysisResult
from app.core.store import StudyStore
from app.core.synthetic_dicom import synthetic_cxr, synthetic_head_ct
from app.core.users import UserDirectory
from app.core.worklist import WorklistRow, build_rows
from app.core.worklist_json import result_from_json, row_from_json, series_from_json, study_from_json
from tests.support import free_port


@dataclasses.dataclass
class Running:
    server: ApiServer
    store: StudyStore
    hub: EventHub
    headers: dict[str, str]
    ct_study: str
    ct_series: str
    cxr_study: str
    cxr_series: str
    sends: list[str]

    def get(self, path: str) -> httpx.Response:
        return httpx.get(self.server.url + path, headers=self.headers)


@pytest.fixture
def running(tmp_path: Path) -> Iterator[Running]:
    config = Config(data_dir=tmp_path / "data", api_port=free_port(), port=free_port())
    store = StudyStore(config.data_dir)
    ct = [store.store_instance(p) for p in synthetic_head_ct(tmp_path / "ct", n_slices=4, size=32)]
    cxr = store.store_instance(synthetic_cxr(tmp_path / "cxr", size=128))
    ct_study, ct_series = ct[0].header.study_uid, ct[0].header.series_uid
    overlay = store.result_overlay_dir(cxr.header.series_uid) / "cam.npz"
    overlay.parent.mkdir(parents=True, exist_ok=True)
    np.savez_compressed(overlay, cam_raw=np.ones((14, 7, 7), np.float32), shape=np.array([128, 128]))
    store.save_result(AnalysisResult(series_uid=cxr.header.series_uid, study_uid=cxr.header.study_uid, status="done",
                                     priority="critical", model="chexnet", model_version="1.0.0", device="CPU",
                                     summary="Pneumothorax 0.91", findings={"flagged": ["Pneumothorax"]},
                                     timings={"total": 0.4}, overlay_path=str(overlay.relative_to(config.data_dir))))
    hub = EventHub()
    node = NodeState()
    hub.subscribe(node.on_event)
    hub.publish(NodeStatus(True, f"FIRSTLOOK on 127.0.0.1:{config.port}"))
    users = UserDirectory(store)
    sends: list[str] = []

    def send_study(study_uid: str) -> int:  # the service's outbox stands here; tests/outbox test the outbox itself
        sends.append(study_uid)
        return 3

    ctx = ApiContext(config=config, store=store, hub=hub, users=users, audit=AuditLog(config.data_dir), node=node,
                     models_status=lambda: [], queue_length=lambda: 2, errors=RecentErrors(), send_study=send_study)
    server = ApiServer(ctx)
    server.start()
    try:
        yield Running(server, store, hub, {"Authorization": f"Bearer {users.add('reader')}"}, ct_study, ct_series,
                      cxr.header.study_uid, cxr.header.series_uid, sends)
    finally:
        server.stop()
        store.close()


def test_worklist_is_the_desktops(running: Running) -> None:
    body = running.get("/api/v1/worklist").json()
    rows = [row_from_json(r) for r in body["rows"]]
    assert rows == build_rows(running.store)                       # same rows, same order, same values
    assert [r.study_uid for r in rows] == [running.cxr_study, running.ct_study]  # critical first
    assert list(body["rows"][0]) == [f.name for f in dataclasses.fields(WorklistRow)]
    assert isinstance(body["generated_at"], float)
    one = running.get(f"/api/v1/worklist/{running.ct_study}").json()["row"]
    assert row_from_json(one) == rows[1]


def test_study_result_and_overlay(running: Running, tmp_path: Path) -> None:
    body = running.get(f"/api/v1/studies/{running.cxr_study}").json()
    assert study_from_json(body["study"]) == running.store.get_study(running.cxr_study)
    (entry,) = body["series"]
    assert series_from_json(entry["series"]) == running.store.get_series(running.cxr_series)
    assert entry["overlay_url"] == f"/api/v1/series/{running.cxr_series}/overlay"
    result = result_from_json(entry["result"])
    assert result == running.store.get_result(running.cxr_series) and result.findings["flagged"] == ["Pneumothorax"]
    ct = running.get(f"/api/v1/studies/{running.ct_study}").json()
    assert len(ct["series"][0]["sop_uids"]) == 4 and ct["series"][0]["result"] is None and ct["results"] == []

    assert result_from_json(running.get(f"/api/v1/series/{running.cxr_series}/result").json()) == result
    overlay = running.get(f"/api/v1/series/{running.cxr_series}/overlay")
    assert overlay.headers["content-type"] == "application/octet-stream"
    assert overlay.headers["x-overlay-path"] == result.overlay_path
    assert overlay.content == (running.store.data_dir / result.overlay_path).read_bytes()
    assert running.get(f"/api/v1/series/{running.ct_series}/result").status_code == 404
    assert running.get(f"/api/v1/series/{running.ct_series}/overlay").status_code == 404


def test_reviewed_flag_is_stored_and_published(running: Running) -> None:
    heard: list[Event] = []
    running.hub.subscribe(heard.append)
    url = f"{running.server.url}/api/v1/studies/{running.ct_study}/reviewed"
    answer = httpx.put(url, json={"reviewed": True}, headers=running.headers).json()
    assert answer["reviewed"] is True and answer["reviewed_at"] == running.store.get_study(running.ct_study).reviewed_at
    assert [e for e in heard if isinstance(e, ReviewedChanged)] == [
        ReviewedChanged(running.ct_study, True, answer["reviewed_at"], "reader")]
    assert httpx.put(url, content=b"not json", headers=running.headers).status_code == 400
    assert httpx.put(f"{running.server.url}/api/v1/studies/1.2.3/reviewed", json={"reviewed": True},
                     headers=running.headers).status_code == 404


def test_status_snapshot(running: Running) -> None:
    status = running.get("/api/v1/status").json()
    assert status["user"] == "reader" and status["queue_length"] == 2 and status["outbox"] is None
    assert status["node"]["listening"] is True and status["node"]["message"].startswith("FIRSTLOOK on 127.0.0.1")
    assert status["disk"]["free_bytes"] > 0 and status["disk"]["refusing"] is False


def test_send_to_pacs_reaches_the_outbox_and_is_audited(running: Running) -> None:
    url = f"{running.server.url}/api/v1/studies/{running.cxr_study}/send"
    answer = httpx.post(url, json={}, headers=running.headers)
    assert answer.status_code == 200 and answer.json() == {"study_uid": running.cxr_study, "queued": 3}
    assert running.sends == [running.cxr_study]
    unknown = httpx.post(f"{running.server.url}/api/v1/studies/1.2.3.4/send", json={}, headers=running.headers)
    assert unknown.status_code == 404 and running.sends == [running.cxr_study]
    assert httpx.post(url, json={}).status_code == 401 and running.sends == [running.cxr_study]
    records = [r for r in AuditLog(running.store.data_dir).records() if r.get("event") == "api.send_requested"]
    assert [(r["user"], r["study_uid"], r["queued"]) for r in records] == [("reader", running.cxr_study, 3)]
