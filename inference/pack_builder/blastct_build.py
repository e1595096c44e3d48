"""Build the BLAST-CT model pack: 12 DeepMedic members -> OpenVINO IR (FP32 + NNCF INT8), gated.

Why a gate: reduced precision can silently move small lesion volumes, which would change
triage. A runtime precision is accepted only if, for the full 12-member ensemble on the real
head-CT series, it agrees with FP32 (Dice >= 0.95 for every class with >= 1 mL in FP32, every
class volume within max(0.5 mL, 5 %)). INT8 is tried first; if it fails, the INT8 IRs are NOT
written and bf16 execution of the FP32 IR is tried; if nothing passes, ``FidelityError`` is
raised and no pack is written.

Why not every convolution is INT8 (recipe 4): quantising the whole network (NNCF defaults) fails
the gate on the real series, oedema Dice 0.79, with the INT8 ensemble systematically moving
the oedema boundary. Quantising one group of convolutions at a time (3 members, the lesion
tiles) showed where the error comes from: the first three full-resolution blocks (mean
|dp| 2.5-5.4e-4), the two sub-sampled pathways (2.4e-4), and the requantisation of the
residual stream that NNCF adds on every residual ``Add`` (and on the upsampling/concat); the
later full-resolution blocks and the first two head blocks are 10-100x less sensitive
(0.06-0.7e-4). Those later blocks are also where the time goes (about 80 % of the network's
multiply-adds), so ``INT8_CONVOLUTIONS`` lists exactly them; everything else stays in floating
point (bf16 where the CPU has it natively). On the lesion tiles of the real series this gives
an ensemble oedema Dice of 0.96 against FP32, at 1.5x the speed of bf16 (1.40 vs 2.11 s per
170^3 patch on this 2-core AVX512-VNNI CPU; all-INT8 1.20 s).

The FP32 reference ensemble costs ~15-30 min on 2 cores, so ensemble labels are cached in
``build/cache`` keyed by the IRs' weights and topology, the series and the OpenVINO version
(conversion and quantisation are deterministic): a rebuild or forced rebuild then takes ~5 min.

IRs are saved with a static input of 170^3 (90^3 output tiles, see inference/blastct.py);
the graph only contains shape-independent slices, so tests can reshape it to 110^3 to
reproduce the reference 30^3 tiling. Quantisation statistics are gathered on 110^3 patches of
the real series that contain head tissue (cheaper than 170^3, same ranges).
"""

from __future__ import annotations

import datetime
import hashlib
import json
import logging
import re
import shutil
import time
import warnings
from pathlib import Path
from typing import Any, Mapping

import nncf
import numpy as np
import openvino as ov
import torch

from inference.blastct import CELL, CLASSES, MARGIN, PRECISIONS, WINDOW_HU, BlastCt, normalise
from inference.pack_builder.blastct_net import PARAMETER_COUNT, load_blastct, parameter_count
from inference.pack_builder.build_key import KeyInputs
from inference.ct_volume import CtVolume, load_ct_volume
from inference.packs import MANIFEST, ModelPack, PackMember, load_pack, sha256_file, write_manifest

log = logging.getLogger(__name__)

