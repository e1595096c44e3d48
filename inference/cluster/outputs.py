"""A BLAST-CT result from a label grid computed elsewhere (the cluster), post-processed exactly as
``inference.blastct.BlastCt.analyse`` does it on this machine."""

from __future__ import annotations

import numpy as np

from inference.blastct import CLASSES, N_CLASSES, BlastCtOutput
from inference.ct_volume import CtVolume, labels_to_native, volumes_ml


def blastct_output(grid: np.ndarray, volume: CtVolume, *, timings: dict[str, float], device: str,
                   note: str | None, precision: str, members: int, tile: int, tiles_run: int,
                   tiles_constant: int) -> BlastCtOutput:
    if grid.shape != volume.shape:
        raise ValueError(f"label grid {grid.shape} does not match the volume {volume.shape}")
    native = labels_to_native(grid.astype(np.uint8), volume)
    ml = volumes_ml(native, volume.native, N_CLASSES)
    counts = np.stack([np.bincount(s.ravel(), minlength=N_CLASSES)[:N_CLASSES] for s in native])
    vols: dict[str, float] = {}
    involved: dict[str, int] = {}
    max_slice: dict[str, int | None] = {}
    for c, name in enumerate(CLASSES, start=1):
        vols[name] = round(float(ml[c]), 2)
        involved[name] = int(np.count_nonzero(counts[:, c]))
        max_slice[name] = int(counts[:, c].argmax()) if counts[:, c].any() else None
    return BlastCtOutput(labels=native, sop_uids=volume.native.sop_uids, volumes_ml=vols, slices_involved=involved,
                         max_slice=max_slice, timings=timings, device=device, fallback_note=note,
                         precision=precision, members=members, tile=tile, tiles_run=tiles_run,
                         tiles_constant=tiles_constant)
