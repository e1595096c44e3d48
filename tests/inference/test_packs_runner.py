"""Model packs are verified at load, and the runner falls back to CPU when a device fails."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import openvino as ov
import pytest

from inference.errors import PackError
from inference.packs import discover_packs, load_pack, write_manifest
from inference.runner import CompiledModel, make_core


def _tiny_ir(path: Path) -> Path:
    """y = relu(x) * 2, a real IR written by OpenVINO itself."""
    x = ov.opset13.parameter([1, 4], np.float32, name="x")
    y = ov.opset13.multiply(ov.opset13.relu(x), ov.opset13.constant(np.float32(2.0)))
    y.output(0).get_tensor().set_names({"y"})
    model = ov.Model([y], [x], "tiny")
    path.parent.mkdir(parents=True, exist_ok=True)
    ov.save_model(model, str(path), compress_to_fp16=False)
    return path


def _pack(root: Path, name: str = "tiny", validated: bool = True) -> Path:
    pack = root / name
    _tiny_ir(pack / "int8" / "model.xml")
    _tiny_ir(pack / "fp32" / "model.xml")
    write_manifest(pack, {
        "name": name, "version": "1.0", "task": "test", "validated": validated,
        "members": [{"name": "model", "int8": "int8/model.xml", "fp32": "fp32/model.xml"}],
        "labels": ["a", "b", "c", "d"],
    })
    return pack


def test_valid_pack_loads_and_lists_hashes(tmp_path: Path) -> None:
    pack = load_pack(_pack(tmp_path))
    assert pack.name == "tiny" and pack.validated
    assert set(pack.manifest["files"]) == {"int8/model.xml", "int8/model.bin", "fp32/model.xml", "fp32/model.bin"}
    assert pack.member_xml("model", "int8") == tmp_path / "tiny" / "int8" / "model.xml"


@pytest.mark.parametrize("damage", ["truncate", "alter", "delete"])
def test_damaged_pack_is_refused_with_its_name(tmp_path: Path, damage: str) -> None:
    pack_dir = _pack(tmp_path, "chexnet")
    target = pack_dir / "int8" / "model.bin"
    if damage == "truncate":
        target.write_bytes(target.read_bytes()[:-3])
    elif damage == "alter":
        data = bytearray(target.read_bytes())
        data[0] ^= 0xFF
        target.write_bytes(bytes(data))
    else:
        target.unlink()
    with pytest.raises(PackError) as err:
        load_pack(pack_dir)
    assert "chexnet" in str(err.value) and "int8/model.bin" in str(err.value)


def test_manifest_pointing_outside_the_pack_is_refused(tmp_path: Path) -> None:
    pack_dir = _pack(tmp_path)
    (tmp_path / "evil.bin").write_bytes(b"x")
    manifest = json.loads((pack_dir / "manifest.json").read_text())
    manifest["files"]["../evil.bin"] = manifest["files"]["int8/model.bin"]
    (pack_dir / "manifest.json").write_text(json.dumps(manifest))
    with pytest.raises(PackError, match="outside the pack folder"):
        load_pack(pack_dir)


def test_one_bad_pack_does_not_hide_the_others(tmp_path: Path) -> None:
    _pack(tmp_path, "good")
    bad = _pack(tmp_path, "bad")
    (bad / "manifest.json").write_text("{not json")
    found = discover_packs(tmp_path)
    assert not isinstance(found["good"], PackError)
    assert isinstance(found["bad"], PackError)


def test_runner_infers_and_keeps_order_with_async_queue(tmp_path: Path) -> None:
    core = make_core(tmp_path / "cache")
    model = CompiledModel(core, _tiny_ir(tmp_path / "m.xml"))
    assert model.device == "CPU" and model.fallback_note is None
    x = np.array([[-1, 0, 1, 2]], np.float32)
    np.testing.assert_allclose(model.infer({0: x})["y"], [[0, 0, 2, 4]])
    batch = [np.full((1, 4), i, np.float32) for i in range(6)]
    outs = model.infer_many(batch)
    assert [float(o["y"][0, 0]) for o in outs] == [2.0 * i for i in range(6)]


def test_missing_gpu_falls_back_to_cpu_with_a_visible_note(tmp_path: Path) -> None:
    core = make_core(None)
    from inference.runner import device_missing

    assert device_missing(core, "GPU.9")  # a device that is not there: the real failure path
    model = CompiledModel(core, _tiny_ir(tmp_path / "m.xml"), device="GPU.9")
    assert model.device == "CPU"
    assert model.fallback_note and "GPU.9" in model.fallback_note
    np.testing.assert_allclose(model.infer({0: np.ones((1, 4), np.float32)})["y"], [[2, 2, 2, 2]])


def test_a_device_that_is_not_there_is_not_even_tried() -> None:
    """Compiling for an absent GPU loads its plugin, which now and then aborted the process; the
    runner asks OpenVINO which devices exist first. Virtual devices choose among present ones."""
    from inference.runner import device_missing

    core = make_core(None)
    present = list(core.available_devices)
    assert device_missing(core, "CPU") is None
    assert device_missing(core, "AUTO") is None and device_missing(core, "HETERO:GPU,CPU") is None
    missing = device_missing(core, "GPU.9")
    assert missing is not None and "GPU.9" in missing and "not available" in missing
    if not any(d.startswith("GPU") for d in present):
        assert device_missing(core, "GPU") is not None
    for device in present:
        assert device_missing(core, device) is None
