"""The Ray Serve deployments that run FirstLook's packs on a cluster (the only Ray code in inference/).

* ``ChexnetServer`` (HTTP ``/chexnet``): one preprocessed radiograph tensor in, 14 probabilities
  and the 7x7 class-activation maps out; ``serve.batch`` groups a burst into one batched
  inference (the batch-N model is the same IR reshaped, identical per image).
* ``BlastCtCoordinator`` (HTTP ``/blast-ct``): one normalised 1 mm volume and its tile plan in,
  the label grid out. It puts the volume (and the mask of voxels a native pixel samples, when
  the service sends it: then each item computes and returns only those, through the same split
  head as the local runtime) in Ray's object store once and fans the study out as
  member x tile work items over every ``BlastCtWorker`` replica, retries an item whose replica
  died or missed its deadline, and sums the outputs in the local order (``fanout``), so the
  labels equal the local runtime's.

Every replica loads its pack with the hash check (``inference.packs.load_pack``) before it
serves: a tampered pack makes that replica's constructor fail, so Serve never routes to it and
``firstlook serve-models`` reports the refusal. Replies say where they ran (node, replica, device).
"""

from __future__ import annotations

import asyncio
import logging
import os
import threading
import time
from collections import OrderedDict
from pathlib import Path
from typing import Any, Callable

import numpy as np
import ray
from ray import serve
from starlette.requests import Request
from starlette.responses import Response

from inference.blastct import BlastCt
from inference.chexnet import Chexnet
from inference.cluster.fanout import OrderedSum, WorkItem, group_tiles, item_output, work_items
from inference.cluster.wire import decode, encode
from inference.packs import load_pack
from inference.runner import make_core

log = logging.getLogger(__name__)

CHEXNET_ROUTE = "/chexnet"
BLASTCT_ROUTE = "/blast-ct"
ITEM_ATTEMPTS = 6  # with back-off 0.5, 1, 2, 4, 5 s: Serve replaces a dead replica meanwhile


def replica_identity(device: str) -> dict[str, str]:
    """Where this replica runs, as results record it."""
    context = serve.get_replica_context()
    replica = getattr(getattr(context, "replica_id", None), "unique_id", None) or getattr(context, "replica_tag", "?")
    return {"node": ray.util.get_node_ip_address(), "replica": f"{context.deployment}#{replica}",
            "device": device, "pid": str(os.getpid())}


def _binary(meta: dict[str, Any], **arrays: np.ndarray) -> Response:
    return Response(encode(meta, **arrays), media_type="application/octet-stream")


def _refused(status: int, message: str) -> Response:
    return Response(message, status_code=status, media_type="text/plain")


@serve.deployment(name="chexnet")
class ChexnetServer:
    def __init__(self, pack_dir: str, device: str = "CPU", max_batch: int = 8, batch_wait_s: float = 0.01) -> None:
        pack = load_pack(Path(pack_dir))  # verifies every file's SHA-256: a tampered pack never serves
        core = make_core(None)
        self.model = Chexnet(pack, core, device=device)
        self.where = replica_identity(self.model.device)
        self.max_batch = max(1, int(max_batch))
        self._batched: Any = None
        if self.max_batch > 1:
            import openvino as ov  # noqa: F401  (the batch-N copy of the same IR)

            model = core.read_model(str(pack.member_xml("model", "int8")))
            model.reshape([self.max_batch, *self.model.model.inputs[0].get_shape()[1:]])
            self._batched = core.compile_model(model, self.model.device, {"PERFORMANCE_HINT": "THROUGHPUT"})
            self.infer_batch.set_max_batch_size(self.max_batch)
            self.infer_batch.set_batch_wait_timeout_s(batch_wait_s)
        log.info("chexnet replica %s ready (pack %s verified, batch %d)", self.where, pack.version, self.max_batch)

    def _cam(self, features: np.ndarray) -> np.ndarray:
        return np.tensordot(self.model._weights, features, axes=(1, 0)).astype(np.float32)

    def _one(self, tensor: np.ndarray) -> tuple[np.ndarray, np.ndarray, int]:
        out = self.model.model.infer(tensor)
        probs = np.asarray(out[self.model._probs_name], dtype=np.float64).reshape(-1)
        return probs, self._cam(np.asarray(out[self.model._features_name], dtype=np.float32)[0]), 1

    @serve.batch(max_batch_size=8, batch_wait_timeout_s=0.01)
    async def infer_batch(self, tensors: list[np.ndarray]) -> list[tuple[np.ndarray, np.ndarray, int]]:
        n = len(tensors)
        if n == 1:
            return [self._one(tensors[0])]
        batch = np.zeros((self.max_batch, *tensors[0].shape[1:]), dtype=np.float32)
        batch[:n] = np.concatenate(tensors, axis=0)
        out = self._batched([batch])
        probs = np.asarray(out[self._batched.output(self.model._probs_name)], dtype=np.float64)
        feats = np.asarray(out[self._batched.output(self.model._features_name)], dtype=np.float32)
        return [(probs[i].reshape(-1), self._cam(feats[i]), n) for i in range(n)]

    async def __call__(self, request: Request) -> Response:
        t0 = time.perf_counter()
        _meta, arrays = decode(await request.body())
        tensor = np.asarray(arrays["tensor"], dtype=np.float32)
        if self._batched is not None:
            probs, cam_raw, batch = await self.infer_batch(tensor)
        else:
            probs, cam_raw, batch = self._one(tensor)
        return _binary({**self.where, "batch": batch, "replica_s": time.perf_counter() - t0},
                       probs=probs, cam_raw=cam_raw)


