"""HTTP client of the packs served on the cluster (Serve's proxy on the head, ``ray_serve_port``).

The service talks plain HTTP with a deadline on every call and is never a Ray driver: a Ray
driver whose cluster disappears is ended by Ray itself, and FirstLook must outlive its cluster.
Any failure (refused, timeout, 5xx, a deployment missing because its pack was refused) is one
``ClusterUnavailable`` that the caller turns into a local run with a note.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass
from typing import Any

import httpx
import numpy as np

from inference.cluster.wire import decode, encode

log = logging.getLogger(__name__)

CHEXNET_ROUTE = "/chexnet"
BLASTCT_ROUTE = "/blast-ct"
CONNECT_TIMEOUT_S = 3.0


class ClusterUnavailable(Exception):
    """The cluster could not run this call; the message says why in one line."""


@dataclass(frozen=True)
class ClusterReply:
    meta: dict[str, Any]
    arrays: dict[str, np.ndarray]
    transfer_bytes: int


def serve_url(ray_address: str, serve_port: int) -> str:
    host = ray_address.rsplit(":", 1)[0] if ray_address else "127.0.0.1"
    return f"http://{host}:{serve_port}"


class ClusterClient:
    def __init__(self, base_url: str, call_deadline_s: float, study_deadline_s: float) -> None:
        self.base_url = base_url.rstrip("/")
        self.call_deadline_s = call_deadline_s
        self.study_deadline_s = study_deadline_s
        self._http = httpx.Client(trust_env=False)  # never a proxy from the environment

    def close(self) -> None:
        self._http.close()

    def call(self, route: str, deadline_s: float, meta: dict[str, Any], **arrays: np.ndarray) -> ClusterReply:
        body = encode(meta, **arrays)
        timeout = httpx.Timeout(deadline_s, connect=min(CONNECT_TIMEOUT_S, deadline_s))
        try:
            response = self._http.post(self.base_url + route, content=body, timeout=timeout,
                                       headers={"content-type": "application/octet-stream"})
        except httpx.TimeoutException as exc:
            raise ClusterUnavailable(f"no answer from {self.base_url}{route} within {deadline_s:g} s "
                                     f"({exc.__class__.__name__})") from exc
        except httpx.HTTPError as exc:
            raise ClusterUnavailable(f"cluster at {self.base_url} unreachable ({exc.__class__.__name__}: {exc})") from exc
        if response.status_code != 200:
            raise ClusterUnavailable(f"{route} on the cluster answered {response.status_code}: "
                                     f"{response.text[:200].strip()}")
        try:
            meta_out, arrays_out = decode(response.content)
        except Exception as exc:  # a truncated or foreign body
            raise ClusterUnavailable(f"{route} on the cluster sent an unreadable reply ({exc})") from exc
        return ClusterReply(meta_out, arrays_out, len(body) + len(response.content))

    def chexnet(self, tensor: np.ndarray) -> ClusterReply:
        return self.call(CHEXNET_ROUTE, self.call_deadline_s, {}, tensor=np.ascontiguousarray(tensor, np.float32))

    def blastct(self, x: np.ndarray, plan: list[Any], members: list[str], skip_constant: bool,
                study: str, sampled: np.ndarray | None = None) -> ClusterReply:
        """``sampled``: bool mask of the voxels the result reads (the items compute only those)."""
        meta = {"plan": [[list(s), list(n)] for s, n in plan], "members": members,
                "skip_constant": skip_constant, "study": study}
        extra = {} if sampled is None else {"sampled": np.packbits(sampled.ravel())}
        return self.call(BLASTCT_ROUTE, self.study_deadline_s, meta, x=x, **extra)