PACK_NAME = "blast-ct"
VERSION = "1.0.0"
RECIPE = 5  # bump when the recipe or what the manifest records changes (forces a rebuild); 5: fidelity.runtime_labels
LABELS_KEY_VERSION = 1  # bump only if the runtime tiling changes results
# Runtime precisions tried in order; the first that passes the gate is used by the pack.
# "bf16" runs the FP32 IR with the bf16 inference-precision hint (native on AVX512_BF16/AMX CPUs).
CANDIDATES = ("int8", "bf16")
TILE = 90
PATCH = TILE + 2 * MARGIN
CALIB_PATCH = 110
CALIB_SAMPLES = 12
N_MEMBERS = 12
SERIES = "dcm_qa_ct_GE_HiSpeed_head"
DICE_MIN = 0.95
DICE_MIN_ML = 1.0
VOLUME_ABS_ML = 0.5
VOLUME_REL = 0.05
TRIAGE = {
    "rules": [
        {"priority": "critical", "any_of": ["IPH", "EAH", "IVH"], "thresholds": {"IPH": 1.0, "EAH": 1.0, "IVH": 1.0}},
        {"priority": "urgent", "any_of": ["IPH", "EAH", "IVH", "oedema"]},
    ],
    "default": "routine",
}
# mL per class for the "urgent" rule (any haemorrhage >= 0.1 mL, oedema >= 5 mL); the stricter
# "critical" rule carries its own thresholds (1 mL) inside the rule.
THRESHOLDS_ML = {"IPH": 0.1, "EAH": 0.1, "oedema": 5.0, "IVH": 0.1}
# Convolutions quantised to INT8 (names as in the converted IR, MODEL_CARD 3.1 module paths):
# full-resolution blocks 4-8 and head blocks 0-1. See the module docstring for why only these.
INT8_CONVOLUTIONS: tuple[str, ...] = tuple(
    [f"path(1, 1, 1)2.path.{k}.conv/" for k in range(4, 9)] + ["fully_connected.0.conv/", "fully_connected.1.conv/"]
)
# Never quantised: the residual stream, the upsampled coarse pathways and their concatenation.
FLOAT_OPERATION_TYPES = ("Add", "Interpolate", "Concat")


class FidelityError(RuntimeError):
    """INT8 ensemble does not match FP32 closely enough on the real series; no pack written."""


def _member_names() -> list[str]:
    return [f"model_{i:02d}" for i in range(1, N_MEMBERS + 1)]


def _check_sources(model_dir: Path) -> dict[str, str]:
    """sha256 of every .pt, checked against SHA256SUMS shipped with the weights."""
    sums: dict[str, str] = {}
    sums_file = model_dir / "SHA256SUMS"
    if sums_file.is_file():
        for line in sums_file.read_text().splitlines():
            parts = line.split()
            if len(parts) == 2:
                sums[parts[1].lstrip("*")] = parts[0]
    shas: dict[str, str] = {}
    for name in _member_names():
        path = model_dir / f"{name}.pt"
        if not path.is_file():
            raise FileNotFoundError(f"BLAST-CT weights missing: {path}")
        sha = sha256_file(path)
        if path.name in sums and sums[path.name] != sha:
            raise ValueError(f"{path} does not match SHA256SUMS")
        shas[path.name] = sha
    return shas


def _up_to_date(pack_dir: Path, shas: dict[str, str]) -> bool:
    if not (pack_dir / MANIFEST).is_file():
        return False
    try:
        pack = load_pack(pack_dir, verify=True)
    except Exception as exc:  # corrupt or altered: rebuild
        log.warning("existing BLAST-CT pack unusable, rebuilding: %s", exc)
        return False
    m = pack.manifest
    return (
        m.get("source", {}).get("sha256") == shas
        and m.get("built", {}).get("recipe") == RECIPE
        and len(pack.members) == N_MEMBERS
    )


def _series_files(shared_dir: Path) -> list[Path]:
    return sorted((Path(shared_dir) / "data" / "headct" / SERIES / "dicom").glob("*.dcm"))


def pack_is_current(out_dir: Path, shared_dir: Path) -> bool:
    """Whether ``out_dir/blast-ct`` is a verified pack of these weights and this recipe."""
    shas = _check_sources(Path(shared_dir) / "models" / "blast-ct")
    return _up_to_date(Path(out_dir) / PACK_NAME, shas)


