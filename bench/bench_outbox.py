"""Outbox benchmark, run by hand: result stored -> all its objects accepted by Orthanc, and how
fast the outbox drains when Orthanc comes back after results piled up.

    python bench/bench_outbox.py [--shared ../shared] [--packs build/model-packs] [--cxr 10]
                                 [--headct-repeats 3] [--queued 200]

Runs itself inside a private network namespace (``unshare -n``, loopback only) with Orthanc
(Debian package) as the PACS, in one process: the real pipeline (CheXNet pack) on ``--cxr`` NIH
radiographs, the outbox worker and the C-STORE sender as the service wires them.

1. Chest: per radiograph, the staging time (build SR + SC and write them durably, before the
   result is committed) and the latency from the result's commit to the last object's C-STORE
   Success from Orthanc; p50/p95.
2. Head CT: the real 28-slice tilted series with a synthetic label volume (the real BLAST-CT
   run takes minutes and is not what is measured here), SR + SEG + SC, same two figures.
3. Throughput: Orthanc stopped, ``--queued`` chest results queued (objects cloned from a real
   chest result's, new UIDs), Orthanc started: objects/s from Orthanc up (and from the first
   accepted object) until the outbox is empty, with the retry cap at 2 s.
Object sizes per kind come from the outbox rows. Prints one JSON document.
"""

from __future__ import annotations

import argparse
import copy
import json
import os
import statistics
import subprocess
import sys
import tempfile
import time
from dataclasses import replace
from pathlib import Path
from typing import Any

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO))


def pct(values: list[float], q: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, max(0, round(q * (len(ordered) - 1))))]


def summary(values: list[float]) -> dict[str, float]:
    return {"n": len(values), "p50_ms": round(1000 * statistics.median(values), 1),
            "p95_ms": round(1000 * pct(values, 0.95), 1), "max_ms": round(1000 * max(values), 1)}


def wait_sent(store: Any, study_uid: str, timeout: float = 120.0) -> float:
    end = time.monotonic() + timeout
    while time.monotonic() < end:
        rows = store.outbox.rows(study_uid)
        live = [r for r in rows if r["state"] != "superseded"]
        if live and all(r["state"] == "sent" for r in live):
            return time.perf_counter()
        time.sleep(0.002)
    raise TimeoutError(f"objects of {study_uid} not accepted in {timeout} s")


