"""BLAST-CT runtime with the built pack (its gated runtime precision): the real series, tiling/skip
equivalence, native mapping. Tiling tests run INT8-or-bf16 as the pack says; both are deterministic."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest

from inference.blastct import CELL, BlastCt, BlastCtOutput, native_cells, plan_tiles, reference_starts, sampled_voxels
from inference.ct_volume import CtVolume, labels_to_native, load_ct_volume, volumes_ml
from inference.packs import load_pack


@pytest.fixture(scope="module")
def pack(packs_dir: Path):
    return load_pack(packs_dir / "blast-ct")


@pytest.fixture(scope="module")
def real_volume(headct_dir: Path) -> CtVolume:
    return load_ct_volume(sorted(headct_dir.glob("*.dcm")))


def test_manifest_contract(pack) -> None:
    m = pack.manifest
    assert m["name"] == "blast-ct" and m["task"] == "headct-segmentation" and m["validated"] is True
    assert "not for clinical use" in m["validation_note"].lower()
    assert m["source"]["licence"] == "Apache-2.0"
    assert sorted(m["source"]["sha256"]) == [f"model_{i:02d}.pt" for i in range(1, 13)]
    assert len(pack.members) == 12 and m["labels"] == ["IPH", "EAH", "oedema", "IVH"]
    assert set(m["thresholds"]) == {"IPH", "EAH", "oedema", "IVH"}
    assert m["triage"]["rules"][0]["priority"] == "critical"
    for key in ("input", "preprocessing", "outputs", "quantisation", "built"):
        assert m[key]
    fid = m["fidelity"]
    assert fid["passed"] and fid["members"] == 12
    chosen = m["runtime"]["precision"]
    assert fid["chosen"] == chosen and fid["candidates"][chosen]["passed"]
    assert "int8" in fid["candidates"]  # INT8 is always tried first
    for name, c in fid["classes"].items():
        assert abs(c["candidate_ml"] - c["fp32_ml"]) <= c["volume_tolerance_ml"], name
        if c["fp32_ml"] >= 1.0:
            assert c["dice"] >= 0.95, name
    ir = m["runtime"]["ir"]
    for member in pack.members:
        assert pack.member_xml(member.name, ir).is_file()
    if chosen != "int8":  # a refused INT8 IR must not be shipped; the runtime IR has its own folder
        assert not any(k.startswith("int8/") for k in m["files"])
        assert not fid["candidates"]["int8"]["passed"]
        assert ir == chosen and all(k.startswith(("fp32/", f"{chosen}/")) for k in m["files"])


def test_int8_ir_quantises_only_the_listed_convolutions(pack, core) -> None:
    """The mixed-precision recipe: INT8 exactly where the manifest says, never on the residual
    stream (requantising it at every block is what broke the all-INT8 ensemble)."""
    m = pack.manifest
    listed = m["quantisation"]["int8_convolutions"]
    assert len(listed) == 7
    assert m["runtime"]["precision"] == "int8", m["quantisation"].get("result")
    model = core.read_model(str(pack.member_xml(pack.members[0].name, "int8")))
    quantised_inputs: list[tuple[str, str]] = []  # (consumer type, consumer name)
    for op in model.get_ordered_ops():
        if op.get_type_name() != "FakeQuantize" or op.input_value(0).get_node().get_type_name() == "Constant":
            continue
        for target in op.output(0).get_target_inputs():
            node = target.get_node()
            quantised_inputs.append((node.get_type_name(), node.get_friendly_name()))
    assert {t for t, _ in quantised_inputs} == {"Convolution"}
    assert sorted(n.split("/")[0].removeprefix("__module.") for _, n in quantised_inputs) == sorted(listed)


def test_real_series_one_member(pack, core, real_volume: CtVolume) -> None:
    runner = BlastCt(pack, core, "CPU", members=1)
    out = runner.analyse(real_volume)
    assert out.labels.shape == (28, 512, 512) and out.labels.dtype == np.uint8
    assert set(np.unique(out.labels)) <= {0, 1, 2, 3, 4}
    assert out.sop_uids == real_volume.sop_uids and len(set(out.sop_uids)) == 28
    assert out.device == "CPU" and out.fallback_note is None
    assert out.precision == pack.manifest["runtime"]["precision"]
    ml = volumes_ml(out.labels, real_volume.native)
    for c, name in enumerate(("IPH", "EAH", "oedema", "IVH"), start=1):
        assert out.volumes_ml[name] == pytest.approx(round(float(ml[c]), 2))
        n_slices = int(np.count_nonzero((out.labels == c).any(axis=(1, 2))))
        assert out.slices_involved[name] == n_slices
        if n_slices:
            assert out.max_slice[name] == int((out.labels == c).sum(axis=(1, 2)).argmax())
        else:
            assert out.max_slice[name] is None
    # Sparse output, not noise: almost everything is background, lesions are < 50 mL in total.
    assert (out.labels == 0).mean() > 0.99
    assert sum(out.volumes_ml.values()) < 50
    assert out.tiles_run + out.tiles_constant <= 27
    assert out.timings["infer"] > 0 and out.timings["total"] >= out.timings["infer"]
    json.dumps(out.findings())


def _sub_volume(real: CtVolume) -> CtVolume:
    """The skull vertex of the real series (60 x 90 x 120 voxels) under 90 mm of air, as a scanner with
    a taller field of view would give: the upper tiles see nothing but air (constant patches)."""
    head = real.hu[173:233, 0:90, 60:180]
    air = np.full((90,) + head.shape[1:], -1000.0, dtype=np.float32)
    hu = np.ascontiguousarray(np.concatenate([head, air], axis=0))
    return CtVolume(hu=hu, origin=real.origin + np.array([60.0, 0.0, 173.0]), native=real.native,
                    series_uid="sub", fill_value=real.fill_value)


def test_large_tiles_and_constant_skip_match_reference_tiling(pack, core, real_volume: CtVolume) -> None:
    """Upstream scheme (30^3 tiles, every tile computed) vs 90^3 tiles with constant-patch reuse."""
    vol = _sub_volume(real_volume)
    ref = BlastCt(pack, core, "CPU", members=1, tile=30, skip_constant=False, native_cells_only=False,
                  check_device=False)
    fast = BlastCt(pack, core, "CPU", members=1, tile=90, skip_constant=True, native_cells_only=False,
                   check_device=False)
    p_ref, run_ref, const_ref = ref.probabilities(vol)
    p_fast, run_fast, const_fast = fast.probabilities(vol)
    # upstream also computes a last row of tiles lying wholly outside; those change nothing and are dropped
    assert len(reference_starts(vol.shape)) == 6 * 4 * 5
    assert const_ref == 0 and run_ref == 5 * 3 * 4
    assert run_fast + const_fast < run_ref
    # INT8 fake-quantised ranges are per tensor, so tile size changes rounding only.
    assert np.abs(p_ref - p_fast).max() < 0.05
    agree = (p_ref.argmax(0) == p_fast.argmax(0)).mean()
    assert agree > 0.999, agree


def test_constant_patch_reuse_is_exact(pack, core, real_volume: CtVolume) -> None:
    vol = _sub_volume(real_volume)
    a = BlastCt(pack, core, "CPU", members=1, tile=30, skip_constant=True, native_cells_only=False, check_device=False)
    pa, run, const = a.probabilities(vol)
    assert const > 0, "the corner above the skull should hold constant (air) patches"
    b = BlastCt(pack, core, "CPU", members=1, tile=30, skip_constant=False, native_cells_only=False, check_device=False)
    pb, _, _ = b.probabilities(vol)
    assert np.abs(pa - pb).max() < 1e-4
    assert (pa.argmax(0) == pb.argmax(0)).all()


def test_tile_plan_covers_every_needed_cell(real_volume: CtVolume) -> None:
    cells = native_cells(real_volume)
    assert 0.5 < cells.mean() < 0.95  # the tilted stack leaves empty wedges in its bounding box
    plan = plan_tiles(cells, 90)
    covered = np.zeros(cells.shape, dtype=int)
    for start, size in plan:
        assert all(v % CELL == 0 for v in start) and all(n % CELL == 0 and 0 < n <= 90 for n in size)
        sl = tuple(slice(max(v // CELL, 0), max((v + n) // CELL, 0)) for v, n in zip(start, size))
        covered[sl] += 1
    assert covered[cells].min() == 1 and covered.max() == 1  # every needed cell exactly once
    assert len(plan) <= 27
    assert sum(int(np.prod(size)) for _, size in plan) < 0.8 * 24 * 90**3  # shrinking saves work


def test_native_cells_only_gives_identical_native_labels(pack, core) -> None:
    """Skipping cells no native pixel samples changes nothing on the native slices (synthetic tilted head)."""
    from tests.support.dicom_factory import sphere_series

    series = sphere_series(20.0, matrix=160)
    vol = load_ct_volume(series)
    kw = dict(members=1, tile=90, check_device=False)
    a = BlastCt(pack, core, "CPU", native_cells_only=True, **kw).analyse(vol)
    b = BlastCt(pack, core, "CPU", native_cells_only=False, **kw).analyse(vol)
    assert native_cells(vol).sum() < np.prod([-(-n // CELL) for n in vol.shape])
    assert (a.labels == b.labels).all()
    assert a.volumes_ml == b.volumes_ml


def _small_head() -> CtVolume:
    """A small synthetic head (skull, brain, a ventricle, a bleed) on a 20-degree tilted stack of
    109 x 57 x 61 voxels: two tiles of different shapes, ~20 % of the grid sampled by native pixels."""
    from tests.support.dicom_factory import sphere_series

    vol = load_ct_volume(sphere_series(20.0, matrix=60))
    z, y, x = np.indices(vol.shape, dtype=np.float32)
    c = (np.array(vol.shape, np.float32) - 1) / 2
    r = np.sqrt(((z - c[0]) / (0.48 * vol.shape[0])) ** 2 + ((y - c[1]) / (0.48 * vol.shape[1])) ** 2
                + ((x - c[2]) / (0.48 * vol.shape[2])) ** 2)
    hu = np.full(vol.shape, -1000.0, np.float32)
    hu[r < 1.0] = 1200.0
    brain = r < 0.85
    hu[brain] = 32.0 + np.random.default_rng(0).normal(0, 4, int(brain.sum())).astype(np.float32)
    hu[np.sqrt((z - c[0]) ** 2 + ((y - c[1]) / 2) ** 2 + (x - c[2]) ** 2) < 8] = 6.0
    hu[np.sqrt((z - c[0] - 15) ** 2 + (y - c[1] + 8) ** 2 + (x - c[2] - 10) ** 2) < 7] = 70.0
    return CtVolume(hu=hu, origin=vol.origin, native=vol.native, series_uid="small-head", fill_value=-1000.0)


@pytest.mark.parametrize("precision", [None, "fp32"])  # the pack's runtime precision (INT8 + bf16), and FP32
def test_split_head_equals_whole_model_exactly(pack, core, precision: str | None) -> None:
    """The head run only at sampled voxels gives the whole model's sums bit for bit there, hence the
    same native labels; the per-member hooks see each partial sum; a kept runtime gives the same again."""
    vol = _small_head()
    members = 2 if precision is None else 1
    kw = dict(members=members, precision=precision, check_device=False)
    sampled = sampled_voxels(vol)
    assert 0.05 < sampled.mean() < 0.5
    plain = BlastCt(pack, core, "CPU", head_at_sampled_voxels=False, **kw)
    fast = BlastCt(pack, core, "CPU", keep_compiled=True, **kw)
    partial: list[tuple[int, np.ndarray]] = []
    p_fast, run, const = fast.probabilities(vol, on_member=lambda k, acc: partial.append((k, acc[:, sampled].copy())))
    p_plain, run_plain, const_plain = plain.probabilities(vol)
    assert (run, const) == (run_plain, const_plain) and run == 2
    assert np.array_equal(p_fast[:, sampled], p_plain[:, sampled])
    assert [k for k, _ in partial] == list(range(1, members + 1))
    assert np.array_equal(partial[-1][1], p_plain[:, sampled])
    labels_plain = labels_to_native(p_plain.argmax(axis=0).astype(np.uint8), vol)
    assert labels_plain.any(), "the phantom should give some non-background label"
    outs: list[tuple[int, BlastCtOutput]] = []
    out = fast.analyse(vol, on_member=lambda k, o: outs.append((k, o)))  # second study: compiled models kept
    assert np.array_equal(out.labels, labels_plain)
    # partial outputs after every member but the last (the full ensemble is what analyse returns)
    assert [k for k, _ in outs] == list(range(1, members)) and [o.members for _, o in outs] == [k for k, _ in outs]
    assert out.members == members