def cache_key_inputs(shared_dir: Path, environment: Mapping[str, str]) -> KeyInputs:
    """Everything the build depends on (weights, the reference series, the recipe), for the build cache."""
    model_dir = Path(shared_dir) / "models" / "blast-ct"
    _check_sources(model_dir)  # the same errors as the build for missing or altered weights
    files: dict[str, Path] = {f"weights/{name}.pt": model_dir / f"{name}.pt" for name in _member_names()}
    if (model_dir / "SHA256SUMS").is_file():
        files["weights/SHA256SUMS"] = model_dir / "SHA256SUMS"
    series = _series_files(shared_dir)
    if not series:
        raise FileNotFoundError(f"no reference head-CT series files for {SERIES} in {shared_dir}")
    files.update({f"series/{p.name}": p for p in series})
    params = {
        "version": VERSION,
        "recipe": RECIPE,
        "labels_key_version": LABELS_KEY_VERSION,
        "candidates": list(CANDIDATES),
        "tile": TILE,
        "calibration": [CALIB_PATCH, CALIB_SAMPLES],
        "members": N_MEMBERS,
        "series": SERIES,
        "gate": [DICE_MIN, DICE_MIN_ML, VOLUME_ABS_ML, VOLUME_REL],
        "int8_convolutions": list(INT8_CONVOLUTIONS),
        "float_operation_types": list(FLOAT_OPERATION_TYPES),
        "thresholds_ml": THRESHOLDS_ML,
        "triage": TRIAGE,
    }
    return KeyInputs(pack=PACK_NAME, files=files, params=params, environment=environment)


