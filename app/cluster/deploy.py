"""``firstlook serve-models``: deploy the installed packs as Ray Serve applications on a running cluster.

Per model: ``cluster_replicas`` replicas with ``cluster_cpus`` / ``cluster_gpus`` each (config).
Every replica checks its pack's hashes before it serves; a model whose replicas refuse their
pack is reported and removed (the service then runs it locally with a note), the others serve.
The only module of the app that imports Ray.
"""

from __future__ import annotations

import logging
import sys
from pathlib import Path

import ray
from ray import serve

from app.cluster.client import BLASTCT_ROUTE, CHEXNET_ROUTE
from app.core.config import Config
from app.core.models import ModelSpecs
from inference.cluster.deployments import blastct_app, chexnet_app

log = logging.getLogger(__name__)

ROUTES = {"chexnet": CHEXNET_ROUTE, "blast-ct": BLASTCT_ROUTE}


def _connect(config: Config) -> str | None:
    if not config.ray_address:
        return "no ray_address: give --ray-address HOST:PORT or set it in the configuration"
    try:
        ray.init(address=config.ray_address, logging_level=logging.WARNING, log_to_driver=False)
    except Exception as exc:  # ConnectionError, a timeout, a version mismatch
        return f"cannot join the Ray cluster at {config.ray_address}: {exc}"
    return None


def deploy_model(config: Config, name: str, batching: bool = True) -> str | None:
    """Deploy one model; None when it serves, else why it was refused (the app is removed)."""
    pack_dir = str(Path(config.packs_dir) / name)
    replicas = int(config.cluster_replicas.get(name, 1))
    cpus = float(config.cluster_cpus.get(name, 1.0))
    gpus = float(config.cluster_gpus.get(name, 0.0))
    device = config.devices.get(name, "CPU")
    if name == "chexnet":
        app = chexnet_app(pack_dir, replicas, cpus, gpus, device, max_batch=8 if batching else 1)
    elif name == "blast-ct":
        app = blastct_app(pack_dir, replicas, cpus, gpus, device, config.cluster_call_deadline_s)
    else:
        return "no cluster deployment for this model"
    try:
        serve.run(app, name=name, route_prefix=ROUTES[name])
    except Exception as exc:  # a replica constructor failed: pack missing, altered, or a device error
        detail = _failure_detail(name, exc)
        try:
            serve.delete(name)
        except Exception:
            log.exception("could not remove the failed application %s", name)
        return detail[:400] or exc.__class__.__name__
    return None


def _failure_detail(name: str, exc: Exception) -> str:
    """The replicas' own reason (e.g. the pack file whose SHA-256 does not match), from Serve's status."""
    lines = str(exc).strip().splitlines()
    try:
        app = serve.status().applications.get(name)
        for deployment in (app.deployments.values() if app else ()):
            lines += str(deployment.message or "").splitlines()
    except Exception:
        log.exception("no status for the failed application %s", name)
    picked = next((line for line in reversed(lines) if "PackError" in line or "SHA-256" in line), None)
    return (picked or (lines[-1] if lines else "")).strip()


def serve_models(config: Config, specs: ModelSpecs, batching: bool = True, shutdown: bool = False,
                 only: str | None = None) -> int:
    problem = _connect(config)
    if problem:
        print(f"firstlook: {problem}", file=sys.stderr)
        return 2
    try:
        host = config.ray_address.rsplit(":", 1)[0]
        serve.start(http_options={"host": host, "port": config.ray_serve_port})
        refused = 0
        for name in specs.names:
            if name not in ROUTES or (only is not None and name != only):
                continue
            if shutdown:
                serve.delete(name)
                sys.stdout.write(f"{name}: removed\n")
                continue
            why = deploy_model(config, name, batching)
            if why is None:
                sys.stdout.write(f"{name}: serving on http://{host}:{config.ray_serve_port}{ROUTES[name]} "
                                 f"({config.cluster_replicas.get(name, 1)} replica(s))\n")
            else:
                refused += 1
                sys.stdout.write(f"{name}: REFUSED on the cluster: {why}\n")
        sys.stdout.flush()
        return 1 if refused else 0
    finally:
        ray.shutdown()
