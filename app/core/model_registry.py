"""Loads the model packs and keeps every model compiled and resident.

Each model loads on its own: a corrupt pack or a device that will not compile disables
(or moves to CPU) that model only, and the reason is kept for the status bar and results.
"""

from __future__ import annotations

import logging
import threading
import time
from dataclasses import dataclass
from typing import Any, Callable

from app.core.config import Config
from app.core.models import ModelSpecs, default_specs

log = logging.getLogger(__name__)


@dataclass
class ModelStatus:
    name: str
    state: str            # waiting, loading, ready, unavailable
    device: str = ""
    message: str = ""
    validated: bool | None = None
    version: str = ""
    load_seconds: float | None = None


class ModelUnavailable(Exception):
    """The model is not loaded (pack missing or corrupt, or still loading)."""


# (model name, local runtime, status note) -> the runtime the analyser uses (e.g. a cluster client
# around the local runtime, app.cluster.backend); None: the local runtime itself.
RuntimeWrapper = Callable[[str, Any, Callable[[str], None]], Any]


class ModelRegistry:
    def __init__(self, config: Config, device_override: str | None = None, specs: ModelSpecs | None = None,
                 runtime_wrapper: RuntimeWrapper | None = None) -> None:
        self.config = config
        self.runtime_wrapper = runtime_wrapper
        self.device_override = device_override
        self.specs = specs if specs is not None else default_specs()
        self._models: dict[str, Any] = {}
        self._status: dict[str, ModelStatus] = {name: ModelStatus(name, "waiting") for name in self.specs.names}
        self._lock = threading.Lock()
        self._loaded = threading.Event()
        self._core: Any = None

    def _set(self, status: ModelStatus) -> None:
        with self._lock:
            self._status[status.name] = status

    def note(self, name: str, message: str) -> None:
        """Replace a ready model's status line (e.g. "cluster unavailable: running locally")."""
        with self._lock:
            status = self._status.get(name)
            if status is not None and status.state == "ready":
                status.message = message

    def status(self) -> list[ModelStatus]:
        with self._lock:
            return [ModelStatus(**vars(s)) for s in self._status.values()]

    @property
    def loaded(self) -> threading.Event:
        return self._loaded

    def load(self) -> None:
        """Blocking: load every pack found; never raises for one bad model."""
        from inference.errors import PackError
        from inference.packs import load_pack
        from inference.runner import make_core

        try:
            self._core = make_core(self.config.cache_dir / "openvino")
            for spec in self.specs:
                name = spec.name
                device = self.device_override or self.config.devices.get(name, "CPU")
                self._set(ModelStatus(name, "loading", device=device))
                start = time.perf_counter()
                pack_dir = self.config.packs_dir / name
                try:
                    if not pack_dir.is_dir():
                        raise PackError(name, f"not installed in {self.config.packs_dir} (run `firstlook build-models`)")
                    pack = load_pack(pack_dir)
                    runtime = spec.make_runtime(pack, self._core, device)
                    if self.runtime_wrapper is not None:
                        runtime = self.runtime_wrapper(name, runtime, lambda message, n=name: self.note(n, message))
                except PackError as exc:
                    log.error("%s", exc)
                    self._set(ModelStatus(name, "unavailable", device=device, message=str(exc)))
                    continue
                except Exception as exc:  # a model that cannot load must not stop the others
                    log.exception("model %s failed to load", name)
                    self._set(ModelStatus(name, "unavailable", device=device,
                                          message=f"{name} failed to load: {exc.__class__.__name__}: {exc}"))
                    continue
                with self._lock:
                    self._models[name] = runtime
                used = getattr(runtime, "device", device)
                note = getattr(runtime, "fallback_note", None) or ""
                self._set(ModelStatus(name, "ready", device=used, message=note, validated=pack.validated,
                                      version=pack.version, load_seconds=time.perf_counter() - start))
                log.info("model %s %s ready on %s in %.1f s%s", name, pack.version, used,
                         time.perf_counter() - start, "" if pack.validated else " (NOT VALIDATED)")
        finally:
            self._loaded.set()

    def get(self, name: str, wait: float | None = None) -> Any:
        if wait is not None:
            self._loaded.wait(wait)
        with self._lock:
            model = self._models.get(name)
            status = self._status.get(name)
        if model is None:
            message = status.message if status and status.message else f"model {name} is not loaded"
            raise ModelUnavailable(message)
        return model
