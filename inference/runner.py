"""Compiling and running one OpenVINO model, with CPU fallback and a compile cache.

A device that fails to compile (no GPU driver, GPU unplugged, out of memory) must not
take the model down: we fall back to CPU, log it, and expose the note so results say so.
"""

from __future__ import annotations

import logging
from pathlib import Path
from typing import Any, Mapping, Sequence

import numpy as np
import openvino as ov

log = logging.getLogger(__name__)

Inputs = np.ndarray | Mapping[Any, np.ndarray] | Sequence[np.ndarray]


def make_core(cache_dir: Path | None = None) -> ov.Core:
    """One Core per process; the compile cache makes a second start fast."""
    core = ov.Core()
    if cache_dir is not None:
        Path(cache_dir).mkdir(parents=True, exist_ok=True)
        core.set_property({"CACHE_DIR": str(cache_dir)})
    return core


_VIRTUAL_DEVICES = ("AUTO", "MULTI", "HETERO", "BATCH")


def device_missing(core: ov.Core, device: str) -> str | None:
    """Why a physical device such as ``GPU`` or ``GPU.1`` cannot be used here, or None when it is
    present (or virtual: AUTO, MULTI, HETERO and BATCH pick among present devices themselves)."""
    base = device.split(":")[0].split(".")[0]
    if device == "CPU" or base in _VIRTUAL_DEVICES:
        return None
    if base == "GPU" and not any(Path("/dev/dri").glob("renderD*")):
        # No render node, no Intel GPU: do not even ask OpenVINO, whose GPU plugin, loaded to
        # answer, now and then aborted the whole process on machines without one.
        return f"{device} is not available on this machine (no GPU render node in /dev/dri)"
    available = list(core.available_devices)
    if device in available or ("." not in device and any(d.split(".")[0] == device for d in available)):
        return None
    return f"{device} is not available on this machine (OpenVINO sees {', '.join(available) or 'no device'})"


class CompiledModel:
    """An IR compiled for one device; results come back keyed by output name and index."""

    def __init__(
        self,
        core: ov.Core,
        xml_path: Path,
        device: str = "CPU",
        hint: str = "LATENCY",
        config: Mapping[str, Any] | None = None,
    ) -> None:
        self.xml_path = Path(xml_path)
        self.requested_device = device
        self.fallback_note: str | None = None
        properties = {"PERFORMANCE_HINT": hint, **(config or {})}
        model = core.read_model(str(self.xml_path))
        missing = device_missing(core, device)
        if missing is not None:
            # Not even tried: compiling for a device that is not there loads its plugin, which
            # aborted the whole process now and then (GPU plugin, no OpenCL device).
            self.fallback_note = f"{missing}; running on CPU"
            log.warning("%s: %s", self.xml_path.name, self.fallback_note)
            self._compiled = core.compile_model(model, "CPU", properties)
            self.device = "CPU"
        else:
            try:
                self._compiled = core.compile_model(model, device, properties)
                self.device = device
            except Exception as exc:
                if device == "CPU":
                    raise
                self.fallback_note = (f"{device} failed to compile ({exc.__class__.__name__}: "
                                      f"{str(exc).splitlines()[0][:200]}); running on CPU")
                log.warning("%s: %s", self.xml_path.name, self.fallback_note)
                self._compiled = core.compile_model(model, "CPU", properties)
                self.device = "CPU"
        if self.device == "AUTO":
            try:
                chosen = self._compiled.get_property("EXECUTION_DEVICES")
                self.device = "AUTO:" + ",".join(chosen)
            except Exception:  # older plugins do not report it; AUTO is still true
                pass
        self._request = self._compiled.create_infer_request()
        self.output_names = [self._output_name(i, out) for i, out in enumerate(self._compiled.outputs)]

    @staticmethod
    def _output_name(index: int, port: ov.ConstOutput) -> str:
        try:
            return port.get_any_name()
        except RuntimeError:  # unnamed output
            return str(index)

    @property
    def inputs(self) -> list[ov.ConstOutput]:
        return list(self._compiled.inputs)

    def _collect(self, request: ov.InferRequest) -> dict[str | int, np.ndarray]:
        out: dict[str | int, np.ndarray] = {}
        for i, name in enumerate(self.output_names):
            value = request.get_output_tensor(i).data.copy()
            out[name] = value
            out[i] = value
        return out

    def infer(self, inputs: Inputs) -> dict[str | int, np.ndarray]:
        self._request.infer(inputs)
        return self._collect(self._request)

    def infer_many(self, batch: Sequence[Inputs], jobs: int = 0) -> list[dict[str | int, np.ndarray]]:
        """Run several inputs through an AsyncInferQueue; results keep the input order."""
        results: list[dict[str | int, np.ndarray] | None] = [None] * len(batch)
        queue = ov.AsyncInferQueue(self._compiled, jobs)

        def done(request: ov.InferRequest, index: int) -> None:
            results[index] = self._collect(request)

        queue.set_callback(done)
        for index, item in enumerate(batch):
            queue.start_async(item, index)
        queue.wait_all()
        return [r for r in results if r is not None]
