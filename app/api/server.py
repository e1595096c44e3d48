"""``ApiServer``: uvicorn serving the API on its own thread next to the service.

The socket is bound before the thread starts, so "address in use" is an error at start, not
a log line later; with ``api_tls`` the DICOM certificate and key serve HTTPS (TLS 1.2+).
Stopping ends the event streams first, then lets uvicorn finish in-flight requests.
"""

from __future__ import annotations

import logging
import socket
import ssl
import threading
import time

import uvicorn

from app.api.context import ApiContext
from app.api.events_stream import EventStreams
from app.api.routes import build_app

log = logging.getLogger(__name__)


class ApiServer:
    def __init__(self, ctx: ApiContext) -> None:
        self.ctx = ctx
        self.streams = EventStreams(ctx)
        self._server: uvicorn.Server | None = None
        self._thread: threading.Thread | None = None
        self.address: tuple[str, int] | None = None

    @property
    def url(self) -> str:
        host, port = self.address or (self.ctx.config.api_bind, self.ctx.config.api_port)
        return f"{'https' if self.ctx.config.api_tls else 'http'}://{host}:{port}"

    def start(self, timeout: float = 10.0) -> None:
        """Bind and serve; raises OSError when the port cannot be bound."""
        cfg = self.ctx.config
        family = socket.AF_INET6 if ":" in cfg.api_bind else socket.AF_INET
        sock = socket.socket(family, socket.SOCK_STREAM)
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        try:
            sock.bind((cfg.api_bind, cfg.api_port))
            sock.listen(128)
        except OSError:
            sock.close()
            raise
        self.address = sock.getsockname()[:2]
        tls = {}
        if cfg.api_tls and cfg.tls_cert is not None and cfg.tls_key is not None:
            tls = {"ssl_certfile": str(cfg.tls_cert), "ssl_keyfile": str(cfg.tls_key),
                   "ssl_version": ssl.PROTOCOL_TLS_SERVER}
        config = uvicorn.Config(build_app(self.ctx, self.streams), log_level="warning", access_log=False,
                                lifespan="off", timeout_graceful_shutdown=3, server_header=False, **tls)
        self._server = uvicorn.Server(config)
        self.ctx.errors.install()
        self._thread = threading.Thread(target=self._server.run, kwargs={"sockets": [sock]}, name="api-server",
                                        daemon=True)
        self._thread.start()
        deadline = time.monotonic() + timeout
        while not self._server.started and self._thread.is_alive() and time.monotonic() < deadline:
            time.sleep(0.02)
        if not self._server.started:
            raise OSError(f"the HTTP API did not start on {cfg.api_bind}:{cfg.api_port}")
        log.info("HTTP API on %s", self.url)

    def stop(self, timeout: float = 10.0) -> None:
        self.streams.close()
        if self._server is not None:
            self._server.should_exit = True
        if self._thread is not None:
            self._thread.join(timeout)
        self.ctx.errors.remove()
        self._server = self._thread = None
