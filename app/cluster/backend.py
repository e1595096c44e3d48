"""Which runtime the model registry keeps per model: the local one, or a remote one around it.

The wiring calls ``runtime_wrapper(config)`` only when ``inference_backend = "ray"``; the local
runtime is always loaded too (it is the fallback when the cluster cannot run a study).
"""

from __future__ import annotations

from typing import Any, Callable

from app.cluster.client import ClusterClient, serve_url
from app.cluster.runtimes import RemoteBlastCt, RemoteChexnet
from app.core.config import Config

REMOTE_RUNTIMES = {"chexnet": RemoteChexnet, "blast-ct": RemoteBlastCt}

Wrapper = Callable[[str, Any, Callable[[str], None]], Any]


def runtime_wrapper(config: Config) -> Wrapper:
    client = ClusterClient(serve_url(config.ray_address, config.ray_serve_port),
                           config.cluster_call_deadline_s, config.cluster_study_deadline_s)

    def wrap(model: str, runtime: Any, note: Callable[[str], None]) -> Any:
        remote = REMOTE_RUNTIMES.get(model)
        return runtime if remote is None else remote(runtime, client, note)  # a model not served: local

    return wrap
