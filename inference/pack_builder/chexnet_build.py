"""Build the CheXNet model pack: checkpoint -> OpenVINO FP32 IR -> NNCF INT8 IR + manifest.

Why this shape:
* Published CheXNet weights come in two layouts (arnoweng/CheXNet's DataParallel
  checkpoint with pre-0.4 torchvision names, and plain torchvision state dicts); both
  are remapped onto one DenseNet-121 and loaded with ``strict=True`` so a partial load
  can never pass silently.
* The IR has two outputs, probabilities and the 1024x7x7 feature map, so the runtime
  computes class-activation maps without a second pass.
* INT8 is only written if it stays within a fidelity gate of FP32 on all 120 reference
  radiographs; the measured figures go into the manifest.
* Without a checkpoint the pack is a seeded random model, marked ``validated: false``.
"""

from __future__ import annotations

import hashlib
import json
import logging
import os
import re
import shutil
import time
from dataclasses import dataclass
from datetime import datetime, timezone
from pathlib import Path
from typing import Any, Mapping

import nncf
import numpy as np
import openvino as ov
import torch

from inference.pack_builder.build_key import KeyInputs
from inference.pack_builder.densenet import ChexnetExportWrapper, DenseNet, densenet121
from inference.cxr_input import DEFAULT_PREPROCESSING, load_png, to_model_input
from inference.errors import PackError
from inference.packs import MANIFEST, load_pack, sha256_file, write_manifest

log = logging.getLogger(__name__)

PACK_NAME = "chexnet"
PACK_VERSION = "1.0.0"
BUILDER_REVISION = 2  # bump when the build recipe changes, so old packs are rebuilt

# Order used by arnoweng/CheXNet and the ChestX-ray14 label files (see shared README).
LABELS: tuple[str, ...] = (
    "Atelectasis",
    "Cardiomegaly",
    "Effusion",
    "Infiltration",
    "Mass",
    "Nodule",
    "Pneumonia",
    "Pneumothorax",
    "Consolidation",
    "Edema",
    "Emphysema",
    "Fibrosis",
    "Pleural_Thickening",
    "Hernia",
)
NUM_CLASSES = len(LABELS)
FEATURE_CHANNELS = 1024

# Placeholder operating points: CheXNet publishes none, and the 120-image reference set
# is enriched for positives, so thresholds must come from a local validation study.
DEFAULT_THRESHOLD = 0.5

TRIAGE_RULES: dict[str, Any] = {
    "rules": [
        {"priority": "critical", "any_of": ["Pneumothorax"]},
        {"priority": "urgent", "any_of": ["Effusion", "Pneumonia", "Consolidation", "Edema", "Mass", "Cardiomegaly"]},
    ],
    "default": "routine",
}

INPUT_NAME = "image"
PROBS_NAME = "probs"
FEATURES_NAME = "features"
CAM_WEIGHTS_FILE = "cam_weights.npy"

GATE_MEAN_ABS = 0.01
GATE_MAX_ABS = 0.05
CONVERSION_TOLERANCE = 1e-4  # torch vs OpenVINO FP32 (f32 precision) max |dp|
CALIBRATION_STRIDE = 2  # every 2nd reference image, sorted by name

RANDOM_INIT_NOTE = "Built from a seeded random initialisation: not a trained model, NOT for diagnosis."

_ARNOWENG_PREFIXES = ("module.densenet121.", "densenet121.")
_OLD_NAME = re.compile(r"\.(norm|relu|conv)\.(\d+)\.")


class CheckpointError(ValueError):
    """A checkpoint file is unreadable or not a DenseNet-121 with a 14-finding head."""


class FidelityGateError(PackError):
    """INT8 drifted too far from FP32; the INT8 pack is refused."""


@dataclass(frozen=True)
class LoadedCheckpoint:
    """A DenseNet ready for export, and where its weights came from."""

    model: DenseNet
    layout: str  # "arnoweng", "torchvision" or "seeded-random-init"
    path: Path | None
    sha256: str | None
    seed: int | None


