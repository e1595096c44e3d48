"""Remote runtimes: the local runtime's interface (``analyse``, ``pack``, ``device``), run on the cluster.

The spec's ``run`` calls ``runtime.analyse(...)`` as for a local runtime; preprocessing (the film
tensor, the 1 mm volume and its tile plan) is done here in the service, only the model execution
goes to the cluster. If the cluster cannot run it, the study runs on the wrapped local runtime and
the result says so (``device_note``, ``ran_on``) as does the model's status line. Each study tries
the cluster again, so a cluster that comes back is used for the next one.
"""

from __future__ import annotations

import logging
import time
from typing import Any, Callable

import numpy as np

from app.cluster.client import ClusterClient, ClusterUnavailable
from inference.blastct import CELL, native_cells, normalise, plan_tiles, sampled_voxels
from inference.chexnet import ChexnetOutput
from inference.cluster.outputs import blastct_output
from inference.errors import InferenceError

log = logging.getLogger(__name__)

Note = Callable[[str], None]


def fallback_note(reason: str) -> str:
    return f"cluster not used ({reason}); ran locally"


def _where(meta: dict[str, Any]) -> str:
    return f"{meta.get('device', 'CPU')} on cluster node {meta.get('node', '?')} ({meta.get('replica', '?')})"


class _Remote:
    def __init__(self, local: Any, client: ClusterClient, note: Note) -> None:
        self.local = local
        self.client = client
        self.note = note
        self.pack = local.pack
        self.device = f"cluster ({client.base_url}); local {local.device}"
        self.fallback_note = local.fallback_note

    def __getattr__(self, name: str) -> Any:  # close(), labels, thresholds, ... of the local runtime
        return getattr(self.local, name)

    def _fallback(self, exc: ClusterUnavailable) -> str:
        reason = str(exc)
        log.warning("%s: %s; running this study locally", self.pack.name, reason)
        self.note(f"cluster unavailable ({reason[:120]}): running locally")
        return fallback_note(reason)


class RemoteChexnet(_Remote):
    def analyse(self, image: Any, full_cam: bool = True) -> ChexnetOutput:
        t0 = time.perf_counter()
        tensor = self.local.preprocess(image)
        t1 = time.perf_counter()
        try:
            reply = self.client.chexnet(tensor)
        except ClusterUnavailable as exc:
            note = self._fallback(exc)
            out = self.local.analyse(image, full_cam)
            out.fallback_note = note if not out.fallback_note else f"{note}; {out.fallback_note}"
            out.ran_on = {"backend": "local", "note": note}  # type: ignore[attr-defined]
            return out
        t2 = time.perf_counter()
        self.note(f"on the cluster at {self.client.base_url}")
        probs = np.asarray(reply.arrays["probs"], dtype=np.float64).reshape(-1)
        cam_raw = np.asarray(reply.arrays["cam_raw"], dtype=np.float32)
        labels = list(self.local.labels)
        if probs.shape[0] != len(labels) or cam_raw.shape[0] != len(labels):
            raise InferenceError(f"the cluster's CheXNet reply {probs.shape}/{cam_raw.shape} does not match the pack")
        probabilities = {label: float(p) for label, p in zip(labels, probs)}
        cam = None
        if full_cam:
            from inference.cam import cam_to_image

            cam = cam_to_image(cam_raw, image.rows, image.cols)
        meta = reply.meta
        out = ChexnetOutput(
            labels=labels, probabilities=probabilities, thresholds=dict(self.local.thresholds),
            flagged=[k for k in labels if probabilities[k] >= self.local.thresholds[k]], cam=cam, cam_raw=cam_raw,
            timings={"preprocess": t1 - t0, "infer": t2 - t1, "cluster_replica": float(meta.get("replica_s", 0.0))},
            device=_where(meta), fallback_note=None, validated=self.pack.validated, model_version=self.pack.version,
            extra={"batch": meta.get("batch", 1)})
        out.ran_on = {"backend": "ray", "url": self.client.base_url, "node": meta.get("node"),  # type: ignore[attr-defined]
                      "replica": meta.get("replica"), "device": meta.get("device"), "batch": meta.get("batch", 1)}
        return out


class RemoteBlastCt(_Remote):
    def analyse(self, volume: Any, keep_grid: bool = False, on_member: Callable[[int, Any], None] | None = None) -> Any:
        """``on_member`` (the progressive result) is served where the members run one after the
        other, i.e. locally; on the cluster every member runs at once, so the final result is the
        first one (it comes sooner than a local preliminary would)."""
        runtime = self.local
        if keep_grid or (runtime.tile == CELL and not runtime.native_cells_only):
            return runtime.analyse(volume, keep_grid, on_member=on_member)  # reference tiling: the local runtime only
        timings: dict[str, float] = {}
        t0 = time.perf_counter()
        x = normalise(volume.hu)
        cells = native_cells(volume) if runtime.native_cells_only else np.ones(
            [-(-s // CELL) for s in volume.shape], dtype=bool)
        plan = plan_tiles(cells, runtime.tile)
        timings["prepare"] = time.perf_counter() - t0
        try:
            # Only the voxels the result reads, as the local split head computes them (CPU).
            sampled = sampled_voxels(volume) if runtime.split_head else None
            reply = self.client.blastct(x, plan, list(runtime.member_names), runtime.skip_constant,
                                        volume.series_uid, sampled)
        except ClusterUnavailable as exc:
            note = self._fallback(exc)
            out = runtime.analyse(volume, on_member=on_member)
            out.fallback_note = note if not out.fallback_note else f"{note}; {out.fallback_note}"
            out.ran_on = {"backend": "local", "note": note}  # type: ignore[attr-defined]
            return out
        t1 = time.perf_counter()
        self.note(f"on the cluster at {self.client.base_url}")
        meta = reply.meta
        timings["infer"] = t1 - t0 - timings["prepare"]
        timings["cluster"] = float(meta.get("cluster_s", 0.0))
        timings["transfer_mb"] = reply.transfer_bytes / 1e6
        grid = np.asarray(reply.arrays["labels"], dtype=np.uint8)
        nodes = ", ".join(meta.get("nodes", [])) or "?"
        replicas = meta.get("replicas", {})
        out = blastct_output(grid, volume, timings=timings,
                             device=f"{runtime.device} on cluster node(s) {nodes} ({len(replicas)} replica(s))",
                             note=None, precision=runtime.precision, members=len(runtime.member_names),
                             tile=runtime.tile, tiles_run=len(plan), tiles_constant=0)
        out.timings["postprocess"] = time.perf_counter() - t1
        out.timings["total"] = time.perf_counter() - t0
        out.ran_on = {"backend": "ray", "url": self.client.base_url, "nodes": meta.get("nodes", []),  # type: ignore[attr-defined]
                      "replicas": replicas, "items": meta.get("items"), "retries": meta.get("retries", 0),
                      "item_s_mean": meta.get("item_s_mean"), "item_mb_mean": meta.get("item_mb_mean"),
                      "sampled": meta.get("sampled", False)}
        return out
