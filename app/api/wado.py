"""WADO-RS (PS3.18 10.4): retrieve studies, series and instances as the stored Part 10 bytes
(``multipart/related; type="application/dicom"``), their metadata as DICOM JSON, and frames
as uncompressed pixel bytes (``multipart/related; type="application/octet-stream"``).

Instances are sent exactly as stored (the transfer syntax the modality used is named in each
part's ``transfer-syntax`` parameter): no transcoding, so the bytes equal the stored file.
Every retrieve of instances or metadata is audited with the user (a send, in audit terms).
"""

from __future__ import annotations

import logging
from pathlib import Path
from typing import Any

import numpy as np
import pydicom
from pydicom.uid import UID
from starlette.requests import Request
from starlette.responses import JSONResponse, Response, StreamingResponse

from app.api.context import ApiContext
from app.api.dicom_json import instance_metadata
from app.api.multipart import byte_parts, content_type, file_parts, new_boundary
from app.core.audit import API_RETRIEVED
from app.core.uids import is_valid_uid

log = logging.getLogger(__name__)

EXPLICIT_LE = "1.2.840.10008.1.2.1"


def _error(status: int, message: str) -> JSONResponse:
    return JSONResponse({"error": message}, status_code=status)


def _accepts(request: Request, media: str) -> bool:
    accept = request.headers.get("accept", "*/*").lower()
    return not accept or "*/*" in accept or media in accept or "multipart/related" in accept and f'type="{media}"' in accept


class Wado:
    def __init__(self, ctx: ApiContext) -> None:
        self.ctx = ctx
        self.store = ctx.store

    def _instances(self, request: Request) -> list[dict[str, Any]] | None:
        """The instance rows the path names, in series then instance order; None: not found."""
        p = request.path_params
        study_uid, series_uid, sop_uid = p.get("study_uid"), p.get("series_uid"), p.get("sop_uid")
        for uid in (study_uid, series_uid, sop_uid):
            if uid is not None and not is_valid_uid(uid):
                return None
        if study_uid is None or self.store.get_study(study_uid) is None:
            return None
        rows: list[dict[str, Any]] = []
        for se in self.store.list_series(study_uid):
            if series_uid is not None and se.series_uid != series_uid:
                continue
            found = sorted(self.store.instance_rows(se.series_uid),
                           key=lambda r: (r["instance_number"] is None, r["instance_number"] or 0, r["sop_uid"]))
            rows.extend(r for r in found if sop_uid is None or r["sop_uid"] == sop_uid)
        return rows or None

    def _audit(self, request: Request, what: str, rows: list[dict[str, Any]]) -> None:
        client = request.client.host if request.client else "?"
        self.ctx.audit.append(API_RETRIEVED, user=str(request.scope.get("user", "")), ip=client, what=what,
                              study_uid=rows[0]["study_uid"],
                              series=sorted({r["series_uid"] for r in rows}), instances=len(rows))

    def retrieve(self, request: Request) -> Response:
        if not _accepts(request, "application/dicom"):
            return _error(406, 'this server sends instances as multipart/related; type="application/dicom"')
        rows = self._instances(request)
        if rows is None:
            return _error(404, "not found")
        self._audit(request, "instances", rows)
        boundary = new_boundary()
        parts = [(f"application/dicom; transfer-syntax={r['transfer_syntax'] or EXPLICIT_LE}",
                  self.store.abs_path(r["path"])) for r in rows]
        return StreamingResponse(file_parts(parts, boundary), media_type=content_type("application/dicom", boundary))

    def metadata(self, request: Request) -> Response:
        rows = self._instances(request)
        if rows is None:
            return _error(404, "not found")
        self._audit(request, "metadata", rows)
        base = str(request.base_url).rstrip("/") + "/dicomweb"
        out = []
        for r in rows:
            path = self.store.abs_path(r["path"])
            url = f"{base}/studies/{r['study_uid']}/series/{r['series_uid']}/instances/{r['sop_uid']}"
            out.append(instance_metadata(path, url))
        return JSONResponse(out, media_type="application/dicom+json")

    def frames(self, request: Request) -> Response:
        rows = self._instances(request)
        if rows is None or len(rows) != 1:
            return _error(404, "not found")
        try:
            numbers = [int(n) for n in request.path_params["frames"].split(",")]
        except ValueError:
            return _error(400, "frame numbers must be whole numbers separated by commas")
        try:
            frames = read_frames(self.store.abs_path(rows[0]["path"]), numbers)
        except IndexError as exc:
            return _error(404, str(exc))
        except Exception as exc:  # a pixel codec that is not installed, damaged pixel data
            log.warning("cannot decode frames of %s: %s", rows[0]["sop_uid"], exc)
            return _error(406, f"cannot decode these frames: {exc}")
        boundary = new_boundary()
        part = f"application/octet-stream; transfer-syntax={EXPLICIT_LE}"
        return StreamingResponse(byte_parts([(part, f) for f in frames], boundary),
                                 media_type=content_type("application/octet-stream", boundary))


def read_frames(path: Path, numbers: list[int]) -> list[bytes]:
    """Frames (1-based) as uncompressed little-endian pixel bytes; native data is sliced, not decoded."""
    ds = pydicom.dcmread(path, force=True)
    n_frames = int(getattr(ds, "NumberOfFrames", 1) or 1)
    for n in numbers:
        if not 1 <= n <= n_frames:
            raise IndexError(f"frame {n} does not exist (the instance has {n_frames})")
    ts = UID(str(ds.file_meta.TransferSyntaxUID))
    if not ts.is_compressed and ds.BitsAllocated % 8 == 0:
        size = int(ds.Rows) * int(ds.Columns) * int(getattr(ds, "SamplesPerPixel", 1)) * (int(ds.BitsAllocated) // 8)
        data = ds.PixelData
        if ts == "1.2.840.10008.1.2.2" and ds.BitsAllocated > 8:  # big endian: swap to little
            data = np.frombuffer(data, dtype=f">u{ds.BitsAllocated // 8}").astype(f"<u{ds.BitsAllocated // 8}").tobytes()
        return [bytes(data[(n - 1) * size:n * size]) for n in numbers]
    pixels = ds.pixel_array
    if n_frames == 1:
        pixels = pixels[np.newaxis]
    return [np.ascontiguousarray(pixels[n - 1]).astype(pixels.dtype.newbyteorder("<")).tobytes() for n in numbers]
