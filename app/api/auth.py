"""Bearer-token authentication for every request (a pure ASGI middleware, so streamed
responses are untouched). A refusal is a 401 with one JSON sentence and nothing else, and is
audited with the peer address and the reason; the user's name is put in ``scope["user"]``.

``?token=`` is accepted on the status page only, so IT can open it in a browser; docs/api.md
says why that token should be one made for the purpose (it lands in the browser history).
"""

from __future__ import annotations

import logging
import time
from urllib.parse import parse_qs

from starlette.concurrency import run_in_threadpool
from starlette.responses import JSONResponse
from starlette.types import ASGIApp, Receive, Scope, Send

from app.core.audit import API_REFUSED, AuditLog
from app.core.users import UserDirectory

log = logging.getLogger(__name__)

STATUS_PAGE = "/status"  # the one path that also takes ?token= (a browser cannot send the header)


def presented_token(scope: Scope) -> str | None:
    for name, value in scope.get("headers", ()):
        if name == b"authorization":
            scheme, _, token = value.decode("latin-1").partition(" ")
            return token.strip() if scheme.lower() == "bearer" else None
    if scope.get("path") != STATUS_PAGE:  # a token in a URL lands in histories and logs: the page only
        return None
    query = parse_qs(scope.get("query_string", b"").decode("latin-1"))
    tokens = query.get("token")
    return tokens[0] if tokens else None


class BearerAuth:
    def __init__(self, app: ASGIApp, users: UserDirectory, audit: AuditLog) -> None:
        self.app = app
        self.users = users
        self.audit = audit
        self._touched: dict[str, float] = {}  # user -> when last_used_at was last written


    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        token = presented_token(scope)
        check = await run_in_threadpool(self.users.check, token)
        if check.user is None:
            client = scope.get("client") or ("?", 0)
            await run_in_threadpool(self.audit.append, API_REFUSED, ip=client[0], method=scope["method"],
                                    path=scope["path"], reason=check.refusal)
            log.warning("API request refused (%s) from %s: %s %s", check.refusal, client[0], scope["method"],
                        scope["path"])
            message = {"no token": "authentication required: send Authorization: Bearer <token>",
                       "revoked token": "this token has been revoked"}.get(check.refusal, "invalid token")
            response = JSONResponse({"error": message}, status_code=401,
                                    headers={"WWW-Authenticate": 'Bearer realm="firstlook"'})
            await response(scope, receive, send)
            return
        scope["user"] = check.user
        now = time.monotonic()
        if now - self._touched.get(check.user, -1e9) > 60:
            self._touched[check.user] = now
            await run_in_threadpool(self.users.touch, check.user)
        await self.app(scope, receive, send)
