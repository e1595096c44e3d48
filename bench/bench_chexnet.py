"""CheXNet latency/throughput: PyTorch eager vs OpenVINO FP32 vs OpenVINO INT8, and the CAM cost.

Run by hand (needs the build extra for torch):

    python bench/bench_chexnet.py [--packs build/model-packs] [--rounds 10] [--per-round 10] [--json out.json]

All variants are measured in one process, interleaved round by round, so drift and other
load on the machine hit every variant alike; ratios are the figures to read.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import statistics
import sys
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any, Callable

import numpy as np
import openvino as ov

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

from inference.chexnet import cam_to_image  # noqa: E402
from inference.cxr_input import load_png, to_model_input  # noqa: E402
from inference.packs import load_pack  # noqa: E402


def _percentile(values: list[float], q: float) -> float:
    return float(np.percentile(np.asarray(values), q))


def _probs_only(model: ov.Model) -> ov.Model:
    """The same network without the feature-map output (what CAM-less inference would be)."""
    probs = [o for o in model.outputs if "probs" in o.get_names()]
    return ov.Model(probs, model.get_parameters(), "chexnet-probs-only")


def _throughput(core: ov.Core, model: ov.Model, config: dict[str, Any], x: np.ndarray, seconds: float) -> float:
    """Images per second with the THROUGHPUT hint and an async queue."""
    compiled = core.compile_model(model, "CPU", {**config, "PERFORMANCE_HINT": "THROUGHPUT"})
    queue = ov.AsyncInferQueue(compiled)
    for _ in range(len(queue)):  # warm-up
        queue.start_async({0: x})
    queue.wait_all()
    count = 0
    start = time.perf_counter()
    while time.perf_counter() - start < seconds:
        for _ in range(len(queue)):
            queue.start_async({0: x})
            count += 1
        queue.wait_all()
    return count / (time.perf_counter() - start)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--packs", type=Path, default=REPO / "build" / "model-packs")
    parser.add_argument("--shared", type=Path, default=Path(os.environ.get("FIRSTLOOK_SHARED", REPO.parent / "shared")))
    parser.add_argument("--rounds", type=int, default=10)
    parser.add_argument("--per-round", type=int, default=10)
    parser.add_argument("--throughput-seconds", type=float, default=5.0)
    parser.add_argument("--threads", type=int, default=0, help="INFERENCE_NUM_THREADS (0 = plugin default)")
    parser.add_argument("--no-torch", action="store_true")
    parser.add_argument("--json", type=Path, default=None)
    args = parser.parse_args()

    load_before = f"{os.getloadavg()[0]:.2f}"
    pack = load_pack(args.packs / "chexnet")
    image = load_png(args.shared / "data" / "cxr" / "images" / "00000129_000.png")
    x = to_model_input(image, pack.manifest["preprocessing"])
    core = ov.Core()
    base: dict[str, Any] = {}
    if args.threads:
        base["INFERENCE_NUM_THREADS"] = args.threads

    fp32_model = core.read_model(str(pack.member_xml("model", "fp32")))
    int8_model = core.read_model(str(pack.member_xml("model", "int8")))
    variants: dict[str, Callable[[], Any]] = {}
    compile_s: dict[str, float] = {}

    def add_ov(name: str, model: ov.Model, extra: dict[str, Any]) -> None:
        start = time.perf_counter()
        compiled = core.compile_model(model, "CPU", {**base, "PERFORMANCE_HINT": "LATENCY", **extra})
        compile_s[name] = time.perf_counter() - start
        request = compiled.create_infer_request()
        variants[name] = lambda: request.infer({0: x})

    if not args.no_torch:
        import torch

        from inference.pack_builder.chexnet_build import random_model
        from inference.pack_builder.densenet import ChexnetExportWrapper

        net = ChexnetExportWrapper(random_model(pack.manifest["source"].get("seed") or 0).model).eval()
        tx = torch.from_numpy(x)

        def torch_run() -> Any:
            with torch.inference_mode():
                return net(tx)

        variants["torch eager fp32"] = torch_run

    add_ov("ov fp32 (f32 precision)", fp32_model, {"INFERENCE_PRECISION_HINT": "f32"})
    add_ov("ov fp32 (CPU default precision)", fp32_model, {})
    add_ov("ov int8 (probs+features)", int8_model, {})
    add_ov("ov int8 (probs only)", _probs_only(int8_model), {})

    for run in variants.values():  # warm-up
        for _ in range(3):
            run()
    samples: dict[str, list[float]] = {name: [] for name in variants}
    for _ in range(args.rounds):
        for name, run in variants.items():
            for _ in range(args.per_round):
                t0 = time.perf_counter()
                run()
                samples[name].append(time.perf_counter() - t0)

    # CAM post-processing (7x7 -> image size, 14 findings) at two image sizes.
    compiled = core.compile_model(int8_model, "CPU", {"PERFORMANCE_HINT": "LATENCY"})
    features = compiled({0: x})["features"][0]
    weights = np.load(pack.file(pack.manifest["cam"]["weights"]))
    cam_ms: dict[str, float] = {}
    pool = ThreadPoolExecutor(max(1, min(4, os.cpu_count() or 1)))  # as the runtime does
    for rows, cols in ((1024, 1024), (2500, 2048)):
        for label, executor in (("serial", None), ("threaded", pool)):
            times = []
            for _ in range(7):
                t0 = time.perf_counter()
                cam_to_image(np.tensordot(weights, features, axes=(1, 0)), rows, cols, executor)
                times.append(time.perf_counter() - t0)
            cam_ms[f"{rows}x{cols} {label}"] = 1000 * statistics.median(times)
    pool.shutdown()

    throughput = {
        "ov fp32 (f32 precision)": _throughput(core, fp32_model, {**base, "INFERENCE_PRECISION_HINT": "f32"}, x,
                                               args.throughput_seconds),
        "ov fp32 (CPU default precision)": _throughput(core, fp32_model, base, x, args.throughput_seconds),
        "ov int8 (probs+features)": _throughput(core, int8_model, base, x, args.throughput_seconds),
    }

    rows_out: dict[str, dict[str, float]] = {}
    torch_p50 = statistics.median(samples["torch eager fp32"]) if "torch eager fp32" in samples else None
    fp32_p50 = statistics.median(samples["ov fp32 (f32 precision)"])
    print(f"CPU: {core.get_property('CPU', 'FULL_DEVICE_NAME')}, {os.cpu_count()} logical cores; "
          f"OpenVINO {ov.__version__}; CPU default precision {core.get_property('CPU', 'INFERENCE_PRECISION_HINT')}")
    print(f"load average before/after: {load_before} / {os.getloadavg()[0]:.2f} (other work on the machine skews p90)")
    print(f"{'variant':34s} {'min ms':>8s} {'p50 ms':>8s} {'p90 ms':>8s} {'img/s (1 req)':>14s} {'vs torch':>9s} {'vs ov f32':>9s}")
    for name, values in samples.items():
        p50, p90 = statistics.median(values), _percentile(values, 90)
        rows_out[name] = {"min_ms": 1000 * min(values), "p50_ms": 1000 * p50, "p90_ms": 1000 * p90, "ips_sync": 1 / p50}
        vs_torch = f"{torch_p50 / p50:8.2f}x" if torch_p50 else "      -"
        print(f"{name:34s} {1000 * min(values):8.2f} {1000 * p50:8.2f} {1000 * p90:8.2f} {1 / p50:14.1f} {vs_torch:>9s} {fp32_p50 / p50:8.2f}x")
    int8_both = statistics.median(samples["ov int8 (probs+features)"])
    int8_probs = statistics.median(samples["ov int8 (probs only)"])
    print(f"feature-map output costs {1000 * (int8_both - int8_probs):+.2f} ms per image in INT8 inference "
          f"({100 * (int8_both / int8_probs - 1):+.1f} %)")
    for size, ms in cam_ms.items():
        print(f"CAM post-processing (14 maps, {size}): {ms:.1f} ms")
    print("throughput (THROUGHPUT hint, async queue): " + ", ".join(f"{k} {v:.1f} img/s" for k, v in throughput.items()))
    print("compile s: " + ", ".join(f"{k} {v:.2f}" for k, v in compile_s.items()))

    if args.json:
        args.json.parent.mkdir(parents=True, exist_ok=True)
        args.json.write_text(json.dumps({
            "machine": {"cpu": core.get_property("CPU", "FULL_DEVICE_NAME"), "cores": os.cpu_count(),
                        "python": platform.python_version(), "openvino": ov.__version__},
            "latency": rows_out, "cam_postprocess_ms": cam_ms, "throughput_ips": throughput,
            "compile_s": compile_s, "rounds": args.rounds, "per_round": args.per_round,
        }, indent=2) + "\n")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
