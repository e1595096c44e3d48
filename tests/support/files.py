"""Checks on what the store leaves on disk."""

from __future__ import annotations

import stat
from pathlib import Path


def permissions(data_dir: Path) -> list[str]:
    """Every entry that is not private, as 'mode path' strings (empty when all are)."""
    wrong = []
    for path in [data_dir, *data_dir.rglob("*")]:
        mode = stat.S_IMODE(path.lstat().st_mode)
        want = 0o700 if path.is_dir() else 0o600
        if mode != want:
            wrong.append(f"{mode:04o} {path.relative_to(data_dir.parent)}")
    return wrong
