"""CheXNet runtime: 14 ChestX-ray14 probabilities and a class-activation map per finding.

One OpenVINO pass returns both the sigmoid probabilities and the final 1024x7x7 feature
map; the CAM (CheXNet paper: sum_k w_ck F_k with the classifier weights shipped in the
pack) is then a small matrix product plus an upsample, so the heatmap costs no second
inference. Imports openvino, numpy and Pillow only (never torch or nncf).
"""

from __future__ import annotations

import logging
import os
import time
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import openvino as ov

from inference.cam import cam_to_image
from inference.cxr_input import CxrImage, to_model_input
from inference.errors import InferenceError, PackError
from inference.packs import ModelPack
from inference.runner import CompiledModel, make_core

log = logging.getLogger(__name__)


@dataclass
class ChexnetOutput:
    """Result of one radiograph.

    ``cam`` is uint8 [14, rows, cols] at the image size (None when not asked for). Normalisation: each finding's
    7x7 CAM is min..max scaled to 0..255 (so 255 marks that finding's hottest region,
    whatever its probability; a constant map is all 0), then bilinearly upsampled, so
    pixels stay within 0..255 and reach ~255 at the hottest cell's centre. ``cam_raw`` keeps the
    un-normalised 7x7 scores. Timings are seconds.
    """

    labels: list[str]
    probabilities: dict[str, float]
    thresholds: dict[str, float]
    flagged: list[str]
    cam: np.ndarray | None
    cam_raw: np.ndarray
    timings: dict[str, float]
    device: str
    fallback_note: str | None
    validated: bool
    model_version: str
    extra: dict[str, Any] = field(default_factory=dict)

    def findings(self) -> dict[str, Any]:
        """The JSON findings stored with the result (see docs/architecture.md)."""
        return {"probabilities": dict(self.probabilities), "thresholds": dict(self.thresholds), "flagged": list(self.flagged)}


class Chexnet:
    """A loaded CheXNet pack compiled on one device (falls back to CPU with a note)."""

    def __init__(
        self,
        pack: ModelPack,
        core: ov.Core | None = None,
        *,
        device: str = "CPU",
        precision: str = "int8",
        hint: str = "LATENCY",
        config: dict[str, Any] | None = None,
        warmup: bool = True,
    ) -> None:
        self.pack = pack
        manifest = pack.manifest
        self.labels: list[str] = list(manifest["labels"])
        self.thresholds: dict[str, float] = {k: float(v) for k, v in manifest.get("thresholds", {}).items()}
        missing = [label for label in self.labels if label not in self.thresholds]
        if missing:
            raise PackError(pack.name, f"no threshold for {', '.join(missing)}")
        self.preprocessing: dict[str, Any] = dict(manifest.get("preprocessing", {}))
        outputs = manifest.get("outputs", {})
        self._probs_name = str(outputs.get("probabilities", "probs"))
        self._features_name = str(outputs.get("features", "features"))
        cam_info = manifest.get("cam", {})
        try:
            weights = np.load(pack.file(str(cam_info.get("weights", "cam_weights.npy"))), allow_pickle=False)
        except (OSError, ValueError) as exc:
            raise PackError(pack.name, f"CAM weights unreadable: {exc}") from exc
        if weights.ndim != 2 or weights.shape[0] != len(self.labels):
            raise PackError(pack.name, f"CAM weights have shape {weights.shape}, expected [{len(self.labels)}, K]")
        self._weights = np.ascontiguousarray(weights, dtype=np.float32)
        self.model = CompiledModel(core or make_core(None), pack.member_xml("model", precision), device, hint, config)
        for name in (self._probs_name, self._features_name):
            if name not in self.model.output_names:
                raise PackError(pack.name, f"model has no output '{name}' (has {self.model.output_names})")
        self.device = self.model.device
        self.fallback_note = self.model.fallback_note
        if warmup:  # the first request pays one-off allocations; keep that out of a patient's timings
            shape = [int(d) for d in manifest.get("input", {}).get("shape", [1, 3, 224, 224])]
            self.model.infer(np.zeros(shape, dtype=np.float32))
        workers = max(1, min(4, os.cpu_count() or 1))
        self._cam_pool: ThreadPoolExecutor | None = (
            ThreadPoolExecutor(workers, thread_name_prefix="chexnet-cam") if workers > 1 else None
        )

    def close(self) -> None:
        """Stop the CAM worker threads (also done at interpreter exit)."""
        if self._cam_pool is not None:
            self._cam_pool.shutdown(wait=True)
            self._cam_pool = None

    def preprocess(self, image: CxrImage) -> np.ndarray:
        return to_model_input(image, self.preprocessing)

    def analyse(self, image: CxrImage, full_cam: bool = True) -> ChexnetOutput:
        """Probabilities, flags and CAMs for one radiograph; ``full_cam=False`` leaves the
        image-size maps to whoever displays them (``cam`` is then None, ``cam_raw`` is set)."""
        if image.pixels.ndim != 2 or min(image.pixels.shape) < 1:
            raise InferenceError(f"CheXNet expects a 2-D image, got shape {image.pixels.shape}")
        t0 = time.perf_counter()
        tensor = self.preprocess(image)
        t1 = time.perf_counter()
        try:
            result = self.model.infer(tensor)
        except Exception as exc:
            raise InferenceError(f"CheXNet inference failed on {self.device}: {exc}") from exc
        t2 = time.perf_counter()
        probs = np.asarray(result[self._probs_name], dtype=np.float64).reshape(-1)
        features = np.asarray(result[self._features_name], dtype=np.float32)[0]
        if probs.shape[0] != len(self.labels) or features.shape[0] != self._weights.shape[1]:
            raise InferenceError(f"CheXNet outputs {probs.shape}/{features.shape} do not match the pack")
        cam_raw = np.tensordot(self._weights, features, axes=(1, 0))  # [14, 7, 7]
        cam = cam_to_image(cam_raw, image.rows, image.cols, self._cam_pool) if full_cam else None
        t3 = time.perf_counter()
        probabilities = {label: float(p) for label, p in zip(self.labels, probs)}
        flagged = [label for label in self.labels if probabilities[label] >= self.thresholds[label]]
        return ChexnetOutput(
            labels=list(self.labels),
            probabilities=probabilities,
            thresholds=dict(self.thresholds),
            flagged=flagged,
            cam=cam,
            cam_raw=cam_raw.astype(np.float32),
            timings={"preprocess": t1 - t0, "infer": t2 - t1, "cam": t3 - t2},
            device=self.device,
            fallback_note=self.fallback_note,
            validated=self.pack.validated,
            model_version=self.pack.version,
        )
