"""``/api/v1``: the desktop's JSON API (worklist, a study's results and overlays, the reviewed
flag, status). Records are the domain's dataclasses through ``app.core.worklist_json``; the
handlers are sync (Starlette runs them on its thread pool, where the index has per-thread
SQLite connections)."""

from __future__ import annotations

import json
import logging
import time
from pathlib import Path
from typing import Any

from starlette.requests import Request
from starlette.responses import FileResponse, JSONResponse, Response
from starlette.routing import Route

from app.api.context import ApiContext
from app.api.status import status_snapshot
from app.core.audit import API_REVIEWED_CHANGED, API_SEND_REQUESTED, API_STUDY_OPENED
from app.core.events import ReviewedChanged
from app.core.uids import is_valid_uid
from app.core.worklist import build_rows, row_for_study
from app.core.worklist_json import result_to_json, row_to_json, series_to_json, study_to_json

log = logging.getLogger(__name__)



def error(status: int, message: str) -> JSONResponse:
    return JSONResponse({"error": message}, status_code=status)


def user_of(request: Request) -> str:
    return str(request.scope.get("user", ""))


def peer_of(request: Request) -> str:
    return request.client.host if request.client else "?"


def routes(ctx: ApiContext) -> list[Route]:
    store = ctx.store

    def worklist(request: Request) -> Response:
        rows = build_rows(store)
        return JSONResponse({"rows": [row_to_json(r) for r in rows], "generated_at": time.time()})

    def worklist_row(request: Request) -> Response:
        uid = request.path_params["study_uid"]
        row = row_for_study(store, uid) if is_valid_uid(uid) else None
        if row is None:
            return error(404, "no such study")
        return JSONResponse({"row": row_to_json(row)})

    def study(request: Request) -> Response:
        uid = request.path_params["study_uid"]
        record = store.get_study(uid) if is_valid_uid(uid) else None
        if record is None:
            return error(404, "no such study")
        results = {r.series_uid: r for r in store.results_for_study(uid)}
        series = []
        for s in store.list_series(uid):
            result = results.get(s.series_uid)
            rows = sorted(store.instance_rows(s.series_uid),
                          key=lambda r: (r["instance_number"] is None, r["instance_number"] or 0, r["sop_uid"]))
            overlay = (f"/api/v1/series/{s.series_uid}/overlay"
                       if result is not None and result.overlay_path else None)
            # sop_sha256: what each stored file hashes to, so a desktop's cache can tell an instance
            # that was replaced under the same SOP Instance UID from the one it holds
            series.append({"series": series_to_json(s), "sop_uids": [r["sop_uid"] for r in rows],
                           "sop_sha256": [r["sha256"] for r in rows],
                           "result": result_to_json(result) if result else None, "overlay_url": overlay})
        row = row_for_study(store, uid)
        ctx.audit.append(API_STUDY_OPENED, user=user_of(request), ip=peer_of(request), study_uid=uid,
                         series=len(series), via="api")
        return JSONResponse({"study": study_to_json(record), "row": row_to_json(row) if row else None,
                             "series": series, "results": [result_to_json(r) for r in results.values()]})

    def result(request: Request) -> Response:
        uid = request.path_params["series_uid"]
        found = store.get_result(uid) if is_valid_uid(uid) else None
        if found is None:
            return error(404, "no result for this series")
        return JSONResponse(result_to_json(found))

    def overlay(request: Request) -> Response:
        uid = request.path_params["series_uid"]
        found = store.get_result(uid) if is_valid_uid(uid) else None
        if found is None or not found.overlay_path:
            return error(404, "no overlay for this series")
        path = store.abs_path(found.overlay_path)
        results_dir = Path(store.results_dir).resolve()
        if not path.resolve().is_relative_to(results_dir) or not path.is_file():
            return error(404, "overlay file missing")
        return FileResponse(path, media_type="application/octet-stream",
                            headers={"X-Overlay-Path": found.overlay_path})

    async def reviewed(request: Request) -> Response:
        uid = request.path_params["study_uid"]
        try:
            body: Any = await request.json()
        except (json.JSONDecodeError, UnicodeDecodeError):
            return error(400, 'body must be JSON {"reviewed": true|false}')
        if not isinstance(body, dict) or not isinstance(body.get("reviewed"), bool):
            return error(400, 'body must be JSON {"reviewed": true|false}')
        from starlette.concurrency import run_in_threadpool

        return await run_in_threadpool(_set_reviewed, request, uid, body["reviewed"])

    def _set_reviewed(request: Request, uid: str, flag: bool) -> Response:
        if not is_valid_uid(uid) or store.get_study(uid) is None:
            return error(404, "no such study")
        store.set_reviewed(uid, flag)
        record = store.get_study(uid)
        reviewed_at = record.reviewed_at if record else None
        user = user_of(request)
        ctx.audit.append(API_REVIEWED_CHANGED, user=user, ip=peer_of(request), study_uid=uid, reviewed=flag)
        ctx.hub.publish(ReviewedChanged(uid, flag, reviewed_at, user))
        row = row_for_study(store, uid)
        return JSONResponse({"study_uid": uid, "reviewed": flag, "reviewed_at": reviewed_at,
                             "row": row_to_json(row) if row else None})

    async def send(request: Request) -> Response:
        uid = request.path_params["study_uid"]
        from starlette.concurrency import run_in_threadpool

        return await run_in_threadpool(_send, request, uid)

    def _send(request: Request, uid: str) -> Response:
        if not is_valid_uid(uid) or store.get_study(uid) is None:
            return error(404, "no such study")
        if ctx.send_study is None:
            return error(503, "this service has no outbox")
        queued = ctx.send_study(uid)
        ctx.audit.append(API_SEND_REQUESTED, user=user_of(request), ip=peer_of(request), study_uid=uid, queued=queued)
        return JSONResponse({"study_uid": uid, "queued": queued})

    def status(request: Request) -> Response:
        return JSONResponse(status_snapshot(ctx, user_of(request)))

    return [
        Route("/worklist", worklist),
        Route("/worklist/{study_uid}", worklist_row),
        Route("/studies/{study_uid}", study),
        Route("/studies/{study_uid}/reviewed", reviewed, methods=["PUT"]),
        Route("/studies/{study_uid}/send", send, methods=["POST"]),
        Route("/series/{series_uid}/result", result),
        Route("/series/{series_uid}/overlay", overlay),
        Route("/status", status),
    ]
