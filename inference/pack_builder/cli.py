"""``firstlook build-models``: build (or verify) every model pack into a git-ignored folder."""

from __future__ import annotations

import logging
import os
import sys
import time
from pathlib import Path

log = logging.getLogger(__name__)

REPO = Path(__file__).resolve().parents[2]


def default_shared_dir() -> Path:
    return Path(os.environ.get("FIRSTLOOK_SHARED", REPO.parent / "shared")).resolve()


def build_models(out: Path, shared: Path | None = None, only: str | None = None,
                 chexnet_checkpoint: Path | None = None, force: bool = False) -> int:
    """Returns a process exit code; each pack's failure is reported on its own line."""
    try:
        import nncf
        import torch  # noqa: F401
    except ImportError as exc:
        sys.stderr.write(f"firstlook build-models needs the build extra (torch, nncf): {exc}. "
                         "Install with: pip install 'firstlook[build]'\n")
        return 2
    from inference.pack_builder.blastct_build import build_blastct_pack
    from inference.pack_builder.chexnet_build import build_chexnet_pack

    # NNCF logs one INFO line per operation it leaves in floating point (~20 per BLAST-CT member).
    nncf.set_log_level(logging.WARNING)

    shared = (shared or default_shared_dir()).resolve()
    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    status = 0
    if only in (None, "chexnet"):
        start = time.perf_counter()
        try:
            path = build_chexnet_pack(out, shared, checkpoint=chexnet_checkpoint, force=force)
            log.info("chexnet pack ready at %s (%.0f s)", path, time.perf_counter() - start)
        except Exception as exc:
            log.exception("chexnet pack not built")
            sys.stderr.write(f"firstlook build-models: chexnet: {exc}\n")
            status = 1
    if only in (None, "blast-ct"):
        start = time.perf_counter()
        try:
            path = build_blastct_pack(out, shared, force=force)
            log.info("blast-ct pack ready at %s (%.0f s)", path, time.perf_counter() - start)
        except Exception as exc:
            log.exception("blast-ct pack not built")
            sys.stderr.write(f"firstlook build-models: blast-ct: {exc}\n")
            status = 1
    return status
