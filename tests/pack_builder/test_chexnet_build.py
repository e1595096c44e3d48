"""CheXNet pack builder: checkpoint layouts, OpenVINO conversion, manifest and INT8 gate."""

from __future__ import annotations

import json
import shutil
import time
from collections import OrderedDict
from pathlib import Path

import numpy as np
import openvino as ov
import pytest
import torch

from inference.pack_builder.chexnet_build import (
    LABELS,
    CheckpointError,
    FidelityGateError,
    build_chexnet_pack,
    check_fidelity_gate,
    export_openvino,
    load_checkpoint,
    random_model,
)
from inference.pack_builder.densenet import ChexnetExportWrapper, DenseNet, densenet121
from inference.cxr_input import load_png, to_model_input
from inference.packs import load_pack

README_ORDER = [
    "Atelectasis", "Cardiomegaly", "Effusion", "Infiltration", "Mass", "Nodule", "Pneumonia",
    "Pneumothorax", "Consolidation", "Edema", "Emphysema", "Fibrosis", "Pleural_Thickening", "Hernia",
]


@pytest.fixture(scope="module")
def source_model() -> DenseNet:
    """A model whose BatchNorm statistics are not the defaults, so a missed key shows."""
    torch.manual_seed(1234)
    net = densenet121(14)
    with torch.no_grad():
        for module in net.modules():
            if isinstance(module, torch.nn.BatchNorm2d):
                module.running_mean.uniform_(-0.1, 0.1)
                module.running_var.uniform_(0.5, 1.5)
                module.weight.uniform_(0.5, 1.5)
                module.bias.uniform_(-0.1, 0.1)
        net.classifier.bias.uniform_(-1, 1)
    return net.eval()


@pytest.fixture(scope="module")
def probe() -> torch.Tensor:
    return torch.randn(2, 3, 224, 224, generator=torch.Generator().manual_seed(7))


def _arnoweng_state(net: DenseNet) -> OrderedDict[str, torch.Tensor]:
    """arnoweng/CheXNet layout: DataParallel + 'densenet121' attribute + pre-0.4 names, no BN counters."""
    out: OrderedDict[str, torch.Tensor] = OrderedDict()
    for key, value in net.state_dict().items():
        if key.endswith("num_batches_tracked"):
            continue
        for old, new in (("norm1", "norm.1"), ("relu1", "relu.1"), ("conv1", "conv.1"),
                         ("norm2", "norm.2"), ("relu2", "relu.2"), ("conv2", "conv.2")):
            key = key.replace(f".{old}.", f".{new}.")
        if key.startswith("classifier."):
            key = "classifier.0." + key[len("classifier."):]
        out["module.densenet121." + key] = value.clone()
    return out


def _outputs(net: DenseNet, x: torch.Tensor) -> torch.Tensor:
    with torch.no_grad():
        return net(x)


def test_arnoweng_checkpoint_loads_to_identical_outputs(tmp_path: Path, source_model: DenseNet,
                                                        probe: torch.Tensor) -> None:
    state = _arnoweng_state(source_model)
    assert "module.densenet121.features.denseblock1.denselayer1.norm.1.weight" in state
    assert "module.densenet121.classifier.0.weight" in state
    path = tmp_path / "model.pth.tar"
    torch.save({"epoch": 7, "arch": "DenseNet121", "state_dict": state}, path)
    loaded = load_checkpoint(path)
    assert loaded.layout == "arnoweng"
    assert loaded.sha256 is not None and len(loaded.sha256) == 64
    assert torch.equal(_outputs(loaded.model, probe), _outputs(source_model, probe))


@pytest.mark.parametrize("wrapping", ["plain", "state_dict", "module_prefix"])
def test_torchvision_checkpoint_loads_to_identical_outputs(tmp_path: Path, source_model: DenseNet,
                                                           probe: torch.Tensor, wrapping: str) -> None:
    state = source_model.state_dict()
    payload: object = state
    if wrapping == "state_dict":
        payload = {"state_dict": state, "epoch": 3}
    elif wrapping == "module_prefix":
        payload = OrderedDict(("module." + k, v) for k, v in state.items())
    path = tmp_path / f"{wrapping}.pth"
    torch.save(payload, path)
    loaded = load_checkpoint(path)
    assert loaded.layout == "torchvision"
    assert torch.equal(_outputs(loaded.model, probe), _outputs(source_model, probe))


def test_unknown_layout_is_a_clear_error(tmp_path: Path, source_model: DenseNet) -> None:
    path = tmp_path / "other.pt"
    torch.save({"backbone." + k: v for k, v in source_model.state_dict().items()}, path)
    with pytest.raises(CheckpointError, match="unknown checkpoint layout"):
        load_checkpoint(path)


def test_imagenet_head_is_refused(tmp_path: Path) -> None:
    path = tmp_path / "imagenet.pth"
    torch.save(densenet121(1000).state_dict(), path)
    with pytest.raises(CheckpointError, match="1024->14"):
        load_checkpoint(path)


