"""The attached desktop's image cache against a real headless service (no models needed): an
instance re-sent under the same SOP Instance UID is fetched again, the cache stays under its
limit by removing the series opened longest ago, and a series opened a moment ago is never
removed (a viewer may still be reading it)."""

from __future__ import annotations

import hashlib
import time
from pathlib import Path

import numpy as np
import pytest
from pydicom.uid import generate_uid

from app.client.api_client import ApiClient
from app.client.remote_store import RemoteStore
from app.client.series_cache import MANIFEST, SeriesCache
from tests.support.api_service import HeadlessService
from tests.support.dicom_factory import make_ct_slice, write


def _series(directory: Path, n: int = 3, value: int = 40) -> tuple[str, str, list[Path]]:
    study, series = generate_uid(), generate_uid()
    files = [write(make_ct_slice(np.full((64, 64), value + k, np.int16), (0.0, 0.0, 5.0 * k), instance=k + 1,
                                 study_uid=study, series_uid=series), directory / series) for k in range(n)]
    return study, series, files


def _service_file(service: HeadlessService, sop: str) -> bytes:
    (path,) = (service.data_dir / "studies").rglob(f"{sop}.dcm")
    return path.read_bytes()


@pytest.fixture()
def service(tmp_path: Path):
    svc = HeadlessService(tmp_path / "server").start()
    yield svc
    svc.stop()


def _open(store: RemoteStore, study: str, series: str) -> list[Path]:
    store.forget(study)
    assert [s.series_uid for s in store.list_series(study)] == [series]
    return store.series_files(series)


def test_a_replaced_instance_is_fetched_again(tmp_path: Path, service: HeadlessService):
    study, series, files = _series(tmp_path / "send")
    service.storescu(*files)
    api = ApiClient(service.url, service.token())
    store = RemoteStore(api, tmp_path / "cache", lambda: 0)
    try:
        paths = _open(store, study, series)
        sops = [p.stem for p in paths]
        assert [p.read_bytes() for p in paths] == [_service_file(service, s) for s in sops]
        manifest = store.images.series_dir(study, series) / MANIFEST
        fetched = manifest.stat().st_mtime_ns
        assert _open(store, study, series) == paths and manifest.stat().st_mtime_ns == fetched   # a hit: no fetch

        # The modality re-sends slice 2 with other pixels under the same SOP Instance UID.
        ds = make_ct_slice(np.full((64, 64), 900, np.int16), (0.0, 0.0, 5.0), instance=2, study_uid=study,
                           series_uid=series)
        ds.SOPInstanceUID = ds.file_meta.MediaStorageSOPInstanceUID = sops[1]
        service.storescu(write(ds, tmp_path / "resend"))
        new = _service_file(service, sops[1])
        assert new != paths[1].read_bytes()
        again = _open(store, study, series)
        assert again == paths and again[1].read_bytes() == new
        assert manifest.stat().st_mtime_ns != fetched
        held = RemoteStore(api, tmp_path / "cache", lambda: 0).images   # what a new desktop session finds
        assert held.cached(study, series, sops, [hashlib.sha256(_service_file(service, s)).hexdigest()
                                                 for s in sops]) == paths

        # A cache written before the manifests existed (the previous release): fetched once, then a hit.
        manifest.unlink()
        assert _open(store, study, series) == paths and manifest.is_file()
    finally:
        api.close()


def test_the_cache_keeps_under_its_limit_least_recently_opened_first(tmp_path: Path, service: HeadlessService):
    sent = [_series(tmp_path / "send", value=10 * i) for i in range(3)]
    service.storescu(*(f for _, _, files in sent for f in files))
    api = ApiClient(service.url, service.token())
    store = RemoteStore(api, tmp_path / "cache", lambda: 0)
    cache: SeriesCache = store.images
    try:
        (a_study, a, _), (b_study, b, _), (c_study, c, _) = sent
        _open(store, a_study, a)
        one = cache.entries()[0].size
        assert one == sum(p.stat().st_size for p in cache.series_dir(a_study, a).glob("*.dcm"))
        cache.max_bytes = 2 * one + one // 2   # room for two series
        cache.keep_recent_s = 0.0
        time.sleep(0.05)
        _open(store, b_study, b)
        time.sleep(0.05)
        _open(store, a_study, a)                 # A opened again: now B is the least recent
        time.sleep(0.05)
        _open(store, c_study, c)
        assert cache.series_dir(a_study, a).is_dir() and cache.series_dir(c_study, c).is_dir()
        assert not cache.series_dir(b_study, b).exists() and not (cache.root / "studies" / b_study).exists()
        assert sum(e.size for e in cache.entries()) <= cache.max_bytes

        # Re-opening an evicted series fetches it again (and the least recent one, A, goes).
        paths = _open(store, b_study, b)
        assert [p.read_bytes() for p in paths] == [_service_file(service, p.stem) for p in paths]
        assert not cache.series_dir(a_study, a).exists()

        # Series opened in the last minutes stay even when over the limit.
        cache.keep_recent_s = 600.0
        cache.max_bytes = one // 2
        _open(store, a_study, a)
        assert all(cache.series_dir(st, se).is_dir() for st, se in ((a_study, a), (b_study, b), (c_study, c)))
    finally:
        api.close()
