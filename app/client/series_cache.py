"""A series' DICOM files from the service by WADO-RS, kept in a local cache so re-opening is
instant and the viewer reads files exactly as it does in the embedded mode.

Layout mirrors the store: ``<root>/studies/<study>/<series>/<sop>.dcm``. A file is named by
the SOP Instance UID read from its own header (never from the URL), and a series counts as
cached only when every SOP Instance UID the service lists for it has its file and, where the
service lists each file's SHA-256 (``sop_sha256``), that file is the one the service holds now
(an instance re-sent under the same UID is fetched again). A manifest per series records the
hashes and the bytes held; the folder's mtime is the series' last opening, and the cache evicts
the least recently opened series first.
"""

from __future__ import annotations

import contextlib
import hashlib
import io
import json
import logging
import os
import shutil
import time
from collections.abc import Iterable, Iterator
from dataclasses import dataclass
from email.message import Message
from pathlib import Path

import pydicom

from app.client.api_client import ApiClient
from app.core.uids import is_valid_uid

log = logging.getLogger(__name__)

DICOM_PARTS = 'multipart/related; type="application/dicom"'


class CacheError(Exception):
    """What the service sent does not match what it listed (a missing or foreign instance)."""


def boundary_of(content_type: str) -> bytes:
    header = Message()
    header["content-type"] = content_type
    boundary = header.get_param("boundary")
    if not isinstance(boundary, str) or not boundary:
        raise CacheError(f"the service's answer is not multipart ({content_type!r})")
    return boundary.encode("ascii")


def iter_parts(chunks: Iterable[bytes], boundary: bytes) -> Iterator[bytes]:
    """The bodies of a ``multipart/related`` message (RFC 2046) as its chunks arrive, holding
    one part at a time: a delimiter is CRLF + "--" + boundary (the first may lack the CRLF),
    each part's headers end at its first blank line, "--" after a delimiter closes the message."""
    delimiter = b"\r\n--" + boundary
    buf = bytearray()
    started = False
    for chunk in chunks:
        buf += chunk
        if not started:
            first = buf.find(b"--" + boundary)
            if first < 0:
                continue
            del buf[:first + len(boundary) + 2]
            started = True
        while True:
            if buf.startswith(b"--"):
                return
            head_end = buf.find(b"\r\n\r\n")
            if head_end < 0:
                break
            end = buf.find(delimiter, head_end + 4)
            if end < 0:
                break
            yield bytes(buf[head_end + 4:end])
            del buf[:end + len(delimiter)]


def split_multipart(body: bytes, content_type: str) -> list[bytes]:
    return list(iter_parts([body], boundary_of(content_type)))


@dataclass
class CachedSeries:
    """One series folder of the cache, as eviction sees it."""

    folder: Path
    size: int
    last_used: float


