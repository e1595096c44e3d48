"""BLAST-CT fanned out as member x tile work items (inference/cluster/fanout.py), without Ray: items
computed by a separate runtime (a replica), in any order, then summed in the local order, equal
the local ensemble bit for bit; with the sampled-voxel mask an item carries only those voxels."""

from __future__ import annotations

from typing import Any

import numpy as np
import pytest

from inference.blastct import BlastCt, native_cells, normalise, plan_tiles, sampled_voxels
from inference.cluster.fanout import OrderedSum, destination, group_tiles, item_output, work_items
from inference.packs import load_pack
from tests.inference.test_blastct_runtime import _small_head


@pytest.fixture(scope="module")
def pack(packs_dir):
    return load_pack(packs_dir / "blast-ct")


@pytest.mark.parametrize("split", [True, False], ids=["split-head replica", "whole-model replica"])
def test_items_finished_in_any_order_sum_to_the_local_ensemble_bit_for_bit(pack: Any, split: bool) -> None:
    vol = _small_head()
    local = BlastCt(pack, None, "CPU", members=3, check_device=False)
    acc_local, run, _ = local.probabilities(vol)
    x, sampled = normalise(vol.hu), sampled_voxels(vol)
    groups = group_tiles(x, plan_tiles(native_cells(vol), local.tile))
    items = work_items(local.member_names, groups)
    assert len(items) == 3 * run == 6

    replica = BlastCt(pack, None, "CPU", check_device=False)  # compiled on its own, as on a cluster node
    compiled: dict[Any, Any] = {}
    outputs = {}
    for item in reversed(items):  # replicas finish in any order
        key = (item.member, item.size)
        if key not in compiled:
            compiled[key] = replica.compile_tile(*key, split)
        outputs[item] = item_output(compiled[key], x, item, sampled, split)
    total = OrderedSum(x.shape, groups, sampled)
    for item in items:
        total.add(item, outputs[item])
    assert np.array_equal(total.acc, acc_local)
    assert np.array_equal(total.labels(), acc_local.argmax(axis=0).astype(np.uint8))

    # What travels back per item: the sampled voxels only, not the tile's box.
    sent = sum(o.nbytes for o in outputs.values())
    boxes = sum(5 * 4 * int(np.prod(item.size)) for item in items)
    assert all(o.shape == (5, int(sampled[destination(i.start, i.size, x.shape)].sum())) for i, o in outputs.items())
    assert sent < 0.5 * boxes
