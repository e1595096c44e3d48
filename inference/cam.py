"""Class-activation map -> heatmap at image size (numpy and Pillow only).

Kept apart from the runtime so the viewer can turn the stored 7x7 CAM into a heatmap for
one finding on demand (a few ms) without importing OpenVINO; storing 14 image-size maps
per radiograph would cost 2-15 MB and up to 0.6 s of compression on the result path.
"""

from __future__ import annotations

from concurrent.futures import Executor

import numpy as np
from PIL import Image


def cam_to_image(cam_raw: np.ndarray, rows: int, cols: int, executor: Executor | None = None) -> np.ndarray:
    """Per-finding min..max normalised 7x7 maps -> uint8 [C, rows, cols], bilinear.

    Normalising before upsampling is exact (bilinear stays inside min..max) and lets
    Pillow resample in 8-bit. Pillow releases the GIL while resizing, so an executor
    spreads the findings over cores (about 2x on 2 cores for a 1024x1024 image).
    """
    n = cam_raw.shape[0]
    flat = cam_raw.reshape(n, -1).astype(np.float64)
    lo = flat.min(axis=1)[:, None, None]
    hi = flat.max(axis=1)[:, None, None]
    unit = np.where(hi > lo, (cam_raw - lo) / np.where(hi > lo, hi - lo, 1.0), 0.0)
    small = np.clip(np.rint(unit * 255.0), 0, 255).astype(np.uint8)
    out = np.empty((n, rows, cols), dtype=np.uint8)

    def upsample(c: int) -> None:
        out[c] = np.asarray(Image.fromarray(small[c]).resize((cols, rows), Image.Resampling.BILINEAR))

    if executor is None:
        for c in range(n):
            upsample(c)
    else:
        list(executor.map(upsample, range(n)))
    return out
