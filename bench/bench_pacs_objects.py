"""PACS objects benchmark, run by hand: time to build the SR/SEG/SC of one result, and sizes.

    python bench/bench_pacs_objects.py [--shared ../shared] [--packs build/model-packs]
                                       [--repeats 5] [--cxr 3] [--headct real|synthetic-labels|skip]

Chest: ``--cxr`` NIH radiographs (as 12-bit CR) through the real pipeline and the real
CheXNet pack, then ``build_result_objects`` timed ``--repeats`` times per result.
Head CT: the real 28-slice gantry-tilted series through the real BLAST-CT pack (``real``,
about 6 minutes on a 2-core machine), or a synthetic label volume on its real slices
(``synthetic-labels``, seconds). Every object is also checked with dciodvfy (errors and
warnings counted). Prints one JSON document.
"""

from __future__ import annotations

import argparse
import io
import json
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from dataclasses import replace
from pathlib import Path

import pydicom

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO))


def timed_builds(result, files, specs, data_dir, pack, repeats: int) -> tuple[list, list[float]]:
    from app.core.pacs_objects import build_result_objects

    times, objects = [], []
    for _ in range(repeats):
        t0 = time.perf_counter()
        objects = build_result_objects(result, files, specs, data_dir, pack=pack)
        times.append(time.perf_counter() - t0)
    return objects, times


def describe(objects, workdir: Path) -> list[dict]:
    out = []
    for obj in objects:
        buf = io.BytesIO()
        pydicom.dcmwrite(buf, obj.dataset, enforce_file_format=True)
        path = workdir / f"{obj.kind}-{obj.sop_instance_uid}.dcm"
        path.write_bytes(buf.getvalue())
        lines = subprocess.run(["dciodvfy", str(path)], capture_output=True, text=True).stderr.splitlines()
        out.append({"kind": obj.kind, "bytes": len(buf.getvalue()),
                    "frames": int(obj.dataset.get("NumberOfFrames", 1) or 1),
                    "dciodvfy_errors": [l for l in lines if l.startswith("Error")],
                    "dciodvfy_warnings": sorted({l for l in lines if l.startswith("Warning")})})
    return out


def summary(times: list[float]) -> dict:
    return {"median_s": round(statistics.median(times), 3), "min_s": round(min(times), 3),
            "max_s": round(max(times), 3), "runs": len(times)}


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--shared", type=Path, default=REPO.parent / "shared")
    parser.add_argument("--packs", type=Path, default=REPO / "build" / "model-packs")
    parser.add_argument("--repeats", type=int, default=5)
    parser.add_argument("--cxr", type=int, default=3)
    parser.add_argument("--headct", choices=("real", "synthetic-labels", "skip"), default="real")
    args = parser.parse_args()

    from app.core.config import Config
    from app.core.events import EventHub
    from app.core.models import ModelSpecs, default_specs
    from app.core.models.blast_ct import BlastCtSpec
    from app.core.models.chexnet import ChexnetSpec
    from app.core.pipeline import Pipeline
    from app.core.store import StudyStore
    from inference.packs import load_pack
    from tests.support.dicom_factory import make_cxr_dataset, write

    report: dict = {"repeats": args.repeats}
    work = Path(tempfile.mkdtemp(prefix="bench-pacs-objects-"))
    try:
        specs = default_specs()
        if args.cxr:
            store = StudyStore(work / "cxr-data")
            config = replace(Config(), data_dir=store.data_dir, packs_dir=args.packs, cache_dir=work / "cache")
            series = []
            for png in sorted((args.shared / "data" / "cxr" / "images").glob("*.png"))[: args.cxr]:
                ds = make_cxr_dataset(png, modality="CR", photometric="MONOCHROME1")
                path = write(ds, work / "cxr-src")
                series.append(store.store_instance(path.read_bytes(), "BENCH").header.series_uid)
                store.enqueue_job(series[-1])
            pipeline = Pipeline(config, store, EventHub(), specs=ModelSpecs((ChexnetSpec(),)))
            pipeline.models.load()
            pipeline.run_until_idle()
            pack = load_pack(args.packs / "chexnet")
            rows = []
            for uid in series:
                result = store.get_result(uid)
                objects, times = timed_builds(result, store.series_files(uid), specs, store.data_dir, pack,
                                              args.repeats)
                rows.append({"series": uid, "build": summary(times), "objects": describe(objects, work)})
            report["chest"] = rows
            store.close()
        if args.headct != "skip":
            headct = sorted((args.shared / "data" / "headct" / "dcm_qa_ct_GE_HiSpeed_head" / "dicom").glob("*.dcm"))
            pack = load_pack(args.packs / "blast-ct")
            if args.headct == "real":
                store = StudyStore(work / "ct-data")
                config = replace(Config(), data_dir=store.data_dir, packs_dir=args.packs, cache_dir=work / "cache")
                for f in headct:
                    uid = store.store_instance(f.read_bytes(), "BENCH").header.series_uid
                store.enqueue_job(uid)
                pipeline = Pipeline(config, store, EventHub(), specs=ModelSpecs((BlastCtSpec(),)))
                pipeline.models.load()
                t0 = time.perf_counter()
                pipeline.run_until_idle(timeout=3600)
                analysis_s = time.perf_counter() - t0
                result = store.get_result(uid)
                files, data_dir = store.series_files(uid), store.data_dir
                report["headct_analysis_s"] = round(analysis_s, 1)
                report["headct_findings"] = result.findings
            else:
                from tests.pacs_objects.conftest import blobs, head_result

                data_dir = work / "ct-data"
                data_dir.mkdir()
                result, _ = head_result(data_dir, headct, blobs)
                files = headct
            objects, times = timed_builds(result, files, specs, data_dir, pack, args.repeats)
            report["headct"] = {"labels": args.headct, "build": summary(times), "objects": describe(objects, work)}
    finally:
        shutil.rmtree(work, ignore_errors=True)
    print(json.dumps(report, indent=2))


if __name__ == "__main__":
    main()