def remap_state_dict(raw: Mapping[str, Any]) -> tuple[dict[str, torch.Tensor], str]:
    """Map a published checkpoint's keys onto :class:`DenseNet` names.

    Returns the state dict and the detected layout name; raises ``CheckpointError``
    for anything that is not one of the known layouts.
    """
    state: Any = raw
    if isinstance(state, Mapping) and "state_dict" in state and isinstance(state["state_dict"], Mapping):
        state = state["state_dict"]
    if not isinstance(state, Mapping) or not state:
        raise CheckpointError("checkpoint holds no state dict (expected a dict of tensors or {'state_dict': ...})")
    keys = [str(k) for k in state]
    non_tensor = [k for k in keys if not isinstance(state[k], torch.Tensor)]
    if non_tensor:
        raise CheckpointError(f"checkpoint state dict has non-tensor entries, e.g. {non_tensor[:3]}")

    layout: str
    prefix = ""
    for candidate in _ARNOWENG_PREFIXES:
        if all(k.startswith(candidate) for k in keys):
            layout, prefix = "arnoweng", candidate
            break
    else:
        if all(k.startswith("module.") for k in keys):
            prefix = "module."
        stripped = [k[len(prefix):] for k in keys]
        if not any(k.startswith("features.conv0.") for k in stripped) or not any(
            k.startswith("classifier.") for k in stripped
        ):
            sample = ", ".join(keys[:3])
            raise CheckpointError(
                "unknown checkpoint layout: expected arnoweng/CheXNet keys 'module.densenet121.*' or a "
                f"torchvision densenet121 state dict ('features.conv0.weight', 'classifier.weight'); got keys like {sample}"
            )
        layout = "torchvision"

    out: dict[str, torch.Tensor] = {}
    for key in keys:
        name = key[len(prefix):]
        name = _OLD_NAME.sub(lambda m: f".{m.group(1)}{m.group(2)}.", name)  # norm.1 -> norm1
        if name.startswith("classifier.0."):  # Sequential(Linear, Sigmoid)
            name = "classifier." + name[len("classifier.0."):]
        out[name] = state[key]

    weight = out.get("classifier.weight")
    if weight is None or tuple(weight.shape) != (NUM_CLASSES, FEATURE_CHANNELS):
        shape = None if weight is None else tuple(weight.shape)
        raise CheckpointError(
            f"checkpoint classifier is {shape}; CheXNet needs a Linear {FEATURE_CHANNELS}->{NUM_CLASSES} head"
        )
    return out, layout


def load_checkpoint(path: Path) -> LoadedCheckpoint:
    """Read a checkpoint (tensors only, no pickled code) into a DenseNet-121 in eval mode."""
    path = Path(path)
    if not path.is_file():
        raise CheckpointError(f"checkpoint {path} does not exist")
    try:
        raw = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as exc:
        raise CheckpointError(f"checkpoint {path.name} could not be read as a weights-only torch file: {exc}") from exc
    state, layout = remap_state_dict(raw)
    model = densenet121(NUM_CLASSES)
    # Checkpoints saved before PyTorch 0.4 have no BatchNorm num_batches_tracked buffers.
    for key, value in model.state_dict().items():
        if key.endswith("num_batches_tracked") and key not in state:
            state[key] = torch.zeros_like(value)
    try:
        model.load_state_dict(state, strict=True)
    except RuntimeError as exc:
        raise CheckpointError(f"checkpoint {path.name} ({layout} layout) does not match DenseNet-121: {exc}") from exc
    model.eval()
    return LoadedCheckpoint(model=model, layout=layout, path=path, sha256=sha256_file(path), seed=None)


def random_model(seed: int) -> LoadedCheckpoint:
    """A seeded, reproducible random DenseNet-121 (torchvision's initialisation)."""
    torch.manual_seed(seed)
    model = densenet121(NUM_CLASSES).eval()
    return LoadedCheckpoint(model=model, layout="seeded-random-init", path=None, sha256=None, seed=seed)


def export_openvino(model: DenseNet, input_hw: tuple[int, int] = (224, 224)) -> ov.Model:
    """Static-shape OpenVINO model with named outputs ``probs`` and ``features``."""
    wrapper = ChexnetExportWrapper(model).eval()
    example = torch.zeros(1, 3, *input_hw)
    with torch.no_grad():
        try:
            exported = torch.export.export(wrapper, (example,))
            ov_model = ov.convert_model(exported)
        except Exception as exc:  # older torch/openvino pairs: fall back to TorchScript tracing
            log.warning("torch.export conversion failed (%s); tracing instead", exc)
            ov_model = ov.convert_model(wrapper, example_input=example)
    ov_model.reshape({ov_model.inputs[0]: ov.PartialShape([1, 3, *input_hw])})
    ov_model.inputs[0].get_tensor().set_names({INPUT_NAME})
    ov_model.outputs[0].get_tensor().set_names({PROBS_NAME})
    ov_model.outputs[1].get_tensor().set_names({FEATURES_NAME})
    return ov_model


