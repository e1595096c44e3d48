"""The service's live events (``GET /api/v1/events``, server-sent events) on one thread, with
reconnect and capped exponential backoff.

The parser follows the text/event-stream format (WHATWG HTML, "server-sent events"): ``event:``
and ``data:`` fields, a blank line ends an event, lines starting with ``:`` are comments (the
service's heartbeats). The service sends a heartbeat every ~10 s, so a read that stays silent
for ``read_timeout_s`` means the link is dead even if TCP has not noticed.
"""

from __future__ import annotations

import json
import logging
import socket
import threading
from collections.abc import Iterable, Iterator
from dataclasses import dataclass
from typing import Any, Callable

import httpx

from app.client.api_client import ApiClient, TokenRefused, check

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class ServerEvent:
    name: str
    data: dict[str, Any]


def parse_sse(lines: Iterable[str]) -> Iterator[ServerEvent]:
    """Server-sent events from decoded lines; events without data (and comments) are skipped."""
    name, data = "message", []
    for line in lines:
        if not line:
            if data:
                try:
                    payload = json.loads("\n".join(data))
                except ValueError:
                    log.warning("event %s with data that is not JSON ignored", name)
                else:
                    yield ServerEvent(name, payload if isinstance(payload, dict) else {"value": payload})
            name, data = "message", []
            continue
        if line.startswith(":"):
            continue
        field, _, value = line.partition(":")
        value = value[1:] if value.startswith(" ") else value
        if field == "event":
            name = value
        elif field == "data":
            data.append(value)


def interrupt(response: httpx.Response) -> None:
    """Wake a read blocked on ``response`` from another thread: closing the response does not
    (the socket stays in ``recv`` until the next heartbeat), shutting its socket down does."""
    stream = response.extensions.get("network_stream")
    sock = stream.get_extra_info("socket") if stream is not None else None
    if sock is not None:
        try:
            sock.shutdown(socket.SHUT_RDWR)
        except OSError:
            pass  # already closed by the other side
    response.close()


class EventStream:
    """Calls ``on_event`` for every server event, ``on_link(connected, reason, retrying)`` whenever the
    link comes up or goes down; both on the stream's own thread. A refused token the user typed
    stops the stream (``on_link(False, reason, False)`` once; retrying would only fill the server's
    audit log); one from the local token file is read again at each retry."""

    def __init__(self, api: ApiClient, on_event: Callable[[ServerEvent], None],
                 on_link: Callable[[bool, str, bool], None], read_timeout_s: float = 30.0,
                 backoff_s: tuple[float, float] = (0.2, 2.0)) -> None:
        self.api = api
        self.on_event = on_event
        self.on_link = on_link
        self.read_timeout_s = read_timeout_s
        self.first_backoff_s, self.max_backoff_s = backoff_s
        self._stop = threading.Event()
        self._response: httpx.Response | None = None
        self._lock = threading.Lock()
        self._thread = threading.Thread(target=self._run, name="api-events", daemon=True)

    def start(self) -> None:
        self._thread.start()

    @property
    def alive(self) -> bool:
        return self._thread.is_alive()

    def stop(self, timeout: float = 5.0) -> None:
        self._stop.set()
        with self._lock:
            response = self._response
        if response is not None:
            interrupt(response)
        if self._thread.is_alive():
            self._thread.join(timeout)

    def _run(self) -> None:
        backoff = self.first_backoff_s
        up = None  # last reported state: report changes only
        timeout = httpx.Timeout(self.api.timeout_s, read=self.read_timeout_s)
        with httpx.Client(base_url=self.api.base_url, timeout=timeout, verify=self.api.verify) as http:
            while not self._stop.is_set():
                reason = ""
                try:
                    headers = {"Accept": "text/event-stream", **self.api.auth_headers()}
                    with http.stream("GET", "/api/v1/events", headers=headers) as response:
                        check(response, self.api.base_url)
                        with self._lock:
                            self._response = response
                        for event in parse_sse(response.iter_lines()):
                            if self._stop.is_set():
                                return
                            if event.name == "hello":
                                backoff = self.first_backoff_s
                                up = True
                                self.on_link(True, "", False)
                            self.on_event(event)
                    reason = "the service closed the event stream"
                except TokenRefused as exc:
                    if self.api.token_file is None:  # a typed token stays wrong: say so once
                        self.on_link(False, str(exc), False)
                        return
                    self.api.refresh_token()  # a restarting service rewrites its token file
                    reason = str(exc)
                except (httpx.HTTPError, OSError, ValueError) as exc:
                    reason = str(exc) or type(exc).__name__
                finally:
                    with self._lock:
                        self._response = None
                if self._stop.is_set():
                    return
                if up is not False:
                    log.warning("event stream from %s lost: %s; retrying", self.api.base_url, reason)
                    up = False
                    self.on_link(False, reason, True)
                self._stop.wait(backoff)
                backoff = min(backoff * 2, self.max_backoff_s)
