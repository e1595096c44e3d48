"""The storage area: instance files, their names and how they are made durable.

Orthanc's split: the area knows folders, temporary files, fsync, atomic rename, private modes
and free space, and nothing of the index; ``StudyStore`` decides when each step happens.

Layout under the data dir: ``studies/<study>/<series>/<sop>.dcm`` (current versions),
``superseded/<sop>.<ms>.<old sha[:12]>.dcm`` (replaced versions), ``tmp/*.part`` (writes not
yet acknowledged), ``results/<series>/`` (overlays).
"""

from __future__ import annotations

import errno
import hashlib
import logging
import os
import shutil
import uuid
from pathlib import Path
from typing import Iterator

from app.core.store.errors import BadUID, InvalidDataset, LowDiskSpace, OutOfResources
from app.core.store.part10 import InstanceHeader
from app.core.uids import is_valid_uid

log = logging.getLogger(__name__)


def sha256_parts(*parts: bytes | memoryview) -> str:
    """Hex SHA-256 of bytes that are stored as one file but held as separate buffers."""
    digest = hashlib.sha256()
    for part in parts:
        digest.update(part)
    return digest.hexdigest()


def sha256_file(path: Path) -> str:
    """Hex SHA-256 of a stored file, streamed by the standard library (``hashlib.file_digest``,
    as ``inference.packs.sha256_file`` does). Not imported from there: the node imports the
    store and must not import ``inference`` (import-linter contract in pyproject.toml)."""
    with open(path, "rb") as fh:
        return hashlib.file_digest(fh, "sha256").hexdigest()


def private_dir(path: Path) -> None:
    """A directory only the service user can enter (0700), however the umask is set."""
    path.mkdir(mode=0o700, exist_ok=True)
    if path.stat().st_mode & 0o777 != 0o700:
        os.chmod(path, 0o700)


def private_opener(path: str, flags: int) -> int:
    """``open(..., opener=)`` that creates the file 0600 (the umask can only narrow it)."""
    return os.open(path, flags, 0o600)


def fsync_dir(path: Path) -> None:
    """Make the names in a directory durable (a renamed or linked file is not, until this)."""
    fd = os.open(path, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def write_all(fd: int, *parts: bytes | memoryview) -> None:
    """``os.write`` until every byte is written (a write may be short)."""
    for part in parts:
        view = memoryview(part).cast("B")
        while view:
            view = view[os.write(fd, view):]


def discard(path: Path) -> None:
    """Remove a temporary file; failing to (e.g. the failure being reported was the
    directory itself) must not mask the real error."""
    try:
        path.unlink(missing_ok=True)
    except OSError as exc:
        log.warning("cannot remove temporary file %s: %s", path, exc)


def write_failure(exc: OSError, header: InstanceHeader | None) -> OutOfResources:
    """The store error for a failed write: a full disk is LowDiskSpace (shown to the user)."""
    what = header.sop_uid if header else "an instance"
    if exc.errno in (errno.ENOSPC, errno.EDQUOT):
        return LowDiskSpace(f"cannot store {what}: disk full")
    return OutOfResources(f"cannot store {what}: write error ({exc.strerror or exc})")


class StorageArea:
    """The folders of one data dir. Patient data: readable by the service user only, whatever
    the umask (explicit modes, not a process-wide umask, which races with other threads)."""

    def __init__(self, data_dir: Path, min_free_bytes: int = 0) -> None:
        self.data_dir = Path(data_dir)
        self.min_free_bytes = min_free_bytes
        self.studies_dir = self.data_dir / "studies"
        self.tmp_dir = self.data_dir / "tmp"
        self.superseded_dir = self.data_dir / "superseded"
        self.results_dir = self.data_dir / "results"

    def create(self) -> None:
        self.data_dir.mkdir(parents=True, exist_ok=True)
        for d in (self.data_dir, self.studies_dir, self.tmp_dir, self.superseded_dir, self.results_dir):
            private_dir(d)

    # -- names -------------------------------------------------------------------------------
    def instance_path(self, header: InstanceHeader) -> Path:
        for uid in (header.study_uid, header.series_uid, header.sop_uid):
            if not is_valid_uid(uid):  # second line of defence: never build a path from a bad UID
                raise BadUID(f"UID {uid[:80]!r} is not a valid DICOM UID")
        return self.studies_dir / header.study_uid / header.series_uid / f"{header.sop_uid}.dcm"

    def abs_path(self, relative: str) -> Path:
        return self.data_dir / relative

    def relative(self, path: Path) -> str:
        """The name the index records (relative, so a data dir can be moved)."""
        return str(path.relative_to(self.data_dir))

    def new_tmp_path(self) -> Path:
        return self.tmp_dir / f"{uuid.uuid4().hex}.part"

    def superseded_path(self, sop_uid: str, received_at: float, old_sha: str) -> Path:
        return self.superseded_dir / f"{sop_uid}.{int(received_at * 1000)}.{old_sha[:12]}.dcm"

    def overlay_dir(self, series_uid: str) -> Path:
        if not is_valid_uid(series_uid):
            raise InvalidDataset(f"UID {series_uid[:80]!r} is not a valid DICOM UID")
        path = self.results_dir / series_uid
        private_dir(path)
        return path

    def instance_files(self) -> Iterator[Path]:
        yield from sorted(self.studies_dir.glob("*/*/*.dcm"))

    def superseded_files(self) -> list[Path]:
        return sorted(self.superseded_dir.glob("*.dcm"))

    # -- durability ----------------------------------------------------------------------------
    def keep_superseded(self, existing: Path, keep: Path) -> None:
        """Give the old version its superseded name, durably. Hard-link first so a crash at any
        point leaves the old version at one of its names."""
        try:
            os.link(existing, keep)
        except OSError:
            shutil.copy2(existing, keep)
        fsync_dir(self.superseded_dir)

    def make_series_dir(self, final: Path) -> None:
        """Create ``studies/<study>/<series>/`` for a new instance, the new names durable."""
        if final.parent.is_dir():
            return
        private_dir(final.parent.parent)
        private_dir(final.parent)
        fsync_dir(final.parent.parent)
        fsync_dir(self.studies_dir)

    def make_private(self, relative: str) -> None:
        """Files written by others into the area (overlays from the analysers) become 0600."""
        try:
            os.chmod(self.data_dir / relative, 0o600)
        except FileNotFoundError:
            pass

    def clean_tmp(self) -> None:
        """Partial writes from a crash were never acknowledged; remove them."""
        for leftover in self.tmp_dir.glob("*.part"):
            try:
                leftover.unlink()
            except OSError as exc:
                log.warning("cannot remove leftover temporary file %s: %s", leftover, exc)

    # -- space -----------------------------------------------------------------------------------
    def free_bytes(self) -> int:
        return shutil.disk_usage(self.data_dir).free

    def check_space(self, incoming: int = 0) -> None:
        if self.min_free_bytes <= 0:
            return
        free = self.free_bytes()
        if free - incoming < self.min_free_bytes:
            raise LowDiskSpace(
                f"free space {free // (1 << 20)} MiB is below the watermark of "
                f"{self.min_free_bytes // (1 << 20)} MiB; refusing new instances"
            )
