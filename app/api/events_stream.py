"""``GET /api/v1/events``: the service's hub as server-sent events, one JSON object per event.

Each connection subscribes its own queue to the ``EventHub``; the hub's publishing thread (an
association, a pipeline worker) only hands the event to the event loop and never waits. Bursts
of ``InstanceStored`` (300 per CT) are coalesced per study, and each event carries the study's
current worklist row, so a desktop merges it without asking again.
"""

from __future__ import annotations

import asyncio
import json
import logging
import threading
import time
from collections.abc import AsyncIterator
from typing import Any

from starlette.concurrency import run_in_threadpool
from starlette.requests import Request
from starlette.responses import Response, StreamingResponse

from app.api.context import ApiContext
from app.core.events import (
    AnalysisStarted,
    Event,
    InstanceStored,
    NodeStatus,
    ResultStored,
    ReviewedChanged,
    SendStateChanged,
    SeriesReady,
)
from app.core.worklist import row_for_study
from app.core.worklist_json import row_to_json

log = logging.getLogger(__name__)

HEARTBEAT_S = 10.0
COALESCE_S = 0.05
QUEUE_LIMIT = 10_000  # a client this far behind is dropped (it reloads the worklist on reconnect)


def sse(name: str, data: dict[str, Any]) -> bytes:
    return f"event: {name}\ndata: {json.dumps(data, separators=(',', ':'))}\n\n".encode("utf-8")


def _describe(event: Event) -> tuple[str, dict[str, Any], str | None] | None:
    """(event name, data, study to attach the row of) for the events clients hear."""
    if isinstance(event, InstanceStored):
        return "study_arrived", {"study_uid": event.study_uid, "series_uid": event.series_uid,
                                 "sop_uid": event.sop_uid, "outcome": event.outcome}, event.study_uid
    if isinstance(event, SeriesReady):
        return "series_ready", {"study_uid": event.study_uid, "series_uid": event.series_uid,
                                "why": event.why}, event.study_uid
    if isinstance(event, AnalysisStarted):
        return "analysis_started", {"study_uid": event.study_uid, "series_uid": event.series_uid}, event.study_uid
    if isinstance(event, ResultStored):
        return "result_stored", {"study_uid": event.study_uid, "series_uid": event.series_uid,
                                 "priority": event.priority, "preliminary": event.preliminary}, event.study_uid
    if isinstance(event, ReviewedChanged):
        return "reviewed_changed", {"study_uid": event.study_uid, "reviewed": event.reviewed,
                                    "reviewed_at": event.reviewed_at, "user": event.user}, event.study_uid
    if isinstance(event, SendStateChanged):
        return "send_state_changed", {"study_uid": event.study_uid}, event.study_uid
    if isinstance(event, NodeStatus):
        return "node_status", {"listening": event.listening, "message": event.message}, None
    return None


def coalesce(events: list[Event]) -> list[Event]:
    """Keep only the last ``InstanceStored`` of each study in a batch (order otherwise kept)."""
    last: dict[str, int] = {}
    for i, ev in enumerate(events):
        if isinstance(ev, InstanceStored):
            last[ev.study_uid] = i
    return [ev for i, ev in enumerate(events) if not isinstance(ev, InstanceStored) or last[ev.study_uid] == i]


class EventStreams:
    """All open event streams of one API; ``close`` ends them (the server is stopping)."""

    def __init__(self, ctx: ApiContext) -> None:
        self.ctx = ctx
        self._closing = threading.Event()
        self._open: set[asyncio.Queue[Event | None]] = set()
        self._lock = threading.Lock()

    def close(self) -> None:
        self._closing.set()
        with self._lock:
            queues = list(self._open)
        for q in queues:
            loop = getattr(q, "_firstlook_loop", None)
            if loop is not None:
                loop.call_soon_threadsafe(q.put_nowait, None)

    async def endpoint(self, request: Request) -> Response:
        loop = asyncio.get_running_loop()
        queue: asyncio.Queue[Event | None] = asyncio.Queue()
        queue._firstlook_loop = loop  # type: ignore[attr-defined]

        def on_event(event: Event) -> None:  # the publisher's thread
            if queue.qsize() < QUEUE_LIMIT:
                loop.call_soon_threadsafe(queue.put_nowait, event)
            else:
                loop.call_soon_threadsafe(queue.put_nowait, None)

        user = str(request.scope.get("user", ""))
        self.ctx.hub.subscribe(on_event)
        with self._lock:
            self._open.add(queue)
        return StreamingResponse(self._stream(queue, on_event, user), media_type="text/event-stream",
                                 headers={"Cache-Control": "no-store", "X-Accel-Buffering": "no"})

    async def _stream(self, queue: asyncio.Queue[Event | None], on_event: Any, user: str) -> AsyncIterator[bytes]:
        try:
            yield sse("hello", {"server_version": self.ctx.version, "user": user, "generated_at": time.time()})
            while not self._closing.is_set():
                try:
                    first = await asyncio.wait_for(queue.get(), HEARTBEAT_S)
                except asyncio.TimeoutError:
                    yield b": heartbeat\n\n"
                    continue
                if first is None:
                    return
                if isinstance(first, InstanceStored):
                    await asyncio.sleep(COALESCE_S)  # let the rest of the burst arrive
                batch: list[Event] = [first]
                while not queue.empty():
                    item = queue.get_nowait()
                    if item is None:
                        return
                    batch.append(item)
                for event in coalesce(batch):
                    described = _describe(event)
                    if described is None:
                        continue
                    name, data, study_uid = described
                    if study_uid is not None:
                        row = await run_in_threadpool(row_for_study, self.ctx.store, study_uid)
                        data["row"] = row_to_json(row) if row is not None else None
                    yield sse(name, data)
        finally:
            self.ctx.hub.unsubscribe(on_event)
            with self._lock:
                self._open.discard(queue)