def reference_images(shared_dir: Path) -> list[Path]:
    """The 120 NIH ChestX-ray14 PNGs, sorted by name."""
    folder = Path(shared_dir) / "data" / "cxr" / "images"
    files = sorted(folder.glob("*.png"))
    if not files:
        raise FileNotFoundError(f"no reference radiographs in {folder}")
    return files


def _compile(core: ov.Core, model: ov.Model, precision_hint: str | None) -> ov.CompiledModel:
    config: dict[str, Any] = {"PERFORMANCE_HINT": "THROUGHPUT"}
    if precision_hint:
        config["INFERENCE_PRECISION_HINT"] = precision_hint
    return core.compile_model(model, "CPU", config)


def _run_all(compiled: ov.CompiledModel, inputs: list[np.ndarray]) -> tuple[np.ndarray, np.ndarray]:
    """Probabilities [N, 14] and feature maps [N, 1024, 7, 7] for every input."""
    probs: list[np.ndarray | None] = [None] * len(inputs)
    feats: list[np.ndarray | None] = [None] * len(inputs)
    queue = ov.AsyncInferQueue(compiled)

    def done(request: ov.InferRequest, index: int) -> None:
        probs[index] = request.get_output_tensor(0).data[0].copy()
        feats[index] = request.get_output_tensor(1).data[0].copy()

    queue.set_callback(done)
    for i, x in enumerate(inputs):
        queue.start_async({0: x}, i)
    queue.wait_all()
    return np.stack(probs), np.stack(feats)  # type: ignore[arg-type]


def _cam_peak_agreement(feat_a: np.ndarray, feat_b: np.ndarray, weights: np.ndarray) -> float:
    """Share of (image, finding) CAMs whose hottest 7x7 cell is the same in both."""
    cam_a = np.einsum("ck,nkhw->nchw", weights, feat_a).reshape(*feat_a.shape[:1], weights.shape[0], -1)
    cam_b = np.einsum("ck,nkhw->nchw", weights, feat_b).reshape(*feat_b.shape[:1], weights.shape[0], -1)
    return float(np.mean(cam_a.argmax(-1) == cam_b.argmax(-1)))


def check_fidelity_gate(mean_abs_dp: float, max_abs_dp: float, images: int) -> None:
    """Refuse INT8 unless mean |dp| <= 0.01 and max |dp| <= 0.05 against FP32."""
    if not (mean_abs_dp <= GATE_MEAN_ABS and max_abs_dp <= GATE_MAX_ABS):  # NaN fails too
        raise FidelityGateError(
            PACK_NAME,
            f"INT8 fidelity gate failed over {images} radiographs: mean |dp| {mean_abs_dp:.4f} "
            f"(limit {GATE_MEAN_ABS}), max |dp| {max_abs_dp:.4f} (limit {GATE_MAX_ABS}); INT8 pack not written",
        )


def _int8_fidelity(
    core: ov.Core, ov_int8: ov.Model, inputs: list[np.ndarray], p32: np.ndarray, f32: np.ndarray, weights: np.ndarray
) -> dict[str, Any]:
    """INT8 vs FP32 figures, as INT8 runs in the app (default CPU precision, bf16 where the
    CPU has it) and at f32 precision; the gate reads the worse of the two."""
    runs: dict[str, dict[str, float]] = {}
    for label, hint in (("default", None), ("f32", "f32")):
        p8, f8 = _run_all(_compile(core, ov_int8, hint), inputs)
        delta = np.abs(p8 - p32)
        cos = np.sum(f8 * f32, axis=(1, 2, 3)) / (
            np.linalg.norm(f8.reshape(len(f8), -1), axis=1) * np.linalg.norm(f32.reshape(len(f32), -1), axis=1) + 1e-12
        )
        runs[label] = {
            "mean_abs_dp": float(delta.mean()),
            "max_abs_dp": float(delta.max()),
            "features_cosine_min": float(cos.min()),
            "cam_peak_agreement": _cam_peak_agreement(f8, f32, weights),
        }
    return {
        "images": len(inputs),
        "reference": "OpenVINO FP32 IR on CPU at f32 inference precision",
        "mean_abs_dp": max(r["mean_abs_dp"] for r in runs.values()),
        "max_abs_dp": max(r["max_abs_dp"] for r in runs.values()),
        "gate": {"mean_abs_dp": GATE_MEAN_ABS, "max_abs_dp": GATE_MAX_ABS},
        "int8_cpu_default_precision": runs["default"],
        "int8_cpu_f32_precision": runs["f32"],
    }


