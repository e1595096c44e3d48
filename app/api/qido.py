"""QIDO-RS (PS3.18 10.6): search for studies, series and instances under ``/dicomweb``.

Matching runs on the index (patient, dates, UIDs, modalities, accession); the attributes
returned come from a representative stored header of each study or series (the first instance,
pixel data never read), so they are what the modality sent. Like Orthanc's plugin, series
answers carry the study's attributes too, and instance answers the series' and the study's.
"""

from __future__ import annotations

import fnmatch
import logging
from collections.abc import Callable
from typing import Any

from pydicom.dataset import Dataset
from starlette.requests import Request
from starlette.responses import JSONResponse, Response

from app.api.context import ApiContext
from app.api.dicom_json import (
    INSTANCE_KEYWORDS,
    SERIES_KEYWORDS,
    STUDY_KEYWORDS,
    HeaderJsonCache,
    parse_tag,
    pick,
    read_header,
    to_json,
)
from app.core.store.records import SeriesRecord, StudyRecord

log = logging.getLogger(__name__)

DICOM_JSON = "application/dicom+json"
_RESERVED = {"limit", "offset", "includefield", "fuzzymatching", "token"}


class BadQuery(ValueError):
    pass


def _uid_list(value: str) -> set[str]:
    return {v.strip() for v in value.replace("\\", ",").split(",") if v.strip()}


def _wild(pattern: str, value: str, fold: bool = False) -> bool:
    if fold:
        pattern, value = pattern.upper(), value.upper()
    if "*" in pattern or "?" in pattern:
        return fnmatch.fnmatchcase(value, pattern)
    return value == pattern


def _date_range(pattern: str, value: str) -> bool:
    if "-" not in pattern:
        return value == pattern
    low, _, high = pattern.partition("-")
    return bool(value) and (not low or value >= low) and (not high or value <= high)


def _values(request: Request, name: str) -> list[str]:
    return [v for v in request.query_params.getlist(name) if v != ""]


def _study_filters(request: Request) -> list[Callable[[StudyRecord], bool]]:
    f: list[Callable[[StudyRecord], bool]] = []
    for key, value in request.query_params.multi_items():
        if key in _RESERVED or value == "":
            continue
        name = key if parse_tag(key) is None or len(key) != 8 else _keyword(key)
        if name == "StudyInstanceUID":
            uids = _uid_list(value)
            f.append(lambda s, u=uids: s.study_uid in u)
        elif name == "PatientID":
            f.append(lambda s, p=value: _wild(p, s.patient_id))
        elif name == "PatientName":
            f.append(lambda s, p=value: _wild(p, s.patient_name, fold=True))
        elif name == "AccessionNumber":
            f.append(lambda s, p=value: _wild(p, s.accession))
        elif name == "StudyDate":
            f.append(lambda s, p=value: _date_range(p, s.study_date))
        elif name == "ModalitiesInStudy":
            wanted = _uid_list(value)
            f.append(lambda s, w=wanted: bool(w & set(s.modalities.replace("\\", ",").split(","))))
        elif name == "StudyDescription":
            f.append(lambda s, p=value: _wild(p, s.description, fold=True))
    return f


def _keyword(tag_hex: str) -> str:
    from pydicom.datadict import keyword_for_tag

    tag = parse_tag(tag_hex)
    return keyword_for_tag(tag) if tag is not None else tag_hex


def _includes(request: Request) -> tuple[set[int], bool]:
    extra: set[int] = set()
    everything = False
    for value in _values(request, "includefield"):
        for name in value.split(","):
            if name.strip().lower() == "all":
                everything = True
                continue
            tag = parse_tag(name)
            if tag is None:
                raise BadQuery(f"includefield {name!r} is not an attribute keyword or tag")
            extra.add(tag)
    return extra, everything


def _page(request: Request, items: list[Any]) -> list[Any]:
    try:
        offset = int(request.query_params.get("offset", "0") or 0)
        limit_text = request.query_params.get("limit")
        limit = int(limit_text) if limit_text else None
    except ValueError:
        raise BadQuery("limit and offset must be whole numbers") from None
    if offset < 0 or (limit is not None and limit < 0):
        raise BadQuery("limit and offset must be >= 0")
    return items[offset:] if limit is None else items[offset:offset + limit]


