"""A BLAST-CT result from a label grid computed elsewhere (the cluster), post-processed exactly as
``inference.blastct.BlastCt.analyse`` does it on this machine."""

from __future__ import annotations

import numpy as np

from inference.blastct import BlastCtOutput, output_from_grid
from inference.ct_volume import CtVolume


def blastct_output(grid: np.ndarray, volume: CtVolume, *, timings: dict[str, float], device: str,
                   note: str | None, precision: str, members: int, tile: int, tiles_run: int,
                   tiles_constant: int) -> BlastCtOutput:
    if grid.shape != volume.shape:
        raise ValueError(f"label grid {grid.shape} does not match the volume {volume.shape}")
    return output_from_grid(grid.astype(np.uint8), volume, timings=timings, device=device, note=note,
                            precision=precision, members=members, tile=tile, tiles_run=tiles_run,
                            tiles_constant=tiles_constant)
