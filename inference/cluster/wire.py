"""The bytes exchanged with the cluster: one uncompressed .npz holding the arrays plus a JSON header.

Plain numpy on both sides (no pickle, ``allow_pickle=False``): the service never unpickles what
a network peer sends.
"""

from __future__ import annotations

import io
import json
from typing import Any

import numpy as np

_META = "__meta__"


def encode(meta: dict[str, Any], **arrays: np.ndarray) -> bytes:
    buffer = io.BytesIO()
    np.savez(buffer, **{_META: np.frombuffer(json.dumps(meta).encode("utf-8"), dtype=np.uint8)}, **arrays)
    return buffer.getvalue()


def decode(body: bytes) -> tuple[dict[str, Any], dict[str, np.ndarray]]:
    with np.load(io.BytesIO(body), allow_pickle=False) as data:
        arrays = {name: data[name] for name in data.files}
    meta = json.loads(arrays.pop(_META).tobytes().decode("utf-8")) if _META in arrays else {}
    return meta, arrays
