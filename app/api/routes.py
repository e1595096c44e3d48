"""The Starlette application: every route of docs/api.md behind the bearer-token check."""

from __future__ import annotations

from starlette.applications import Starlette
from starlette.middleware import Middleware
from starlette.requests import Request
from starlette.responses import JSONResponse, Response
from starlette.routing import Mount, Route

from app.api import v1
from app.api.auth import BearerAuth
from app.api.context import ApiContext
from app.api.events_stream import EventStreams
from app.api.qido import Qido
from app.api.status import page_endpoint
from app.api.wado import Wado


def build_app(ctx: ApiContext, streams: EventStreams) -> Starlette:
    qido, wado = Qido(ctx), Wado(ctx)
    study = "/studies/{study_uid}"
    series = study + "/series/{series_uid}"
    instance = series + "/instances/{sop_uid}"
    dicomweb = [
        Route("/studies", qido.search_studies),
        Route("/series", qido.search_series),
        Route("/instances", qido.search_instances),
        Route(study + "/series", qido.search_series),
        Route(study + "/instances", qido.search_instances),
        Route(series + "/instances", qido.search_instances),
        Route(study, wado.retrieve),
        Route(series, wado.retrieve),
        Route(instance, wado.retrieve),
        Route(study + "/metadata", wado.metadata),
        Route(series + "/metadata", wado.metadata),
        Route(instance + "/metadata", wado.metadata),
        Route(instance + "/frames/{frames}", wado.frames),
    ]

    async def not_found(request: Request, exc: Exception) -> Response:
        return JSONResponse({"error": "not found"}, status_code=404)

    return Starlette(
        routes=[
            Mount("/api/v1", routes=[*v1.routes(ctx), Route("/events", streams.endpoint)]),
            Mount("/dicomweb", routes=dicomweb),
            Route("/status", page_endpoint(ctx)),
        ],
        middleware=[Middleware(BearerAuth, users=ctx.users, audit=ctx.audit)],
        exception_handlers={404: not_found},
    )
