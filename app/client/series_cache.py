"""A series' DICOM files from the service by WADO-RS, kept in a local cache so re-opening is
instant and the viewer reads files exactly as it does in the embedded mode.

Layout mirrors the store: ``<root>/studies/<study>/<series>/<sop>.dcm``. A file is named by
the SOP Instance UID read from its own header (never from the URL), and a series counts as
cached only when every SOP Instance UID the service lists for it has its file.
"""

from __future__ import annotations

import io
import logging
import os
from collections.abc import Iterable, Iterator
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


class SeriesCache:
    def __init__(self, root: Path, api: ApiClient) -> None:
        self.root = private_dir(Path(root))
        self.api = api

    def series_dir(self, study_uid: str, series_uid: str) -> Path:
        if not (is_valid_uid(study_uid) and is_valid_uid(series_uid)):
            raise CacheError(f"not a DICOM UID: {study_uid!r} / {series_uid!r}")
        return self.root / "studies" / study_uid / series_uid

    def cached(self, study_uid: str, series_uid: str, sop_uids: list[str]) -> list[Path] | None:
        folder = self.series_dir(study_uid, series_uid)
        paths = [folder / f"{sop}.dcm" for sop in sop_uids]
        return paths if all(p.is_file() for p in paths) else None

    def files(self, study_uid: str, series_uid: str, sop_uids: list[str]) -> list[Path]:
        """The series' files in ``sop_uids`` order; fetched by WADO-RS unless all are cached."""
        hit = self.cached(study_uid, series_uid, sop_uids)
        if hit is not None:
            return hit
        folder = self.series_dir(study_uid, series_uid)
        folder.mkdir(parents=True, exist_ok=True)
        wanted = set(sop_uids)
        received = 0
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
                received += 1
        hit = self.cached(study_uid, series_uid, sop_uids)
        if hit is None:
            missing = [s for s in sop_uids if not (folder / f"{s}.dcm").is_file()]
            raise CacheError(f"the service sent {received} of {len(sop_uids)} instances of series {series_uid}; "
                             f"missing {missing[:3]}")
        log.info("series %s: %d instances fetched by WADO-RS into %s", series_uid, received, folder)
        return hit


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
