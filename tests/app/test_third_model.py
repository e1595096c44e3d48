"""A third model is one spec: "toy-mr" (tests/support/toy_model.py), with a tiny pack built here,
flows through routing, the real pipeline on a real store, triage, the worklist and the overlay
loader, while the shipped models, whose packs are absent, are only unavailable."""

from __future__ import annotations

import time
from pathlib import Path

import pytest

from app.core.config import Config, ConfigError
from app.core.events import EventHub
from app.core.models import LabelVolumeOverlay, load_overlay
from app.core.pipeline import Pipeline
from app.core.router import SeriesInfo, route
from app.core.store import StudyStore
from app.core.worklist import build_rows
from tests.support import free_port
from tests.support.toy_model import TOY, build_toy_pack, mr_series, specs_with_toy, store_series


def test_a_third_model_flows_through_routing_analysis_triage_worklist_and_overlay(tmp_path: Path) -> None:
    specs = specs_with_toy()
    packs = tmp_path / "packs"
    build_toy_pack(packs)  # the only pack here: CheXNet and BLAST-CT are "not installed"
    config = Config(data_dir=tmp_path / "data", cache_dir=tmp_path / "cache", packs_dir=packs, min_free_mb=0,
                    thresholds={TOY: {"bright": 0.6}}).validate(specs.names)
    with pytest.raises(ConfigError, match="unknown model 'toy-mr'"):
        config.validate(specs.names[:2])  # the names come from the collection in use

    bright_paths, bright = mr_series(tmp_path / "in", "MR", bright=True, patient="BRIGHT")
    dark_paths, dark = mr_series(tmp_path / "in", "MR", bright=False, patient="DARK")
    ct_paths, ct = mr_series(tmp_path / "in", "CT", bright=False, patient="CT")
    import pydicom

    info = SeriesInfo.from_dataset(pydicom.dcmread(bright_paths[0], stop_before_pixels=True), 4)
    assert route(info, specs).model == TOY
    assert route(info).reason == "no model for MR images"  # the shipped collection has no MR model

    store = StudyStore(config.data_dir)
    for paths in (bright_paths, dark_paths, ct_paths):
        store_series(store, paths)
    pipeline = Pipeline(config, store, EventHub(), specs=specs)
    pipeline.models.load()
    status = {s.name: s for s in pipeline.models_status()}
    assert list(status) == ["chexnet", "blast-ct", TOY]
    assert status[TOY].state == "ready" and status[TOY].version == "0.1.0"
    assert status["chexnet"].state == status["blast-ct"].state == "unavailable"
    assert "not installed" in status["blast-ct"].message
    pipeline.run_until_idle()

    hit, miss, head = (store.get_result(uid) for uid in (bright, dark, ct))
    assert hit is not None and miss is not None and head is not None
    assert (hit.status, hit.model, hit.model_version, hit.validated) == ("done", TOY, "0.1.0", True)
    assert hit.findings["thresholds"] == {"bright": 0.6} and hit.findings["flagged"] == ["bright"]
    assert hit.priority == "urgent" and hit.summary == "bright 1.00"
    assert (miss.status, miss.priority, miss.summary) == ("done", "routine", "nothing bright")
    assert head.status == "failed" and head.summary.startswith("failed: blast-ct unavailable:")

    rows = {r.patient_id: r for r in build_rows(store)}
    assert [r.patient_id for r in build_rows(store)][0] == "BRIGHT"  # urgent sorts first
    assert (rows["BRIGHT"].priority, rows["BRIGHT"].validated, rows["BRIGHT"].status) == ("urgent", True, "ready")
    assert rows["BRIGHT"].summary == hit.summary and rows["DARK"].priority == "routine"
    assert rows["CT"].priority == "failed"

    assert hit.overlay_path == f"results/{bright}/bright.npz"
    overlay = load_overlay(specs, hit, config.data_dir)
    assert isinstance(overlay, LabelVolumeOverlay)
    assert overlay.class_keys == ("bright",) and overlay.classes[0].colour == (255, 128, 0)
    sops = [str(pydicom.dcmread(p, stop_before_pixels=True).SOPInstanceUID) for p in bright_paths]
    sliced = overlay.on_slices(list(reversed(sops)))  # the viewer's own slice order
    assert sliced.voxels["bright"] == [0, 16, 16, 0]
    assert load_overlay(specs, head, config.data_dir) is None  # a failed result has no overlay
    store.close()


def test_the_service_routes_to_the_third_model_it_is_given(tmp_path: Path) -> None:
    """The composition root takes the collection and passes it down to the pipeline's registry."""
    from app.service import Service

    specs = specs_with_toy()
    build_toy_pack(tmp_path / "packs")
    config = Config(data_dir=tmp_path / "data", cache_dir=tmp_path / "cache", packs_dir=tmp_path / "packs",
                    min_free_mb=0, port=free_port(), quiet_period_s=0.2).validate(specs.names)
    service = Service(config, specs=specs)
    try:
        assert service.pipeline.models.specs is specs
        paths, series = mr_series(tmp_path / "in", "MR", bright=True)
        store_series(service.store, paths)
        service.pipeline.start()
        end = time.monotonic() + 60
        while service.store.get_result(series) is None and time.monotonic() < end:
            time.sleep(0.05)
        result = service.store.get_result(series)
        assert result is not None and (result.model, result.priority) == (TOY, "urgent")
    finally:
        service.pipeline.stop()
        service.store.close()
