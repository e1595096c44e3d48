"""Provide one model pack: keep it if current, else restore it from the build cache, else build.

Why a separate step with callables: the order (current pack -> cache hit -> cold build, then
store) is the same for every pack, and passing the pack's checks and builder in keeps it testable
with a tiny fake builder, without torch and without patching module globals.
"""

from __future__ import annotations

import logging
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Callable, Literal

from inference.pack_builder.build_cache import BuildCache

log = logging.getLogger(__name__)

How = Literal["current", "restored", "built"]


@dataclass(frozen=True)
class PackJob:
    """One pack to provide into ``dest`` (``<out>/<name>``).

    ``is_current``: the builder's own check that ``dest`` holds a pack built from today's inputs.
    ``key``: the content address of the build (computed only when the pack is not current).
    ``build``: the cold build into ``dest``; returns the pack folder.
    """

    name: str
    dest: Path
    is_current: Callable[[], bool]
    key: Callable[[], str]
    build: Callable[[], Path]


@dataclass(frozen=True)
class Provided:
    path: Path
    how: How
    key: str | None
    seconds: float


def provide_pack(job: PackJob, cache: BuildCache | None, *, force: bool = False) -> Provided:
    """Keep, restore or build ``job``'s pack. ``force`` rebuilds and refreshes the cache entry.

    A restored pack must also pass the builder's own ``is_current`` check; if it does not, the
    entry is dropped and the pack is rebuilt, so a restore can never hand out a pack the builder
    itself would replace.
    """
    start = time.perf_counter()
    if not force and job.is_current():
        return Provided(job.dest, "current", None, time.perf_counter() - start)
    key = job.key() if cache is not None else None
    if cache is not None and key is not None and not force:
        if cache.restore(key, job.dest):
            if job.is_current():
                seconds = time.perf_counter() - start
                log.info("%s: restored from build cache %s in %.0f s", job.name, key[:12], seconds)
                return Provided(job.dest, "restored", key, seconds)
            log.warning("%s: pack restored from build cache %s is not current for the builder; "
                        "dropping the entry and rebuilding", job.name, key[:12])
            cache.discard(key)
        else:
            log.info("%s: not in build cache (%s); building", job.name, key[:12])
    path = job.build()
    if cache is not None and key is not None:
        t0 = time.perf_counter()
        if cache.store(key, job.name, path, replace=force):
            log.info("%s: stored in build cache %s (%.0f s) at %s", job.name, key[:12],
                     time.perf_counter() - t0, cache.entry_dir(key))
    return Provided(path, "built", key, time.perf_counter() - start)
