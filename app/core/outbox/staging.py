"""Outgoing objects as Part 10 files under ``<data_dir>/outbox/<study>/<sop>.dcm``, written
durably (temporary file, fsync, rename, directory fsync) before their rows are committed.

A crash after the files are written but before the result's transaction leaves files no row
names: ``remove_orphans`` deletes them at the next start (the analysis is re-run and builds
new objects; the orphans were never queued, so they were never sent).
"""

from __future__ import annotations

import logging
import os
import uuid
from pathlib import Path
from typing import Iterable

import pydicom

from app.core.store.storage_area import private_dir
from app.core.uids import is_valid_uid

log = logging.getLogger(__name__)

OUTBOX_DIR = "outbox"


def object_path(data_dir: Path, study_uid: str, sop_uid: str) -> Path:
    if not (is_valid_uid(study_uid) and is_valid_uid(sop_uid)):
        raise ValueError(f"not a DICOM UID: {study_uid!r} / {sop_uid!r}")
    return Path(data_dir) / OUTBOX_DIR / study_uid / f"{sop_uid}.dcm"


def write_durably(dataset: pydicom.Dataset, target: Path, tmp_dir: Path) -> int:
    """Write ``dataset`` (with its File Meta) to ``target``; returns the size in bytes."""
    private_dir(target.parent.parent)  # outbox/, then outbox/<study>/: 0700 whatever the umask
    private_dir(target.parent)
    tmp = Path(tmp_dir) / f"{uuid.uuid4().hex}.part"
    try:
        fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_CLOEXEC, 0o600)
        with os.fdopen(fd, "wb") as fh:
            pydicom.dcmwrite(fh, dataset, enforce_file_format=True)
            fh.flush()
            os.fsync(fh.fileno())
        os.replace(tmp, target)
    finally:
        tmp.unlink(missing_ok=True)
    dir_fd = os.open(target.parent, os.O_RDONLY | os.O_DIRECTORY)
    try:
        os.fsync(dir_fd)
    finally:
        os.close(dir_fd)
    return target.stat().st_size


def remove_orphans(data_dir: Path, known: Iterable[str]) -> int:
    """Delete outbox files no row names (``known``: paths relative to the data dir)."""
    root = Path(data_dir) / OUTBOX_DIR
    if not root.is_dir():
        return 0
    keep = set(known)
    removed = 0
    for path in root.rglob("*.dcm"):
        if str(path.relative_to(data_dir)) not in keep:
            path.unlink(missing_ok=True)
            removed += 1
    if removed:
        log.warning("removed %d outgoing object file(s) whose result was never committed (interrupted analysis)",
                    removed)
    return removed