def _quantisation_recipes() -> list[tuple[str, dict[str, Any]]]:
    """Tried in order until one passes the gate: plain PTQ first, then a gentler one
    (asymmetric activations, classifier head left in FP32) for models that need it."""
    return [
        ("preset performance", {"preset": nncf.QuantizationPreset.PERFORMANCE}),
        (
            "preset mixed, classifier MatMul kept in FP32",
            {"preset": nncf.QuantizationPreset.MIXED, "ignored_scope": nncf.IgnoredScope(types=["MatMul"])},
        ),
    ]


def _quantise_with_gate(
    core: ov.Core, ov_fp32: ov.Model, inputs: list[np.ndarray], p32: np.ndarray, f32: np.ndarray, weights: np.ndarray
) -> tuple[ov.Model, dict[str, Any], str, float, float]:
    """INT8 model that passed the fidelity gate, its figures, recipe and timings; else raise."""
    calibration = inputs[::CALIBRATION_STRIDE]
    t_quant = t_gate = 0.0
    failure: FidelityGateError | None = None
    for recipe, options in _quantisation_recipes():
        t0 = time.perf_counter()
        ov_int8 = nncf.quantize(ov_fp32, nncf.Dataset(calibration), subset_size=len(calibration), **options)
        t1 = time.perf_counter()
        fidelity = _int8_fidelity(core, ov_int8, inputs, p32, f32, weights)
        t_quant += t1 - t0
        t_gate += time.perf_counter() - t1
        log.info(
            "INT8 (%s) over %d radiographs: mean |dp| %.4f, max |dp| %.4f",
            recipe, len(inputs), fidelity["mean_abs_dp"], fidelity["max_abs_dp"],
        )
        try:
            check_fidelity_gate(fidelity["mean_abs_dp"], fidelity["max_abs_dp"], len(inputs))
        except FidelityGateError as exc:
            failure = exc
            continue
        return ov_int8, fidelity, recipe, t_quant, t_gate
    assert failure is not None
    raise failure


def _build_key(
    checkpoint_sha: str | None,
    seed: int | None,
    images: list[Path],
    thresholds: Mapping[str, float],
    governance: Mapping[str, Any],
) -> str:
    """What the pack depends on; an identical key means the existing pack is current."""
    payload = {
        "governance": dict(governance),
        "builder": BUILDER_REVISION,
        "checkpoint": checkpoint_sha,
        "seed": seed,
        "images": [(p.name, p.stat().st_size) for p in images],
        "thresholds": dict(thresholds),
        "preprocessing": DEFAULT_PREPROCESSING,
        "versions": [torch.__version__, ov.__version__, nncf.__version__],
    }
    return hashlib.sha256(json.dumps(payload, sort_keys=True).encode()).hexdigest()


def _pack_key(
    images: list[Path],
    checkpoint: Path | None,
    seed: int,
    thresholds: Mapping[str, float],
    licence: str | None,
    validated: bool,
) -> str:
    checkpoint_sha = sha256_file(Path(checkpoint)) if checkpoint is not None else None
    return _build_key(
        checkpoint_sha, None if checkpoint else seed, images, thresholds, {"validated": validated, "licence": licence}
    )


def _full_thresholds(thresholds: Mapping[str, float] | None) -> dict[str, float]:
    return {label: float((thresholds or {}).get(label, DEFAULT_THRESHOLD)) for label in LABELS}


def pack_is_current(out_dir: Path, shared_dir: Path, *, checkpoint: Path | None = None, seed: int = 0) -> bool:
    """Whether ``out_dir/chexnet`` is a verified pack built from these inputs (default thresholds,
    licence and governance, as ``firstlook build-models`` builds it)."""
    key = _pack_key(reference_images(Path(shared_dir)), checkpoint, seed, _full_thresholds(None), None, False)
    return _existing_pack_is_current(Path(out_dir) / PACK_NAME, key)


