"""The event stream in-process (a real ``ApiServer`` on loopback over a real store and hub):
heartbeats while idle, a 300-instance burst coalesced per study, and stopping the server ends
open streams promptly instead of hanging on them."""

from __future__ import annotations

import threading
import time
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest

from app.api import events_stream
from app.api.context import ApiContext, NodeState
from app.api.recent_errors import RecentErrors
from app.api.server import ApiServer
from app.core.audit import AuditLog
from app.core.config import Config
from app.core.events import EventHub, InstanceStored, ResultStored
from app.core.store import StudyStore
from app.core.users import UserDirectory
from tests.support import free_port


@pytest.fixture
def api(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Iterator[tuple[ApiServer, EventHub, str]]:
    monkeypatch.setattr(events_stream, "HEARTBEAT_S", 0.3)
    config = Config(data_dir=tmp_path / "data", api_port=free_port(), port=free_port())
    store = StudyStore(config.data_dir)
    hub = EventHub()
    users = UserDirectory(store)
    token = users.add("tester")
    ctx = ApiContext(config=config, store=store, hub=hub, users=users, audit=AuditLog(config.data_dir),
                     node=NodeState(), models_status=lambda: [], queue_length=lambda: 0, errors=RecentErrors())
    server = ApiServer(ctx)
    server.start()
    try:
        yield server, hub, token
    finally:
        server.stop()
        store.close()


def _read(url: str, token: str, lines: list[str], done: threading.Event) -> None:
    try:
        with httpx.stream("GET", url, headers={"Authorization": f"Bearer {token}"}, timeout=30) as answer:
            for line in answer.iter_lines():
                lines.append(line)
    except httpx.HTTPError:
        pass
    finally:
        done.set()


def _wait(predicate, timeout: float = 10.0) -> bool:  # type: ignore[no-untyped-def]
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if predicate():
            return True
        time.sleep(0.02)
    return False


def test_heartbeat_coalescing_and_stop(api: tuple[ApiServer, EventHub, str]) -> None:
    server, hub, token = api
    lines: list[str] = []
    done = threading.Event()
    threading.Thread(target=_read, args=(server.url + "/api/v1/events", token, lines, done), daemon=True).start()
    assert _wait(lambda: "event: hello" in lines)
    assert _wait(lambda: ": heartbeat" in lines, 5)       # idle: a comment line keeps the stream alive

    for i in range(300):                                  # one CT arriving: 300 events in a burst
        hub.publish(InstanceStored("1.2.3", "1.2.3.4", f"1.2.3.4.{i}", "stored"))
    hub.publish(ResultStored("1.2.3", "1.2.3.4", "routine"))
    assert _wait(lambda: "event: result_stored" in lines)
    arrived = lines.count("event: study_arrived")
    assert 1 <= arrived < 30                              # coalesced per study, not 300 rows
    last_arrived = max(i for i, ln in enumerate(lines) if ln == "event: study_arrived")
    assert '"sop_uid":"1.2.3.4.299"' in lines[last_arrived + 1]  # the latest instance is what is said
    assert lines.index("event: result_stored") > last_arrived   # order kept

    server.stop()
    assert done.wait(10)  # the open stream ended with the server instead of holding it