class Qido:
    def __init__(self, ctx: ApiContext) -> None:
        self.ctx = ctx
        self.store = ctx.store
        self.headers = HeaderJsonCache()

    def _first_path(self, series_uid: str):  # type: ignore[no-untyped-def]
        paths = self.store.series_files(series_uid)
        return paths[0] if paths else None

    def _base(self, request: Request) -> str:
        return str(request.base_url).rstrip("/") + "/dicomweb"

    # -- studies ---------------------------------------------------------------------------------
    def study_json(self, request: Request, study: StudyRecord, extra: set[int]) -> dict[str, Any] | None:
        series = self.store.list_series(study.study_uid)
        out: dict[str, Any] = {}
        for s in series:
            path = self._first_path(s.series_uid)
            if path is not None:
                out = self.headers.picked(path, STUDY_KEYWORDS, extra)
                break
        ds = Dataset()
        ds.StudyInstanceUID = study.study_uid
        ds.ModalitiesInStudy = sorted({s.modality for s in series if s.modality})
        ds.NumberOfStudyRelatedSeries = len(series)
        ds.NumberOfStudyRelatedInstances = study.n_instances
        ds.add_new(0x00081190, "UR", f"{self._base(request)}/studies/{study.study_uid}")
        out.update(to_json(ds))
        return out

    def search_studies(self, request: Request) -> Response:
        try:
            extra, _ = _includes(request)
            filters = _study_filters(request)
            studies = [s for s in self.store.list_studies() if all(f(s) for f in filters)]
            studies.sort(key=lambda s: s.first_received)
            page = _page(request, studies)
        except BadQuery as exc:
            return JSONResponse({"error": str(exc)}, status_code=400)
        out = [j for s in page if (j := self.study_json(request, s, extra)) is not None]
        return JSONResponse(out, media_type=DICOM_JSON)

    # -- series ----------------------------------------------------------------------------------
    def series_json(self, request: Request, series: SeriesRecord, extra: set[int]) -> dict[str, Any]:
        path = self._first_path(series.series_uid)
        out = self.headers.picked(path, SERIES_KEYWORDS + STUDY_KEYWORDS, extra) if path is not None else {}
        ds = Dataset()
        ds.SeriesInstanceUID = series.series_uid
        ds.StudyInstanceUID = series.study_uid
        ds.NumberOfSeriesRelatedInstances = series.n_instances
        ds.add_new(0x00081190, "UR", f"{self._base(request)}/studies/{series.study_uid}/series/{series.series_uid}")
        out.update(to_json(ds))
        return out

    def _series_matches(self, request: Request, s: SeriesRecord) -> bool:
        for key, value in request.query_params.multi_items():
            if key in _RESERVED or value == "":
                continue
            name = _keyword(key) if len(key) == 8 and parse_tag(key) is not None else key
            if name == "SeriesInstanceUID" and s.series_uid not in _uid_list(value):
                return False
            if name == "Modality" and s.modality not in _uid_list(value):
                return False
            if name == "SeriesNumber" and str(s.series_number) != value:
                return False
            if name == "StudyInstanceUID" and s.study_uid not in _uid_list(value):
                return False
        return True

    def _studies_for(self, request: Request, study_uid: str | None) -> list[StudyRecord]:
        if study_uid is not None:
            study = self.store.get_study(study_uid)
            return [study] if study is not None else []
        filters = _study_filters(request)
        return [s for s in self.store.list_studies() if all(f(s) for f in filters)]

    def search_series(self, request: Request) -> Response:
        study_uid = request.path_params.get("study_uid")
        try:
            extra, _ = _includes(request)
            series = [se for st in sorted(self._studies_for(request, study_uid), key=lambda s: s.first_received)
                      for se in self.store.list_series(st.study_uid) if self._series_matches(request, se)]
            page = _page(request, series)
        except BadQuery as exc:
            return JSONResponse({"error": str(exc)}, status_code=400)
        return JSONResponse([self.series_json(request, s, extra) for s in page], media_type=DICOM_JSON)

    # -- instances -------------------------------------------------------------------------------
    def search_instances(self, request: Request) -> Response:
        study_uid = request.path_params.get("study_uid")
        series_uid = request.path_params.get("series_uid")
        try:
            extra, everything = _includes(request)
            wanted_sops = _uid_list(request.query_params.get("SOPInstanceUID", ""))
            wanted_classes = _uid_list(request.query_params.get("SOPClassUID", ""))
            wanted_number = request.query_params.get("InstanceNumber")
            rows: list[dict[str, Any]] = []
            for st in sorted(self._studies_for(request, study_uid), key=lambda s: s.first_received):
                for se in self.store.list_series(st.study_uid):
                    if (series_uid is not None and se.series_uid != series_uid) or not self._series_matches(request, se):
                        continue
                    found = sorted(self.store.instance_rows(se.series_uid),
                                   key=lambda r: (r["instance_number"] is None, r["instance_number"] or 0, r["sop_uid"]))
                    rows.extend(r for r in found
                                if (not wanted_sops or r["sop_uid"] in wanted_sops)
                                and (not wanted_classes or r["sop_class_uid"] in wanted_classes)
                                and (not wanted_number or str(r["instance_number"]) == wanted_number))
            page = _page(request, rows)
        except BadQuery as exc:
            return JSONResponse({"error": str(exc)}, status_code=400)
        base = self._base(request)
        out = []
        for r in page:
            header = read_header(self.store.abs_path(r["path"]))
            if everything:
                ds = header
                for tag in list(ds.keys()):
                    if tag in (0x7FE00010, 0x7FE00008, 0x7FE00009):
                        del ds[tag]
            else:
                ds = pick(header, INSTANCE_KEYWORDS + SERIES_KEYWORDS + STUDY_KEYWORDS, extra)
            ds.add_new(0x00081190, "UR",
                       f"{base}/studies/{r['study_uid']}/series/{r['series_uid']}/instances/{r['sop_uid']}")
            out.append(to_json(ds))
        return JSONResponse(out, media_type=DICOM_JSON)
