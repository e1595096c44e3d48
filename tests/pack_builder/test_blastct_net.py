"""BLAST-CT network re-implementation against MODEL_CARD.md: keys, size, shapes, tiling, OpenVINO export."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import openvino as ov
import pytest
import torch

from inference.pack_builder.blastct_net import PARAMETER_COUNT, BlastCtNet, load_blastct, parameter_count


@pytest.fixture(scope="module")
def net(model_dir: Path) -> BlastCtNet:
    torch.manual_seed(0)
    return load_blastct(model_dir / "model_01.pt")


def test_all_twelve_load_strictly(model_dir: Path) -> None:
    first = None
    for i in range(1, 13):
        state = torch.load(model_dir / f"model_{i:02d}.pt", map_location="cpu", weights_only=True)
        assert len(state) == 189
        model = BlastCtNet()
        result = model.load_state_dict(state, strict=True)
        assert not result.missing_keys and not result.unexpected_keys
        assert parameter_count(model) == PARAMETER_COUNT == 1_030_033
        w = state["path(1, 1, 1)2.path.1.conv.weight"]
        if first is None:
            first = w
        elif i == 2:
            assert not torch.equal(first, w)  # the members really differ


def test_key_names_match_the_card() -> None:
    keys = list(BlastCtNet().state_dict())
    assert len(keys) == 189
    assert "path(3, 3, 3)1.path.4.conv.weight" in keys
    assert "fully_connected.2.prelu.weight" in keys
    assert "path(5, 5, 5)0.path.8.bn.num_batches_tracked" in keys
    assert not any(k.startswith(("path(1, 1, 1)2.path.0.", "path(1, 1, 1)2.path.9.")) for k in keys)


@pytest.mark.parametrize(
    ("shape", "expected"),
    [((110, 110, 110), (30, 30, 30)), ((100, 125, 150), (20, 45, 70)), ((85, 85, 85), (5, 5, 5))],
)
def test_output_shapes(net: BlastCtNet, shape: tuple[int, int, int], expected: tuple[int, int, int]) -> None:
    with torch.no_grad():
        y = net(torch.randn(1, 1, *shape))
    assert tuple(y.shape) == (1, 5, *expected)


def test_invalid_input_size_is_refused(net: BlastCtNet) -> None:
    with pytest.raises(ValueError):
        net(torch.zeros(1, 1, 112, 110, 110))


def test_batch_of_two(net: BlastCtNet) -> None:
    with torch.no_grad():
        x = torch.randn(2, 1, 110, 110, 110)
        y = net(x)
        assert tuple(y.shape) == (2, 5, 30, 30, 30)
        np.testing.assert_allclose(y[1:].numpy(), net(x[1:]).numpy(), atol=1e-4)


def test_large_tile_equals_reference_tiles(net: BlastCtNet) -> None:
    """A 60^3 output tile (input 140) equals the eight 30^3 tiles it contains (same sub-sampling phase)."""
    g = torch.Generator().manual_seed(3)
    x = torch.rand(1, 1, 140, 140, 140, generator=g) * 2 - 1
    with torch.no_grad():
        big = net(x)
        for dz in (0, 30):
            for dy in (0, 30):
                for dx in (0, 30):
                    small = net(x[:, :, dz:dz + 110, dy:dy + 110, dx:dx + 110])
                    part = big[:, :, dz:dz + 30, dy:dy + 30, dx:dx + 30]
                    assert float((part - small).abs().max()) < 1e-3


def test_constant_input_gives_constant_output(net: BlastCtNet) -> None:
    with torch.no_grad():
        y = net(torch.full((1, 1, 110, 110, 110), -1.0))
    flat = y[0].reshape(5, -1)
    assert float((flat - flat[:, :1]).abs().max()) < 1e-4


def test_openvino_fp32_pack_matches_torch(net: BlastCtNet, packs_dir: Path, shared_dir: Path) -> None:
    """The pack's FP32 IR (saved for 170^3) reshaped to 110^3 reproduces PyTorch."""
    xml = packs_dir / "blast-ct" / "fp32" / "model_01.xml"
    core = ov.Core()
    model = core.read_model(str(xml))
    model.reshape([1, 1, 110, 110, 110])
    compiled = core.compile_model(model, "CPU", {"INFERENCE_PRECISION_HINT": "f32"})
    x = np.random.default_rng(0).uniform(-1, 1, (1, 1, 110, 110, 110)).astype(np.float32)
    got = compiled(x)[0]
    with torch.no_grad():
        ref = net(torch.from_numpy(x)).numpy()
    assert np.abs(got - ref).max() < 1e-3
    assert (got.argmax(1) == ref.argmax(1)).mean() > 0.9999


def _tiny_ir(path: Path, weight: float, decoys: int) -> Path:
    """A 1-op IR; ``decoys`` unrelated operations created first shift OpenVINO's name counters."""
    from openvino import opset13 as ops

    for _ in range(decoys):
        ops.constant(np.zeros(1, np.float32))
    x = ops.parameter([1, 4], np.float32)
    y = ops.multiply(x, ops.constant(np.full((1, 4), weight, np.float32)))
    ov.save_model(ov.Model([y], [x]), str(path), compress_to_fp16=False)
    return path


def test_reference_cache_key_ignores_generated_names(tmp_path: Path) -> None:
    """The gate's cached FP32 labels must be found again for the same network, whatever the
    build process created before it (names), and never for different weights."""
    from inference.pack_builder.blastct_build import ir_fingerprint

    a = _tiny_ir(tmp_path / "a.xml", 2.0, decoys=0)
    b = _tiny_ir(tmp_path / "b.xml", 2.0, decoys=7)
    c = _tiny_ir(tmp_path / "c.xml", 3.0, decoys=0)
    assert a.read_bytes() != b.read_bytes()  # generated names differ...
    assert ir_fingerprint(a) == ir_fingerprint(b)  # ...the network does not
    assert ir_fingerprint(a) != ir_fingerprint(c)
