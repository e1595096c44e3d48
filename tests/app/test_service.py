"""The composition root: node -> store -> readiness -> job queue -> pipeline, and its status."""

from __future__ import annotations

import socket
import time
from pathlib import Path

import numpy as np
from pydicom.uid import generate_uid

from app.core.config import Config
from app.core.events import InstanceStored, NodeStatus, SeriesReady
from app.service import Service
from dicom_node.scu import send_files
from tests.support import free_port
from tests.support.dicom_factory import make_ct_slice, write


def config_for(data_dir: Path, tmp_path: Path, port: int) -> Config:
    return Config(data_dir=data_dir, cache_dir=tmp_path / "cache", packs_dir=tmp_path / "no-packs", port=port,
                  quiet_period_s=0.5, min_free_mb=0).validate()


def test_series_ready_becomes_a_job_and_events(data_dir: Path, tmp_path: Path) -> None:
    port = free_port()
    service = Service(config_for(data_dir, tmp_path, port))
    events: list[object] = []
    service.hub.subscribe(events.append)
    assert service.start()
    try:
        study, series = generate_uid(), generate_uid()
        files = [write(make_ct_slice(np.zeros((32, 32), np.int16), (0, 0, float(i)), instance=i + 1,
                                     study_uid=study, series_uid=series), tmp_path / "in") for i in range(3)]
        assert send_files("127.0.0.1", port, "FIRSTLOOK", files) == [0, 0, 0]
        end = time.monotonic() + 5
        while not any(isinstance(e, SeriesReady) for e in events) and time.monotonic() < end:
            time.sleep(0.02)
        ready = [e for e in events if isinstance(e, SeriesReady)]
        assert ready == [SeriesReady(study, series, "association released")]
        assert len([e for e in events if isinstance(e, InstanceStored)]) == 3
        assert service.store.get_series(series).ready_at is not None
        assert service.store.job_state(series) is not None  # queued for the pipeline (persistent)
        status = [e for e in events if isinstance(e, NodeStatus)]
        assert status[0].listening and f"127.0.0.1:{port}" in status[0].message
    finally:
        service.stop()
    assert not (data_dir / "service.running").exists()


def test_port_in_use_is_reported_not_raised(data_dir: Path, tmp_path: Path) -> None:
    with socket.socket() as busy:
        busy.bind(("127.0.0.1", 0))
        busy.listen()
        port = busy.getsockname()[1]
        service = Service(config_for(data_dir, tmp_path, port))
        events: list[object] = []
        service.hub.subscribe(events.append)
        try:
            assert service.start() is False
            (status,) = [e for e in events if isinstance(e, NodeStatus)]
            assert not status.listening and str(port) in status.message and "in use" in status.message.lower()
        finally:
            service.stop()


def test_unclean_stop_is_detected_and_files_adopted(data_dir: Path, tmp_path: Path) -> None:
    port = free_port()
    service = Service(config_for(data_dir, tmp_path, port))
    assert service.start()
    files = [write(make_ct_slice(np.zeros((16, 16), np.int16), (0, 0, float(i)), instance=i + 1),
                   tmp_path / "in") for i in range(2)]
    assert send_files("127.0.0.1", port, "FIRSTLOOK", files) == [0, 0]
    service.scp.stop()
    service.readiness.stop()
    service.pipeline.stop()
    # crash: the marker stays, and the last index commit never reached the disk
    import sqlite3

    conn = sqlite3.connect(data_dir / "index.sqlite3")
    conn.execute("DELETE FROM instances WHERE instance_number=2")
    conn.commit()
    conn.close()
    service.store.close()
    assert (data_dir / "service.running").exists()
    again = Service(config_for(data_dir, tmp_path, free_port()))
    assert again.start()
    try:
        assert again.store.verify() == []
        assert len(again.store.instance_rows()) == 2
    finally:
        again.stop()
