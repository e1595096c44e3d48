"""HTTP to the service's API with the user's bearer token; errors the desktop can act on."""

from __future__ import annotations

import logging
import threading
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import httpx

log = logging.getLogger(__name__)


class ServiceUnavailable(Exception):
    """The service cannot be reached (not running, network down, 5xx): retry later."""


class TokenRefused(Exception):
    """The service answered 401: the token is wrong or revoked. Retrying will not help."""


class NotFound(Exception):
    """The service does not know the study, series or result (404)."""


class ApiClient:
    """One ``httpx.Client`` (connection pool, thread-safe) per service; paths are relative to
    ``base_url`` (``http://host:11113``). A token read from the local token file is read again
    when refused: the service writes a new one at each start."""

    def __init__(self, base_url: str, token: str, timeout_s: float = 10.0,
                 verify: bool | str = True, token_file: Path | None = None) -> None:
        self.base_url = base_url.rstrip("/")
        self.token = token
        self.token_file = token_file
        self.verify = verify
        self.timeout_s = timeout_s
        self._lock = threading.Lock()
        self._http = httpx.Client(base_url=self.base_url, timeout=timeout_s, verify=verify)

    def auth_headers(self) -> dict[str, str]:
        return {"Authorization": f"Bearer {self.token}"}

    def refresh_token(self) -> bool:
        """True when the token file now holds another token (the service was restarted)."""
        if self.token_file is None:
            return False
        try:
            token = self.token_file.read_text(encoding="utf-8").strip()
        except OSError:
            return False
        with self._lock:
            if not token or token == self.token:
                return False
            self.token = token
        log.info("the service wrote a new local token; using it")
        return True

    def close(self) -> None:
        self._http.close()

    def request(self, method: str, path: str, **kwargs: Any) -> httpx.Response:
        headers = {**kwargs.pop("headers", {})}
        for attempt in (1, 2):
            try:
                response = self._http.request(method, path, headers={**headers, **self.auth_headers()}, **kwargs)
            except httpx.TransportError as exc:
                raise ServiceUnavailable(f"{self.base_url} cannot be reached: {exc}") from exc
            if response.status_code == 401 and attempt == 1 and self.refresh_token():
                continue
            check(response, self.base_url)
            return response
        raise AssertionError("unreachable")

    @contextmanager
    def stream(self, method: str, path: str, **kwargs: Any) -> Iterator[httpx.Response]:
        """A response read as it arrives (WADO-RS of a whole series); same errors as ``request``."""
        headers = {**kwargs.pop("headers", {}), **self.auth_headers()}
        try:
            with self._http.stream(method, path, headers=headers, **kwargs) as response:
                check(response, self.base_url)
                yield response
        except httpx.TransportError as exc:
            raise ServiceUnavailable(f"{self.base_url} cannot be reached: {exc}") from exc

    def get_json(self, path: str, **params: Any) -> Any:
        return self.request("GET", path, params=params or None).json()

    def put_json(self, path: str, body: Any) -> Any:
        return self.request("PUT", path, json=body).json()

    def post_json(self, path: str, body: Any) -> Any:
        return self.request("POST", path, json=body).json()


def check(response: httpx.Response, base_url: str) -> None:
    """Turn the status into the client's errors (the body of a refusal is short JSON)."""
    if response.status_code < 400:
        return
    try:
        response.read()  # a streamed answer (the event stream) has not read its body yet
        message = str(response.json().get("error", ""))
    except (ValueError, AttributeError, httpx.HTTPError):
        message = response.text[:200]
    if response.status_code == 401:
        raise TokenRefused(f"{base_url} refused the token: {message or 'unauthorised'}")
    if response.status_code == 404:
        raise NotFound(message or f"{response.request.url.path} not found")
    if response.status_code >= 500:
        raise ServiceUnavailable(f"{base_url} answered {response.status_code}: {message}")
    raise ValueError(f"{base_url} answered {response.status_code} to {response.request.url.path}: {message}")