@serve.deployment(name="blast-ct-worker")
class BlastCtWorker:
    """Runs single work items; keeps a few compiled (member, shape) pairs and the current volume."""

    def __init__(self, pack_dir: str, device: str = "CPU", compiled_cache: int = 6) -> None:
        pack = load_pack(Path(pack_dir))  # verifies every file's SHA-256
        self.runtime = BlastCt(pack, make_core(None), device=device)
        self.where = replica_identity(self.runtime.device)
        self._compiled: OrderedDict[tuple[str, tuple[int, int, int], bool], Callable[..., np.ndarray]] = OrderedDict()
        self._cache_size = max(1, compiled_cache)
        self._volume: tuple[str, np.ndarray, np.ndarray | None] | None = None
        # Serve runs a sync method on a thread per ongoing request: one item at a time per
        # replica (an OpenVINO infer request serves one caller), the next one already queued here.
        self._busy = threading.Lock()
        log.info("blast-ct worker %s ready (pack %s verified)", self.where, pack.version)

    def _infer(self, member: str, size: tuple[int, int, int], split: bool) -> Callable[..., np.ndarray]:
        key = (member, size, split)
        if key not in self._compiled:
            self._compiled[key] = self.runtime.compile_tile(member, size, split)
            while len(self._compiled) > self._cache_size:
                self._compiled.popitem(last=False)
        self._compiled.move_to_end(key)
        return self._compiled[key]

    def run(self, study: str, volume: list[ray.ObjectRef], member: str, size: list[int], start: list[int],
            constant: bool) -> tuple[np.ndarray, dict[str, Any]]:
        with self._busy:
            return self._run(study, volume, member, size, start, constant)

    def _run(self, study: str, volume: list[ray.ObjectRef], member: str, size: list[int], start: list[int],
             constant: bool) -> tuple[np.ndarray, dict[str, Any]]:
        t0 = time.perf_counter()
        if self._volume is None or self._volume[0] != study:
            arrays = ray.get(list(volume))
            self._volume = (study, arrays[0], arrays[1] if len(arrays) > 1 else None)
        _, x, sampled = self._volume
        # The split head where the local runtime uses it (CPU), so the logits are the same bits.
        split = sampled is not None and self.runtime.split_head
        item = WorkItem(member, tuple(int(n) for n in size), tuple(int(s) for s in start), constant)  # type: ignore[arg-type]
        out = item_output(self._infer(member, item.size, split), x, item, sampled, split)
        return np.ascontiguousarray(out, dtype=np.float32), {**self.where, "item_s": time.perf_counter() - t0}