def cache_key_inputs(shared_dir: Path, environment: Mapping[str, str], *, checkpoint: Path | None = None,
                     seed: int = 0) -> KeyInputs:
    """Everything a default build (as ``firstlook build-models`` runs it) depends on, for the build cache."""
    files: dict[str, Path] = {f"images/{p.name}": p for p in reference_images(Path(shared_dir))}
    if checkpoint is not None:
        files["checkpoint"] = Path(checkpoint)
    params = {
        "pack_version": PACK_VERSION,
        "builder_revision": BUILDER_REVISION,
        "seed": None if checkpoint is not None else seed,
        "thresholds": _full_thresholds(None),
        "licence": None,
        "validated": False,
        "preprocessing": dict(DEFAULT_PREPROCESSING),
        "gate": [GATE_MEAN_ABS, GATE_MAX_ABS, CONVERSION_TOLERANCE],
        "calibration_stride": CALIBRATION_STRIDE,
    }
    return KeyInputs(pack=PACK_NAME, files=files, params=params, environment=environment)


def _existing_pack_is_current(pack_dir: Path, key: str) -> bool:
    if not (pack_dir / MANIFEST).is_file():
        return False
    try:
        pack = load_pack(pack_dir, verify=True)
    except PackError as exc:
        log.info("existing CheXNet pack will be rebuilt: %s", exc)
        return False
    return pack.manifest.get("built", {}).get("key") == key