def test_missing_weights_are_refused(tmp_path: Path, source_model: DenseNet) -> None:
    state = source_model.state_dict()
    del state["features.denseblock2.denselayer3.conv1.weight"]
    path = tmp_path / "partial.pth"
    torch.save(state, path)
    with pytest.raises(CheckpointError, match="does not match DenseNet-121"):
        load_checkpoint(path)


def test_openvino_fp32_agrees_with_torch(source_model: DenseNet, cxr_dir: Path) -> None:
    ov_model = export_openvino(source_model)
    assert [o.get_any_name() for o in ov_model.outputs] == ["probs", "features"]
    compiled = ov.Core().compile_model(ov_model, "CPU", {"INFERENCE_PRECISION_HINT": "f32"})
    x = to_model_input(load_png(cxr_dir / "images" / "00000129_000.png"))
    result = compiled(x)
    with torch.no_grad():
        probs, feats = ChexnetExportWrapper(source_model)(torch.from_numpy(x))
    np.testing.assert_allclose(result[0], probs.numpy(), atol=1e-5)
    np.testing.assert_allclose(result[1], feats.numpy(), atol=1e-3, rtol=1e-3)


def test_fidelity_gate_limits() -> None:
    check_fidelity_gate(0.01, 0.05, 120)  # at the limits: accepted
    with pytest.raises(FidelityGateError, match="mean"):
        check_fidelity_gate(0.0101, 0.02, 120)
    with pytest.raises(FidelityGateError, match="INT8 pack not written"):
        check_fidelity_gate(0.001, 0.051, 120)
    with pytest.raises(FidelityGateError):
        check_fidelity_gate(float("nan"), 0.0, 120)


def test_seeded_random_pack_manifest(packs_dir: Path) -> None:
    pack = load_pack(packs_dir / "chexnet", verify=True)
    m = pack.manifest
    assert pack.validated is False and m["validated"] is False
    assert "random" in m["validation_note"] and "NOT for diagnosis" in m["validation_note"]
    assert m["source"]["checkpoint"] == "seeded-random-init"
    assert m["source"]["sha256"] is None and isinstance(m["source"]["seed"], int)
    assert m["labels"] == README_ORDER == list(LABELS)
    assert set(m["thresholds"]) == set(README_ORDER)
    rules = m["triage"]["rules"]
    assert rules[0] == {"priority": "critical", "any_of": ["Pneumothorax"]}
    assert set(rules[1]["any_of"]) == {"Effusion", "Pneumonia", "Consolidation", "Edema", "Mass", "Cardiomegaly"}
    assert m["triage"]["default"] == "routine"
    for key in ("schema", "name", "version", "task", "source", "members", "files", "input", "preprocessing",
                "outputs", "labels", "thresholds", "triage", "quantisation", "fidelity", "built"):
        assert key in m, key
    fid = m["fidelity"]
    assert fid["images"] == 120
    assert fid["mean_abs_dp"] <= 0.01 and fid["max_abs_dp"] <= 0.05
    assert "nncf" in m["quantisation"]["method"].lower() and m["quantisation"]["calibration"]
    assert {"int8/model.xml", "int8/model.bin", "fp32/model.xml", "fp32/model.bin", m["cam"]["weights"]} <= set(m["files"])
    weights = np.load(pack.file(m["cam"]["weights"]))
    assert weights.shape == (14, 1024) and weights.dtype == np.float32


def test_pack_fp32_is_the_seeded_torch_model(packs_dir: Path, cxr_dir: Path) -> None:
    """The pack really is torchvision-initialised DenseNet-121 with the recorded seed."""
    pack = load_pack(packs_dir / "chexnet", verify=False)
    seed = pack.manifest["source"]["seed"]
    model = random_model(seed).model
    x = to_model_input(load_png(cxr_dir / "images" / "00000100_000.png"))  # one of the RGBA files
    compiled = ov.Core().compile_model(str(pack.member_xml("model", "fp32")), "CPU", {"INFERENCE_PRECISION_HINT": "f32"})
    with torch.no_grad():
        expected = ChexnetExportWrapper(model)(torch.from_numpy(x))[0].numpy()
    np.testing.assert_allclose(compiled(x)["probs"], expected, atol=1e-5)
    np.testing.assert_allclose(np.load(pack.file("cam_weights.npy")), model.classifier.weight.detach().numpy())


def test_build_is_idempotent(packs_dir: Path, shared_dir: Path, tmp_path: Path) -> None:
    shutil.copytree(packs_dir / "chexnet", tmp_path / "chexnet")
    manifest = tmp_path / "chexnet" / "manifest.json"
    before = manifest.read_bytes()
    start = time.perf_counter()
    path = build_chexnet_pack(tmp_path, shared_dir, seed=json.loads(before)["source"]["seed"])
    assert path == tmp_path / "chexnet"
    assert time.perf_counter() - start < 10
    assert manifest.read_bytes() == before


def test_random_init_can_never_be_validated(tmp_path: Path, shared_dir: Path) -> None:
    with pytest.raises(ValueError, match="never be marked validated"):
        build_chexnet_pack(tmp_path, shared_dir, validated=True)