@serve.deployment(name="blast-ct")
class BlastCtCoordinator:
    def __init__(self, worker: Any, pack_dir: str, item_deadline_s: float = 60.0, window: int = 8) -> None:
        pack = load_pack(Path(pack_dir))  # verifies (the coordinator names the members it fans out)
        self.members = [m.name for m in pack.members]
        self.worker = worker
        self.item_deadline_s = float(item_deadline_s)
        self.window = max(1, int(window))
        self.where = replica_identity("-")

    async def _item(self, study: str, ref: list[ray.ObjectRef], item: WorkItem,
                    report: dict[str, Any]) -> tuple[np.ndarray, dict[str, Any]]:
        last: Exception | None = None
        for attempt in range(ITEM_ATTEMPTS):
            try:
                response = self.worker.run.remote(study, ref, item.member, list(item.size), list(item.start),
                                                  item.constant)
                return await asyncio.wait_for(response, timeout=self.item_deadline_s)
            except Exception as exc:  # a dead replica (ActorDiedError), a deadline, a transient error
                last = exc
                report["retries"] += 1
                log.warning("work item %s on %s failed (attempt %d): %s", item.member, item.start, attempt + 1, exc)
                await asyncio.sleep(min(5.0, 0.5 * 2 ** attempt))
        raise RuntimeError(f"work item {item.member} at {item.start} failed {ITEM_ATTEMPTS} times: {last}")

    async def __call__(self, request: Request) -> Response:
        try:
            return await self._study(request)
        except Exception as exc:  # the service gets one line and runs the study locally
            log.exception("blast-ct study failed on the cluster")
            return _refused(503, f"{exc.__class__.__name__}: {exc}")

    async def _study(self, request: Request) -> Response:
        t0 = time.perf_counter()
        meta, arrays = decode(await request.body())
        x = np.ascontiguousarray(arrays["x"], dtype=np.float32)
        plan = [(tuple(s), tuple(n)) for s, n in meta["plan"]]
        members = list(meta.get("members") or self.members)
        unknown = [m for m in members if m not in self.members]
        if unknown:
            return _refused(400, f"unknown members {unknown}")
        sampled = None
        if "sampled" in arrays:  # packed bits of the voxels some native pixel samples
            sampled = np.unpackbits(arrays["sampled"], count=x.size).astype(bool).reshape(x.shape)
        groups = group_tiles(x, plan, bool(meta.get("skip_constant", True)))
        items = work_items(members, groups)
        total = OrderedSum(x.shape, groups, sampled)
        study = f"{meta.get('study', 'study')}-{time.time_ns()}"
        ref = [ray.put(x)] + ([ray.put(sampled)] if sampled is not None else [])
        report: dict[str, Any] = {"retries": 0, "replicas": {}, "nodes": set(), "item_s": [], "item_bytes": 0}
        # Released when an output has been added (not when it arrives): at most ``window`` outputs
        # are held while waiting for the next one in order.
        gate = asyncio.Semaphore(self.window)

        async def launch(item: WorkItem) -> tuple[np.ndarray, dict[str, Any]]:
            await gate.acquire()
            return await self._item(study, ref, item, report)

        tasks = [asyncio.ensure_future(launch(item)) for item in items]
        try:
            for item, task in zip(items, tasks):
                out, where = await task
                total.add(item, out)
                gate.release()
                report["replicas"][where["replica"]] = report["replicas"].get(where["replica"], 0) + 1
                report["nodes"].add(where["node"])
                report["item_s"].append(where["item_s"])
                report["item_bytes"] += out.nbytes
        except Exception as exc:
            for task in tasks:
                task.cancel()
            return _refused(503, str(exc))
        labels = total.labels()
        item_s = report["item_s"]
        reply = {"coordinator": self.where, "items": len(items), "retries": report["retries"],
                 "replicas": report["replicas"], "nodes": sorted(report["nodes"]),
                 "device": self.where["device"], "item_s_mean": float(np.mean(item_s)) if item_s else 0.0,
                 "item_mb_mean": report["item_bytes"] / max(1, len(items)) / 1e6, "sampled": sampled is not None,
                 "cluster_s": time.perf_counter() - t0}
        return _binary(reply, labels=labels)


def chexnet_app(pack_dir: str, replicas: int, cpus: float, gpus: float, device: str, max_batch: int) -> Any:
    options = {"num_cpus": cpus, "num_gpus": gpus}
    return ChexnetServer.options(num_replicas=replicas, ray_actor_options=options,
                                 max_ongoing_requests=max(8, 2 * max_batch)).bind(pack_dir, device, max_batch)


def blastct_app(pack_dir: str, replicas: int, cpus: float, gpus: float, device: str, item_deadline_s: float) -> Any:
    worker = BlastCtWorker.options(num_replicas=replicas, ray_actor_options={"num_cpus": cpus, "num_gpus": gpus},
                                   max_ongoing_requests=2).bind(pack_dir, device)
    return BlastCtCoordinator.options(num_replicas=1, ray_actor_options={"num_cpus": 0.1},
                                      max_ongoing_requests=4).bind(worker, pack_dir, item_deadline_s,
                                                                   window=2 * max(1, replicas) + 2)