def build_chexnet_pack(
    out_dir: Path,
    shared_dir: Path,
    *,
    checkpoint: Path | None = None,
    seed: int = 0,
    force: bool = False,
    thresholds: Mapping[str, float] | None = None,
    licence: str | None = None,
    validated: bool = False,
) -> Path:
    """Write ``out_dir/chexnet`` (fp32/, int8/, cam_weights.npy, manifest.json); return its path.

    Idempotent: a verified pack built from the same inputs is kept unless ``force``.
    ``validated=True`` is only allowed with a checkpoint and is a governance decision
    taken outside this builder (a local clinical validation), never a default.
    Raises ``CheckpointError`` for unusable checkpoints and ``FidelityGateError`` if INT8
    is not within mean |dp| <= 0.01 and max |dp| <= 0.05 of FP32.
    """
    started = time.perf_counter()
    out_dir = Path(out_dir)
    shared_dir = Path(shared_dir)
    pack_dir = out_dir / PACK_NAME
    if validated and checkpoint is None:
        raise ValueError("a seeded random initialisation can never be marked validated")
    thresholds = _full_thresholds(thresholds)
    images = reference_images(shared_dir)

    key = _pack_key(images, checkpoint, seed, thresholds, licence, validated)
    if not force and _existing_pack_is_current(pack_dir, key):
        log.info("CheXNet pack in %s is up to date", pack_dir)
        return pack_dir

    source = load_checkpoint(Path(checkpoint)) if checkpoint is not None else random_model(seed)
    log.info("CheXNet weights: %s", source.layout)

    ov_fp32 = export_openvino(source.model)
    t_export = time.perf_counter() - started

    t0 = time.perf_counter()
    inputs = [to_model_input(load_png(p), DEFAULT_PREPROCESSING) for p in images]
    t_prep = time.perf_counter() - t0

    core = ov.Core()
    fp32_ref = _compile(core, ov_fp32, "f32")

    # Conversion check: the IR must compute what the torch model computes.
    with torch.no_grad():
        torch_probs = ChexnetExportWrapper(source.model)(torch.from_numpy(np.concatenate(inputs[:4])))[0].numpy()
    p32, f32 = _run_all(fp32_ref, inputs)
    conversion_err = float(np.abs(torch_probs - p32[:4]).max())
    if conversion_err > CONVERSION_TOLERANCE:
        raise PackError(PACK_NAME, f"OpenVINO FP32 disagrees with torch (max |dp| {conversion_err:.2e})")

    weights = source.model.classifier.weight.detach().numpy().astype(np.float32)
    ov_int8, fidelity, recipe, t_quant, t_gate = _quantise_with_gate(core, ov_fp32, inputs, p32, f32, weights)
    fidelity["torch_vs_fp32_max_abs_dp"] = conversion_err

    out_dir.mkdir(parents=True, exist_ok=True)
    staging = out_dir / f".{PACK_NAME}.building-{os.getpid()}"
    if staging.exists():
        shutil.rmtree(staging)
    (staging / "fp32").mkdir(parents=True)
    (staging / "int8").mkdir(parents=True)
    ov.save_model(ov_fp32, staging / "fp32" / "model.xml", compress_to_fp16=False)
    ov.save_model(ov_int8, staging / "int8" / "model.xml", compress_to_fp16=False)
    np.save(staging / CAM_WEIGHTS_FILE, weights)

    if source.layout == "seeded-random-init":
        source_info = {
            "checkpoint": "seeded-random-init",
            "sha256": None,
            "seed": seed,
            "layout": source.layout,
            "licence": licence or "not applicable: random weights, no third-party model",
        }
        note = RANDOM_INIT_NOTE
    else:
        assert source.path is not None
        source_info = {
            "checkpoint": source.path.name,
            "sha256": source.sha256,
            "seed": None,
            "layout": source.layout,
            "licence": licence or "unknown: check the terms under which the checkpoint was published",
        }
        note = (
            "Trained checkpoint converted by FirstLook and marked validated by the operator."
            if validated
            else f"Converted from checkpoint {source.path.name}; not validated on local data: NOT for diagnosis."
        )
    calib_names = [p.name for p in images[::CALIBRATION_STRIDE]]
    manifest: dict[str, Any] = {
        "schema": 1,
        "name": PACK_NAME,
        "version": PACK_VERSION,
        "task": "cxr-classification",
        "validated": bool(validated),
        "validation_note": note,
        "source": source_info,
        "members": [{"name": "model", "int8": "int8/model.xml", "fp32": "fp32/model.xml"}],
        "input": {"name": INPUT_NAME, "shape": [1, 3, 224, 224], "layout": "NCHW", "dtype": "f32"},
        "preprocessing": dict(DEFAULT_PREPROCESSING),
        "outputs": {
            "probabilities": PROBS_NAME,
            "features": FEATURES_NAME,
            "features_shape": [1, FEATURE_CHANNELS, 7, 7],
        },
        "cam": {
            "weights": CAM_WEIGHTS_FILE,
            "weights_shape": [NUM_CLASSES, FEATURE_CHANNELS],
            "method": "CheXNet CAM: sum_k w_ck F_k over the ReLU(norm5) feature map, bilinear to image size",
            "normalisation": "per finding min..max of the 7x7 map -> 0..255",
        },
        "labels": list(LABELS),
        "thresholds": thresholds,
        "thresholds_note": "placeholder operating points (0.5) unless given; set them from a local validation study",
        "triage": TRIAGE_RULES,
        "quantisation": {
            "method": f"NNCF post-training quantisation (nncf.quantize, {recipe}, fast bias correction) "
            "of the OpenVINO FP32 IR; INT8 weights and activations",
            "recipe": recipe,
            "calibration": f"{len(calib_names)} NIH ChestX-ray14 frontal radiographs (every {CALIBRATION_STRIDE}nd of "
            f"the {len(images)} in shared data/cxr/images, sorted by name), preprocessed as at run time",
            "calibration_files": calib_names,
        },
        "fidelity": fidelity,
        "built": {
            "at": datetime.now(timezone.utc).isoformat(timespec="seconds"),
            "torch": torch.__version__,
            "openvino": ov.__version__,
            "nncf": nncf.__version__,
            "key": key,
            "seconds": {
                "export": round(t_export, 1),
                "preprocess": round(t_prep, 1),
                "quantise": round(t_quant, 1),
                "gate": round(t_gate, 1),
                "total": round(time.perf_counter() - started, 1),
            },
        },
    }
    write_manifest(staging, manifest)

    # Swap in the finished pack so a reader never sees a half-written one.
    old = out_dir / f".{PACK_NAME}.old-{os.getpid()}"
    if pack_dir.exists():
        pack_dir.rename(old)
    staging.rename(pack_dir)
    if old.exists():
        shutil.rmtree(old)
    log.info("CheXNet pack written to %s in %.1f s", pack_dir, time.perf_counter() - started)
    return pack_dir