def calibration_patches(volume: CtVolume, n: int = CALIB_SAMPLES, seed: int = 0) -> list[np.ndarray]:
    """110^3 normalised patches on the reference tile grid that contain head tissue (>= 20 % in window)."""
    x = normalise(volume.hu)
    in_window = (volume.hu > WINDOW_HU[0]) & (volume.hu < WINDOW_HU[1])
    candidates = []
    out = CALIB_PATCH - 2 * MARGIN
    for start in np.ndindex(*[max(1, s // CELL) for s in volume.shape]):
        s0 = [a * CELL for a in start]
        box = tuple(slice(max(a - MARGIN, 0), a + out + MARGIN) for a in s0)
        if in_window[box].mean() >= 0.2:
            candidates.append(s0)
    if not candidates:
        raise ValueError("no calibration patch with head tissue in the series")
    rng = np.random.default_rng(seed)
    picks = rng.choice(len(candidates), size=min(n, len(candidates)), replace=False)
    patches = []
    for i in sorted(picks):
        s0 = candidates[i]
        idx = [np.clip(np.arange(a - MARGIN, a + out + MARGIN), 0, dim - 1) for a, dim in zip(s0, x.shape)]
        patches.append(np.ascontiguousarray(x[np.ix_(*idx)])[None, None])
    return patches


def _float_scope(model: ov.Model) -> nncf.IgnoredScope:
    """Everything but ``INT8_CONVOLUTIONS`` stays floating point (see the module docstring)."""
    convs = [op.get_friendly_name() for op in model.get_ordered_ops() if op.get_type_name() == "Convolution"]
    int8 = [c for c in convs if any(k in c for k in INT8_CONVOLUTIONS)]
    if len(int8) != len(INT8_CONVOLUTIONS):
        raise ValueError(f"expected {len(INT8_CONVOLUTIONS)} INT8 convolutions, found {len(int8)}: {int8}")
    return nncf.IgnoredScope(names=[c for c in convs if c not in int8], types=list(FLOAT_OPERATION_TYPES))


def _convert_member(pt: Path, fp32_xml: Path, int8_xml: Path, calib: list[np.ndarray]) -> dict[str, float]:
    t0 = time.perf_counter()
    net = load_blastct(pt)
    if parameter_count(net) != PARAMETER_COUNT:
        raise ValueError(f"{pt.name}: {parameter_count(net)} parameters, expected {PARAMETER_COUNT}")
    with torch.no_grad(), warnings.catch_warnings():
        # Shapes are static at conversion; the tracer's "converting a tensor to a Python int" is expected.
        warnings.simplefilter("ignore", torch.jit.TracerWarning)
        model = ov.convert_model(net, example_input=torch.zeros(1, 1, CALIB_PATCH, CALIB_PATCH, CALIB_PATCH),
                                 input=[ov.PartialShape([1, 1, CALIB_PATCH, CALIB_PATCH, CALIB_PATCH])])
    model.outputs[0].get_tensor().set_names({"logits"})
    model.inputs[0].get_tensor().set_names({"image"})
    t1 = time.perf_counter()
    quantised = nncf.quantize(
        model,
        nncf.Dataset(calib),
        preset=nncf.QuantizationPreset.MIXED,
        subset_size=len(calib),
        ignored_scope=_float_scope(model),
    )
    t2 = time.perf_counter()
    for m, xml in ((model, fp32_xml), (quantised, int8_xml)):
        m.reshape({m.inputs[0]: [1, 1, PATCH, PATCH, PATCH]})
        xml.parent.mkdir(parents=True, exist_ok=True)
        ov.save_model(m, str(xml), compress_to_fp16=False)
    return {"convert": t1 - t0, "quantise": t2 - t1}


def _ensemble(pack: ModelPack, volume: CtVolume, precision: str) -> tuple[np.ndarray, float]:
    runner = BlastCt(pack, None, "CPU", precision=precision, tile=TILE, check_device=False)
    t0 = time.perf_counter()
    out = runner.analyse(volume)
    return out.labels, time.perf_counter() - t0


def ir_fingerprint(xml: Path) -> str:
    """SHA-256 of an IR's weights and topology, ignoring operation names.

    Why: OpenVINO names unnamed operations from process-wide counters ("Model203",
    "Constant_28031"), so the same conversion writes different XML bytes depending on what the
    process built before (the CheXNet pack, or NNCF's quantisation of the previous member).
    Hashing the XML bytes made the reference cache miss for identical networks.
    """
    h = hashlib.sha256(re.sub(rb' (?:output_)?names?="[^"]*"', b"", xml.read_bytes()))
    h.update(sha256_file(xml.with_suffix(".bin")).encode())
    return h.hexdigest()


def _labels_key(work: Path, members: list[dict[str, str]], series_files: list[Path], precision: str) -> str:
    """What an ensemble's labels depend on: the IRs, series bytes, OpenVINO, tiling, precision."""
    h = hashlib.sha256()
    ir = "fp32" if precision in ("fp32", "bf16") else precision
    for m in members:
        h.update(ir_fingerprint(work / m[ir]).encode())
    for f in series_files:
        h.update(sha256_file(f).encode())
    h.update(f"{ov.get_version()}|tile={TILE}|recipe={LABELS_KEY_VERSION}|{precision}".encode())
    if precision == "int8":  # the hint for INT8's floating-point part (PRECISIONS in inference/blastct.py)
        h.update(b"|float-part=" + PRECISIONS["int8"][1].encode())
    return h.hexdigest()[:24]


def _cached_ensemble(pack: ModelPack, volume: CtVolume, precision: str, cache: Path | None,
                     key: str) -> tuple[np.ndarray, float, bool]:
    """Ensemble labels on the real series, cached under build/ (the FP32 run costs ~30 min on 2 cores)."""
    path = cache / f"blast-ct-{precision}-{key}.npz" if cache else None
    if path is not None and path.is_file():
        with np.load(path) as data:
            return data["labels"], float(data["seconds"]), True
    labels, seconds = _ensemble(pack, volume, precision)
    if path is not None:
        path.parent.mkdir(parents=True, exist_ok=True)
        tmp = path.with_suffix(".tmp.npz")
        np.savez_compressed(tmp, labels=labels, seconds=seconds)
        tmp.replace(path)
    return labels, seconds, False


def label_digest(labels: np.ndarray) -> dict[str, Any]:
    """What the runtime's native labels on the reference series were, on the machine that built the
    pack: a later run of the same pack there (locally or on a cluster) must give the same bytes."""
    labels = np.ascontiguousarray(labels, dtype=np.uint8)
    return {"sha256": hashlib.sha256(labels.tobytes()).hexdigest(), "shape": list(labels.shape),
            "labelled_voxels": int(np.count_nonzero(labels))}


def fidelity(volume: CtVolume, fp32_labels: np.ndarray, int8_labels: np.ndarray) -> dict[str, Any]:
    """Per-class Dice and volumes (native slices) of a candidate (INT8, bf16) vs FP32, and the verdict."""
    from inference.ct_volume import volumes_ml

    v32 = volumes_ml(fp32_labels, volume.native)
    v8 = volumes_ml(int8_labels, volume.native)
    w = volume.native.pixel_volume_ml()[:, None, None]
    classes: dict[str, Any] = {}
    failures: list[str] = []
    for c, name in enumerate(CLASSES, start=1):
        a, b = fp32_labels == c, int8_labels == c
        inter = float((w * (a & b)).sum())
        denom = float((w * a).sum() + (w * b).sum())
        dice = 1.0 if denom == 0 else 2.0 * inter / denom
        tol = max(VOLUME_ABS_ML, VOLUME_REL * float(v32[c]))
        gated = float(v32[c]) >= DICE_MIN_ML
        ok_dice = (not gated) or dice >= DICE_MIN
        ok_vol = abs(float(v8[c]) - float(v32[c])) <= tol
        classes[name] = {
            "fp32_ml": round(float(v32[c]), 3),
            "candidate_ml": round(float(v8[c]), 3),
            "dice": round(dice, 4),
            "dice_gated": gated,
            "volume_tolerance_ml": round(tol, 3),
            "pass": ok_dice and ok_vol,
        }
        if not ok_dice:
            failures.append(f"{name}: Dice {dice:.3f} < {DICE_MIN} at {float(v32[c]):.2f} mL")
        if not ok_vol:
            failures.append(f"{name}: {float(v8[c]):.2f} mL vs FP32 {float(v32[c]):.2f} mL (tolerance {tol:.2f} mL)")
    agreement = float((fp32_labels == int8_labels).mean())
    return {
        "series": SERIES,
        "space": "native slices (volumes weighted by each slice's extent along the normal)",
        "members": N_MEMBERS,
        "criteria": f"Dice >= {DICE_MIN} for classes >= {DICE_MIN_ML} mL in FP32; |dV| <= max({VOLUME_ABS_ML} mL, {VOLUME_REL:.0%})",
        "classes": classes,
        "pixel_agreement": round(agreement, 6),
        "passed": not failures,
        "failures": failures,
    }


def build_blastct_pack(out_dir: Path, shared_dir: Path, *, force: bool = False,
                       cache_dir: Path | None = None) -> Path:
    """Build (or keep, if up to date) ``out_dir/blast-ct``; raises FidelityError if INT8 drifts.

    ``cache_dir`` (default ``out_dir/../cache``) keeps the FP32 reference labels of the gate,
    keyed by the FP32 IR, series and OpenVINO version, so a forced rebuild skips that run.
    """
    out_dir, shared_dir = Path(out_dir), Path(shared_dir)
    pack_dir = out_dir / PACK_NAME
    model_dir = shared_dir / "models" / "blast-ct"
    shas = _check_sources(model_dir)
    if not force and _up_to_date(pack_dir, shas):
        log.info("BLAST-CT pack up to date: %s", pack_dir)
        return pack_dir

    t_start = time.perf_counter()
    torch.set_num_threads(max(1, torch.get_num_threads()))
    if cache_dir is None:
        cache_dir = out_dir.parent / "cache"
    series_files = _series_files(shared_dir)
    volume = load_ct_volume(series_files)
    calib = calibration_patches(volume)
    work = out_dir / f".{PACK_NAME}.building"
    shutil.rmtree(work, ignore_errors=True)
    work.mkdir(parents=True)
    seconds: dict[str, float] = {"convert": 0.0, "quantise": 0.0}
    members = []
    try:
        for name in _member_names():
            fp32_xml, int8_xml = work / "fp32" / f"{name}.xml", work / "int8" / f"{name}.xml"
            t = _convert_member(model_dir / f"{name}.pt", fp32_xml, int8_xml, calib)
            for k, v in t.items():
                seconds[k] += v
            members.append({"name": name, "int8": f"int8/{name}.xml", "fp32": f"fp32/{name}.xml"})
            log.info("BLAST-CT %s converted (%.1f s) and quantised (%.1f s)", name, t["convert"], t["quantise"])

        manifest: dict[str, Any] = {
            "schema": 1,
            "name": PACK_NAME,
            "version": VERSION,
            "task": "headct-segmentation",
            "validated": True,
            "validation_note": (
                "Trained BLAST-CT V1 weights (Monteiro et al., Lancet Digital Health 2020), converted "
                "unchanged; the upstream authors state the tool is NOT for clinical use. INT8 fidelity "
                "checked against FP32 on one real head CT without ground truth."
            ),
            "source": {
                "checkpoint": "model_01.pt ... model_12.pt (biomedia-mira/blast-ct @ 361e8c7)",
                "sha256": shas,
                "seed": None,
                "licence": "Apache-2.0",
                "repository": "https://github.com/biomedia-mira/blast-ct",
                "commit": "361e8c797fbcb276627a7941b39298bef563113b",
            },
            "members": members,
            "input": {
                "name": "image",
                "shape": [1, 1, PATCH, PATCH, PATCH],
                "patch": PATCH,
                "output_patch": TILE,
                "reference_patch": 110,
                "reference_output_patch": 30,
                "margin": MARGIN,
                "layout": "NCDHW",
                "reshapable": "input = output + 80 per axis, output a multiple of 30",
            },
            "preprocessing": {
                "grid": "axis-aligned LPS, axis 0 inferior->superior, 1 anterior->posterior, 2 right->left",
                "spacing_mm": [1.0, 1.0, 1.0],
                "interpolation": "linear in patient coordinates (tilt and variable spacing corrected)",
                "fill": "volume minimum",
                "window_hu": list(WINDOW_HU),
                "normalise": "(2*clip(hu) - L - U) / (U - L)",
                "patch_padding": "edge replication",
            },
            "outputs": {"logits": "logits", "ensemble": "sum of member softmax, argmax"},
            "labels": list(CLASSES),
            "label_values": {name: i for i, name in enumerate(CLASSES, start=1)},
            "thresholds": THRESHOLDS_ML,
            "threshold_unit": "mL",
            "triage": TRIAGE,
            "quantisation": {
                "method": "NNCF post-training quantisation (nncf.quantize on the OpenVINO model, preset MIXED), "
                          "mixed precision: INT8 for the convolutions listed in 'int8_convolutions', the "
                          "rest (first full-resolution blocks, sub-sampled pathways, last head block, "
                          "residual adds, upsampling, concat) in floating point",
                "int8_convolutions": [c.rstrip("/") for c in INT8_CONVOLUTIONS],
                "calibration": f"{len(calib)} patches of {CALIB_PATCH}^3 from the real series {SERIES} "
                               "(reference tile grid, >= 20 % voxels in the HU window), seed 0",
                "runtime_precision_hint": "bf16 for the non-quantised operations where the CPU has native "
                                          "bf16, f32 elsewhere",
            },
        }
        # Gate: full 12-member ensemble, FP32 vs INT8, on the real series.
        tmp_pack = ModelPack(
            name=PACK_NAME, version=VERSION, task="headct-segmentation", path=work, validated=True,
            manifest=manifest, members=tuple(PackMember(m["name"], {"int8": m["int8"], "fp32": m["fp32"]}) for m in members),
        )
        key = _labels_key(work, members, series_files, "fp32")
        fp32_labels, fp32_seconds, cached = _cached_ensemble(tmp_pack, volume, "fp32", cache_dir, key)
        seconds["fp32_ensemble"] = 0.0 if cached else fp32_seconds
        log.info("BLAST-CT FP32 reference ensemble: %.0f s%s", fp32_seconds, " (cached)" if cached else "")
        reports: dict[str, Any] = {}
        chosen = None
        for precision in CANDIDATES:
            key = _labels_key(work, members, series_files, precision)
            labels, secs, was_cached = _cached_ensemble(tmp_pack, volume, precision, cache_dir, key)
            seconds[f"{precision}_ensemble"] = 0.0 if was_cached else secs
            report = fidelity(volume, fp32_labels, labels)
            report["seconds"] = {"ensemble": round(secs, 1), "cached": was_cached}
            report["labels"] = label_digest(labels)
            reports[precision] = report
            log.info("BLAST-CT %s vs FP32 (%s): %s", precision, "pass" if report["passed"] else "FAIL",
                     json.dumps(report["classes"]))
            if report["passed"]:
                chosen = precision
                break
            log.warning("BLAST-CT %s refused by the fidelity gate: %s", precision, "; ".join(report["failures"]))
        if chosen is None:
            raise FidelityError("BLAST-CT pack refused, no runtime precision matches FP32 on the real series: "
                                + " | ".join(f"{p}: " + "; ".join(r["failures"]) for p, r in reports.items()))
        if chosen != "int8":
            # The INT8 IR failed the gate: it is not written into the pack. The runtime IR goes to
            # its own folder (a byte copy of the FP32 IR), so a bundle that drops the fp32/
            # reference folder still carries what runs.
            shutil.rmtree(work / "int8", ignore_errors=True)
            (work / chosen).mkdir()
            for m in members:
                m.pop("int8", None)
                for suffix in (".xml", ".bin"):
                    src = work / Path(m["fp32"]).with_suffix(suffix)
                    shutil.copy2(src, work / chosen / src.name)
                m[chosen] = f"{chosen}/{Path(m['fp32']).name}"
        manifest["runtime"] = {
            "precision": chosen,
            "ir": chosen,
            "inference_precision_hint": "bf16 where native, else f32",
        }
        manifest["quantisation"]["result"] = (
            "INT8 passed the fidelity gate and is used at run time" if chosen == "int8" else
            f"INT8 refused by the fidelity gate ({'; '.join(reports['int8']['failures'])}); "
            f"the pack runs the FP32 IR with the {chosen} inference-precision hint, which passed"
        )
        manifest["fidelity"] = {
            "chosen": chosen,
            "passed": True,
            "reference": {"precision": "fp32", "seconds": round(fp32_seconds, 1), "cached": cached},
            "criteria": reports[chosen]["criteria"],
            "members": N_MEMBERS,
            "series": SERIES,
            "classes": reports[chosen]["classes"],
            "runtime_labels": reports[chosen]["labels"],  # the chosen runtime's native labels on the series
            "candidates": reports,
        }
        seconds["total"] = time.perf_counter() - t_start
        manifest["built"] = {
            "at": datetime.datetime.now(datetime.timezone.utc).isoformat(timespec="seconds"),
            "torch": torch.__version__,
            "openvino": ov.get_version(),
            "nncf": nncf.__version__,
            "recipe": RECIPE,
            "seconds": {k: round(v, 1) for k, v in seconds.items()},
        }
        write_manifest(work, manifest)
        old = out_dir / f".{PACK_NAME}.old"
        shutil.rmtree(old, ignore_errors=True)
        if pack_dir.exists():
            pack_dir.rename(old)
        work.rename(pack_dir)
        shutil.rmtree(old, ignore_errors=True)
    except BaseException:
        shutil.rmtree(work, ignore_errors=True)
        raise
    log.info("BLAST-CT pack built in %.0f s: %s", seconds["total"], pack_dir)
    return pack_dir