class SeriesCache:
    """``max_bytes`` bounds the cache (None: unbounded): after each fetch the series opened
    longest ago are removed until the rest fits, but never the one just opened nor any opened
    in the last ``keep_recent_s`` (a viewer may still be reading its files)."""

    keep_recent_s = 600.0

    def __init__(self, root: Path, api: ApiClient, max_bytes: int | None = None) -> None:
        self.root = private_dir(Path(root))
        self.api = api
        self.max_bytes = max_bytes

    def series_dir(self, study_uid: str, series_uid: str) -> Path:
        if not (is_valid_uid(study_uid) and is_valid_uid(series_uid)):
            raise CacheError(f"not a DICOM UID: {study_uid!r} / {series_uid!r}")
        return self.root / "studies" / study_uid / series_uid

    def cached(self, study_uid: str, series_uid: str, sop_uids: list[str],
               sha256: list[str] | None = None) -> list[Path] | None:
        """The files, if every listed instance is here and (when the service lists hashes) is
        the version the service holds now; None means fetch."""
        folder = self.series_dir(study_uid, series_uid)
        paths = [folder / f"{sop}.dcm" for sop in sop_uids]
        if not all(p.is_file() for p in paths):
            return None
        if sha256:
            held = read_manifest(folder).get("sha256", {})
            stale = [sop for sop, sha in zip(sop_uids, sha256) if held.get(sop) != sha]
            if stale:
                log.info("series %s: %d cached instance(s) differ from the service's (replaced); fetching again",
                         series_uid, len(stale))
                return None
        return paths

    def files(self, study_uid: str, series_uid: str, sop_uids: list[str],
              sha256: list[str] | None = None) -> list[Path]:
        """The series' files in ``sop_uids`` order; fetched by WADO-RS unless all are cached
        (and current)."""
        hit = self.cached(study_uid, series_uid, sop_uids, sha256)
        if hit is not None:
            touch(self.series_dir(study_uid, series_uid))
            return hit
        folder = self.series_dir(study_uid, series_uid)
        folder.mkdir(parents=True, exist_ok=True)
        wanted = set(sop_uids)
        hashes: dict[str, str] = {}
        with self.api.stream("GET", f"/dicomweb/studies/{study_uid}/series/{series_uid}",
                             headers={"Accept": DICOM_PARTS}) as response:
            boundary = boundary_of(response.headers.get("content-type", ""))
            for part in iter_parts(response.iter_bytes(), boundary):   # one instance in memory at a time
                sop = str(pydicom.dcmread(io.BytesIO(part), stop_before_pixels=True,
                                          specific_tags=["SOPInstanceUID"]).get("SOPInstanceUID", ""))
                if sop not in wanted:
                    log.warning("WADO-RS sent instance %s that series %s does not list; ignored", sop, series_uid)
                    continue
                write_atomically(folder / f"{sop}.dcm", part)
                hashes[sop] = hashlib.sha256(part).hexdigest()
        missing = [s for s in sop_uids if not (folder / f"{s}.dcm").is_file()]
        if missing:
            raise CacheError(f"the service sent {len(hashes)} of {len(sop_uids)} instances of series {series_uid}; "
                             f"missing {missing[:3]}")
        for leftover in folder.glob("*.dcm"):   # instances the series no longer lists
            if leftover.stem not in wanted:
                leftover.unlink(missing_ok=True)
        size = sum((folder / f"{sop}.dcm").stat().st_size for sop in sop_uids)
        write_atomically(folder / MANIFEST, json.dumps({"study_uid": study_uid, "series_uid": series_uid,
                                                        "bytes": size, "sha256": hashes}).encode())
        log.info("series %s: %d instances fetched by WADO-RS into %s", series_uid, len(hashes), folder)
        self.evict(keep=folder)
        return [folder / f"{sop}.dcm" for sop in sop_uids]

    def entries(self) -> list[CachedSeries]:
        """Every series folder with its size and when it was last opened (a folder from a release
        without manifests is measured file by file)."""
        found = []
        for folder in self.root.glob("studies/*/*"):
            if not folder.is_dir():
                continue
            try:
                last_used = folder.stat().st_mtime
                size = read_manifest(folder).get("bytes")
                if not isinstance(size, int):
                    size = sum(p.stat().st_size for p in folder.iterdir() if p.is_file())
            except OSError:
                continue  # removed meanwhile (another desktop window of this user)
            found.append(CachedSeries(folder, size, last_used))
        return found

    def evict(self, keep: Path | None = None) -> int:
        """Remove the series opened longest ago until the cache fits ``max_bytes``; returns bytes freed."""
        if self.max_bytes is None:
            return 0
        entries = self.entries()
        total = sum(e.size for e in entries)
        if total <= self.max_bytes:
            return 0
        recent = time.time() - self.keep_recent_s
        freed = 0
        for entry in sorted(entries, key=lambda e: e.last_used):
            if total - freed <= self.max_bytes:
                break
            if entry.folder == keep or entry.last_used >= recent:
                continue
            shutil.rmtree(entry.folder, ignore_errors=True)
            with contextlib.suppress(OSError):
                entry.folder.parent.rmdir()   # the study folder, once its last series is gone
            freed += entry.size
            log.info("cache: removed series %s (%.1f MB, last opened %s)", entry.folder.name, entry.size / 1e6,
                     time.strftime("%Y-%m-%d %H:%M", time.localtime(entry.last_used)))
        if total - freed > self.max_bytes:
            log.warning("cache: %.1f GB held, over its %.1f GB limit: the rest was opened in the last %d minutes",
                        (total - freed) / 1e9, self.max_bytes / 1e9, self.keep_recent_s // 60)
        return freed


MANIFEST = ".manifest.json"  # per series: bytes held and each file's SHA-256


def read_manifest(folder: Path) -> dict:
    try:
        data = json.loads((folder / MANIFEST).read_text())
    except (OSError, ValueError):
        return {}
    return data if isinstance(data, dict) else {}


def touch(path: Path) -> None:
    """Mark a series as opened now: its folder's mtime is its last use (a fetch sets it too)."""
    with contextlib.suppress(OSError):
        os.utime(path)


def private_dir(path: Path) -> Path:
    """The cache holds patient images: only this user may read it (as the store's 0700)."""
    path.mkdir(parents=True, exist_ok=True)
    os.chmod(path, 0o700)
    return path


def write_atomically(path: Path, data: bytes) -> None:
    """A reader (another desktop window, a crash) never sees half a file; mode 0600."""
    tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC | os.O_CLOEXEC, 0o600)
    with os.fdopen(fd, "wb") as fh:
        fh.write(data)
    os.replace(tmp, path)
