"""The composition root routes the node's hub events: instances and association ends to the
readiness tracker, disk-space changes to the node status; a stopped service stops listening."""

from __future__ import annotations

import time
from pathlib import Path

import numpy as np
from pydicom.uid import generate_uid

from app.core.config import Config
from app.core.events import AssociationEnded, DiskSpaceChanged, EventHub, NodeStatus, SeriesReady
from app.service import Service
from dicom_node.scu import send_files
from tests.support import free_port
from tests.support.dicom_factory import make_ct_slice, write


def test_release_event_makes_the_series_ready_and_space_events_become_node_status(data_dir: Path,
                                                                                   tmp_path: Path) -> None:
    port = free_port()
    hub = EventHub()
    config = Config(data_dir=data_dir, cache_dir=tmp_path / "cache", packs_dir=tmp_path / "no-packs", port=port,
                    quiet_period_s=60.0, min_free_mb=0).validate()  # only the release can make it ready in time
    service = Service(config, hub)
    events: list[object] = []
    hub.subscribe(events.append)

    def statuses() -> list[NodeStatus]:
        return [e for e in events if isinstance(e, NodeStatus)]

    assert service.start()
    try:
        study, series = generate_uid(), generate_uid()
        files = [write(make_ct_slice(np.zeros((16, 16), np.int16), (0, 0, float(i)), instance=i + 1,
                                     study_uid=study, series_uid=series), tmp_path / "in") for i in range(2)]
        assert send_files("127.0.0.1", port, "FIRSTLOOK", files) == [0, 0]
        end = time.monotonic() + 10
        while not any(isinstance(e, SeriesReady) for e in events) and time.monotonic() < end:
            time.sleep(0.02)
        assert [e for e in events if isinstance(e, SeriesReady)] == [SeriesReady(study, series, "association released")]
        assert [e.released for e in events if isinstance(e, AssociationEnded)] == [True]

        hub.publish(DiskSpaceChanged(True, "free space 3 MiB is below the watermark; refusing new instances"))
        assert statuses()[-1] == NodeStatus(True, f"FIRSTLOOK on 127.0.0.1:{port} - REFUSING new instances: "
                                                  "free space 3 MiB is below the watermark")
        hub.publish(DiskSpaceChanged(False, ""))
        assert statuses()[-1] == NodeStatus(True, f"FIRSTLOOK on 127.0.0.1:{port}")
    finally:
        service.stop()
    assert statuses()[-1] == NodeStatus(False, "stopped")
    n_status = len(statuses())
    hub.publish(DiskSpaceChanged(True, "disk full"))  # e.g. a later service's node, on the same hub
    assert len(statuses()) == n_status  # the stopped service no longer turns node events into status