def run(args: argparse.Namespace, work: Path) -> dict[str, Any]:
    from app.core.audit import AuditLog
    from app.core.config import Config
    from app.core.destinations import Destination
    from app.core.events import EventHub, ResultStored
    from app.core.models import default_specs
    from app.core.outbox.result_outbox import ResultOutbox
    from app.core.outbox.worker import OutboxWorker
    from app.core.pacs_objects import build_result_objects
    from app.core.pipeline import Pipeline
    from app.core.store import StudyStore
    from dicom_node.sender import StoreSender
    from tests.support.crash_harness import chexnet_only_packs
    from tests.support.dicom_factory import write_cxr
    from tests.support.pacs_peers import Orthanc, loopback_up

    loopback_up()
    report: dict[str, Any] = {}
    orthanc = Orthanc(work / "orthanc").start()
    destination = Destination("orthanc", "ORTHANC", "127.0.0.1", orthanc.dicom_port)
    specs = default_specs()
    store = StudyStore(work / "data", min_free_bytes=0)
    config = replace(Config(), data_dir=store.data_dir, cache_dir=work / "cache", min_free_mb=0,
                     packs_dir=chexnet_only_packs(Path(args.packs), work), destinations=[destination])
    staging: list[float] = []

    class TimedOutbox(ResultOutbox):
        def stage(self, result: Any) -> Any:
            t0 = time.perf_counter()
            try:
                return super().stage(result)
            finally:
                staging.append(time.perf_counter() - t0)

    outbox = TimedOutbox(store, specs, lambda: [destination], build_result_objects)
    hub = EventHub()
    stored_at: dict[str, float] = {}
    worker = OutboxWorker(store, [destination], StoreSender("FIRSTLOOK"), AuditLog(store.data_dir), "FIRSTLOOK",
                          retry_s=0.5, retry_max_s=2.0)

    def on_event(event: Any) -> None:
        if isinstance(event, ResultStored):
            stored_at[event.study_uid] = time.perf_counter()
            worker.notify()

    hub.subscribe(on_event)
    pipeline = Pipeline(config, store, hub, specs=specs, outbox=outbox)
    pipeline.models.load()
    worker.start()
    try:
        # 1. chest radiographs through the real pipeline
        pngs = sorted((Path(args.shared) / "data" / "cxr" / "images").glob("*.png"))[:args.cxr]
        latencies: list[float] = []
        for png in pngs:
            header = store.store_instance(write_cxr(work / "in", png).read_bytes(), calling_ae="CR01").header
            store.enqueue_job(header.series_uid)
            pipeline.run_until_idle()
            latencies.append(wait_sent(store, header.study_uid) - stored_at[header.study_uid])
        report["chest"] = {"staging": summary(staging), "stored_to_accepted": summary(latencies)}

        # 2. head CT: the real tilted series, synthetic label volume
        if args.headct_repeats:
            from tests.pacs_objects.conftest import blobs, head_result

            files = sorted((Path(args.shared) / "data" / "headct" / "dcm_qa_ct_GE_HiSpeed_head" / "dicom").glob("*.dcm"))
            for f in files:
                store.store_instance(f.read_bytes(), calling_ae="CT01")
            staging.clear()
            head_lat: list[float] = []
            for _ in range(args.headct_repeats):
                result, _labels = head_result(store.data_dir, files, blobs, created_at=time.time())
                staged = outbox.stage(result)
                assert staged is not None
                store.save_result(result, also=staged.record)
                t0 = time.perf_counter()
                worker.notify()
                head_lat.append(wait_sent(store, result.study_uid, 300) - t0)
            report["headct_synthetic_labels"] = {"staging": summary(staging), "stored_to_accepted": summary(head_lat)}

        sizes: dict[str, list[int]] = {}
        for o in store.outbox.objects():
            sizes.setdefault(o.kind, []).append(o.size)
        report["object_bytes"] = {k: {"min": min(v), "max": max(v), "median": int(statistics.median(v))}
                                  for k, v in sizes.items()}
        report["orthanc_instances"] = len(orthanc.instances())

        # 3. throughput after Orthanc comes back
        chest_result = next(r for r in store.all_results() if r.model == "chexnet")
        template = build_result_objects(chest_result, store.series_files(chest_result.series_uid), specs,
                                        store.data_dir)
        worker.stop()
        orthanc.stop()
        from pydicom.uid import generate_uid

        class Cloner:
            def __call__(self, result: Any, *a: Any, **k: Any) -> list[Any]:
                out = []
                for obj in template:
                    ds = copy.deepcopy(obj.dataset)
                    ds.StudyInstanceUID = result.study_uid
                    ds.SeriesInstanceUID = generate_uid()
                    ds.SOPInstanceUID = ds.file_meta.MediaStorageSOPInstanceUID = generate_uid()
                    out.append(type(obj)(obj.kind, ds))
                return out

        store2 = StudyStore(work / "data2", min_free_bytes=0)
        queue_outbox = ResultOutbox(store2, specs, lambda: [destination], Cloner())
        from tests.support.outbox_helpers import done_result

        worker2 = OutboxWorker(store2, [destination], StoreSender("FIRSTLOOK"), AuditLog(store2.data_dir),
                               "FIRSTLOOK", retry_s=0.5, retry_max_s=2.0)
        worker2.start()
        t_queue = time.perf_counter()
        for _ in range(args.queued):
            result = done_result(generate_uid(), generate_uid())
            staged = queue_outbox.stage(result)
            store2.save_result(result, also=staged.record)
        queued_s = time.perf_counter() - t_queue
        worker2.notify()
        time.sleep(3.0)  # failing meanwhile: backoff at its cap
        n_objects = len(store2.outbox.rows())
        failed_before = sum(1 for r in store2.outbox.rows() if r["state"] == "failed")
        orthanc2 = Orthanc(work / "orthanc2", dicom_port=orthanc.dicom_port, http_port=orthanc.http_port)
        t_up0 = time.perf_counter()
        orthanc2.start()
        t_up = time.perf_counter()
        first_sent: float | None = None
        while True:
            rows = store2.outbox.rows()
            sent = sum(1 for r in rows if r["state"] == "sent")
            if sent and first_sent is None:
                first_sent = time.perf_counter()
            if sent == len(rows):
                break
            time.sleep(0.01)
        t_done = time.perf_counter()
        worker2.stop()
        report["throughput"] = {
            "results": args.queued, "objects": n_objects, "queueing_s": round(queued_s, 2),
            "failed_while_down": failed_before, "orthanc_start_s": round(t_up - t_up0, 2),
            "drain_from_orthanc_up_s": round(t_done - t_up, 2),
            "first_accept_after_up_s": round((first_sent or t_done) - t_up, 2),
            "objects_per_s_from_up": round(n_objects / (t_done - t_up), 1),
            "objects_per_s_from_first_accept": round(n_objects / max(1e-6, t_done - (first_sent or t_up)), 1),
            "orthanc_instances": len(orthanc2.instances()),
        }
        orthanc2.stop()
        store2.close()
    finally:
        worker.stop()
        pipeline.stop()
        orthanc.stop()
        store.close()
    return report


def main() -> None:
    p = argparse.ArgumentParser()
    p.add_argument("--shared", default=str(REPO.parent / "shared"))
    p.add_argument("--packs", default=os.environ.get("FIRSTLOOK_PACKS", str(REPO / "build" / "model-packs")))
    p.add_argument("--cxr", type=int, default=10)
    p.add_argument("--headct-repeats", type=int, default=3)
    p.add_argument("--queued", type=int, default=200)
    args = p.parse_args()
    if os.environ.get("FIRSTLOOK_BENCH_NETNS") != "1":  # re-run inside a private network namespace
        env = {**os.environ, "FIRSTLOOK_BENCH_NETNS": "1", "PYTHONPATH": str(REPO)}
        sys.exit(subprocess.run(["unshare", "-n", "--", sys.executable, *sys.argv], env=env).returncode)
    import logging

    logging.basicConfig(level=logging.WARNING)
    logging.getLogger("pynetdicom").setLevel(logging.CRITICAL)
    logging.getLogger("app.core.outbox.worker").setLevel(logging.ERROR)
    with tempfile.TemporaryDirectory(prefix="bench-outbox-") as tmp:
        print(json.dumps(run(args, Path(tmp)), indent=1))


if __name__ == "__main__":
    main()
