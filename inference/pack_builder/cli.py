"""``firstlook build-models``: build (or verify) every model pack into a git-ignored folder."""

from __future__ import annotations

import logging
import os
import sys
from pathlib import Path

from inference.pack_builder.build_cache import BuildCache, default_root, open_build_cache
from inference.pack_builder.build_key import build_key, current_environment
from inference.pack_builder.cached_build import PackJob, provide_pack

log = logging.getLogger(__name__)

REPO = Path(__file__).resolve().parents[2]


def default_shared_dir() -> Path:
    return Path(os.environ.get("FIRSTLOOK_SHARED", REPO.parent / "shared")).resolve()


def resolve_build_cache(build_cache: Path | None, use_build_cache: bool) -> BuildCache | None:
    """``--no-build-cache`` wins, then ``--build-cache DIR``, then ``$FIRSTLOOK_BUILD_CACHE``
    (``off`` disables), then ``~/.cache/firstlook/pack-builds``; an unusable folder -> None."""
    if not use_build_cache:
        return None
    return open_build_cache(Path(build_cache) if build_cache is not None else default_root())


def build_models(out: Path, shared: Path | None = None, only: str | None = None,
                 chexnet_checkpoint: Path | None = None, force: bool = False,
                 build_cache: Path | None = None, use_build_cache: bool = True) -> int:
    """Returns a process exit code; each pack's failure is reported on its own line.

    Each pack is kept if current, else restored from the build cache outside the clone (see
    ``build_cache.py``), else built and stored there; ``force`` rebuilds and refreshes the entry.
    """
    try:
        import nncf
        import torch  # noqa: F401
    except ImportError as exc:
        sys.stderr.write(f"firstlook build-models needs the build extra (torch, nncf): {exc}. "
                         "Install with: pip install 'firstlook[build]'\n")
        return 2
    from inference.pack_builder import blastct_build, chexnet_build

    # NNCF logs one INFO line per operation it leaves in floating point (~20 per BLAST-CT member).
    nncf.set_log_level(logging.WARNING)

    shared = (shared or default_shared_dir()).resolve()
    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    cache = resolve_build_cache(build_cache, use_build_cache)
    log.info("build cache: %s", cache.root if cache is not None else "off")
    environment = current_environment()
    jobs: list[PackJob] = []
    if only in (None, "chexnet"):
        jobs.append(PackJob(
            name=chexnet_build.PACK_NAME,
            dest=out / chexnet_build.PACK_NAME,
            is_current=lambda: chexnet_build.pack_is_current(out, shared, checkpoint=chexnet_checkpoint),
            key=lambda: build_key(chexnet_build.cache_key_inputs(shared, environment, checkpoint=chexnet_checkpoint)),
            # Only called once the pack is known not to be current: force skips a second check.
            build=lambda: chexnet_build.build_chexnet_pack(out, shared, checkpoint=chexnet_checkpoint, force=True),
        ))
    if only in (None, "blast-ct"):
        jobs.append(PackJob(
            name=blastct_build.PACK_NAME,
            dest=out / blastct_build.PACK_NAME,
            is_current=lambda: blastct_build.pack_is_current(out, shared),
            key=lambda: build_key(blastct_build.cache_key_inputs(shared, environment)),
            build=lambda: blastct_build.build_blastct_pack(out, shared, force=True),
        ))
    status = 0
    for job in jobs:
        try:
            provided = provide_pack(job, cache, force=force)
            log.info("%s pack ready at %s (%s, %.0f s)", job.name, provided.path, provided.how, provided.seconds)
        except Exception as exc:
            log.exception("%s pack not built", job.name)
            sys.stderr.write(f"firstlook build-models: {job.name}: {exc}\n")
            status = 1
    return status
