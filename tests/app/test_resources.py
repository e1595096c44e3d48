"""Resources: the free-space watermark reaches the log and the status bar; large studies stream
to disk (the 2,000-slice measurement is bench/bench_large_study.py)."""

from __future__ import annotations

import logging
import os

os.environ.setdefault("QT_QPA_PLATFORM", "offscreen")

from pathlib import Path

import numpy as np
import pytest

from app.core.config import Config
from app.core.events import NodeStatus
from app.service import Service
from dicom_node.scp import STATUS_OUT_OF_RESOURCES
from dicom_node.scu import send_files
from tests.support import free_port
from tests.support.dicom_factory import make_ct_slice, write


def test_low_disk_space_is_logged_and_shown_in_the_node_status(data_dir: Path, tmp_path: Path,
                                                               caplog: pytest.LogCaptureFixture) -> None:
    port = free_port()
    config = Config(data_dir=data_dir, cache_dir=tmp_path / "cache", packs_dir=tmp_path / "no-packs", port=port,
                    quiet_period_s=0.5, min_free_mb=1 << 30).validate()  # a petabyte: always below it
    service = Service(config)
    events: list[NodeStatus] = []
    service.hub.subscribe(lambda e: events.append(e) if isinstance(e, NodeStatus) else None)
    files = [write(make_ct_slice(np.zeros((16, 16), np.int16), (0, 0, float(i)), instance=i + 1), tmp_path / "in")
             for i in range(3)]
    with caplog.at_level(logging.WARNING):
        assert service.start()
        try:
            # said at start, before any instance is refused
            assert events[-1].listening and "REFUSING new instances" in events[-1].message
            assert "below the watermark" in events[-1].message and f"127.0.0.1:{port}" in events[-1].message
            n_status = len(events)
            assert send_files("127.0.0.1", port, "FIRSTLOOK", files[:2]) == [STATUS_OUT_OF_RESOURCES] * 2
            assert len(events) == n_status  # once per change, not once per refused instance
            refusing = [r for r in caplog.records if "REFUSING NEW INSTANCES" in r.getMessage()]
            assert len(refusing) == 1 and refusing[0].levelno == logging.ERROR
            assert "below the watermark" in refusing[0].getMessage()
            service.store.min_free_bytes = 0  # space freed
            assert send_files("127.0.0.1", port, "FIRSTLOOK", files) == [0, 0, 0]
            assert events[-1].listening and events[-1].message == f"FIRSTLOOK on 127.0.0.1:{port}"
            assert any("accepting instances" in r.getMessage() for r in caplog.records)
        finally:
            service.stop()


def test_status_bar_shows_the_refusal(qtbot) -> None:  # type: ignore[no-untyped-def]
    from ui.status_bar import FirstLookStatusBar

    bar = FirstLookStatusBar()
    qtbot.addWidget(bar)
    bar.set_node(True, "FIRSTLOOK on 127.0.0.1:11112 - REFUSING new instances: free space 312 MiB is below the "
                       "watermark of 500 MiB; refusing new instances")
    text = bar.node_label.text()
    assert "REFUSING new instances" in text and "312 MiB" in text and "#ef6c00" in text
    bar.set_node(True, "FIRSTLOOK on 127.0.0.1:11112")
    assert "#2e7d32" in bar.node_label.text()


def test_disk_full_enters_the_same_state(data_dir: Path, tmp_path: Path) -> None:
    """ENOSPC on write is a LowDiskSpace too (shown like the watermark), a plain write error is not."""
    import errno

    from app.core.store import LowDiskSpace, OutOfResources
    from app.core.store.storage_area import write_failure

    full = write_failure(OSError(errno.ENOSPC, "No space left on device"), None)
    other = write_failure(OSError(errno.EIO, "I/O error"), None)
    assert isinstance(full, LowDiskSpace) and "disk full" in str(full)
    assert isinstance(other, OutOfResources) and not isinstance(other, LowDiskSpace)


def test_a_large_series_streams_to_disk_without_accumulating(data_dir: Path, tmp_path: Path) -> None:
    """400 slices of 128 KiB (50 MiB) from DCMTK storescu over one association: the Python heap
    of the receiving node (tracemalloc, the sender is another process) never holds more than a
    few slices, and nothing is left allocated after the series."""
    import subprocess
    import tracemalloc

    from pydicom.uid import generate_uid

    from tests.support.node_helpers import dcmtk, dcmtk_env, start_node, stop_node

    study, series = generate_uid(), generate_uid()
    rng = np.random.default_rng(0)
    for i in range(400):
        write(make_ct_slice(rng.integers(-1000, 1000, (256, 256)).astype(np.int16), (0, 0, float(i)), instance=i + 1,
                            study_uid=study, series_uid=series), tmp_path / "big")
    sent_mib = sum(p.stat().st_size for p in (tmp_path / "big").iterdir()) / (1 << 20)
    node = start_node(data_dir)
    try:
        tracemalloc.start()
        done = subprocess.run([dcmtk("storescu"), "-aec", node.ae, "+sd", "127.0.0.1", str(node.port),
                               str(tmp_path / "big")], capture_output=True, text=True, timeout=300, env=dcmtk_env())
        current, peak = tracemalloc.get_traced_memory()
        tracemalloc.stop()
        assert done.returncode == 0, done.stderr
        assert len(node.store.instance_rows()) == 400
        assert sent_mib > 45
        assert peak < 12 << 20, f"peak Python heap {peak >> 20} MiB while receiving {sent_mib:.0f} MiB"
        assert current < 4 << 20
    finally:
        stop_node(node)


def test_status_follows_free_space_without_any_instance(data_dir: Path, tmp_path: Path) -> None:
    """Space freed (or used up) while nobody sends: the periodic check updates the status."""
    import time

    port = free_port()
    config = Config(data_dir=data_dir, cache_dir=tmp_path / "cache", packs_dir=tmp_path / "no-packs", port=port,
                    min_free_mb=0).validate()
    service = Service(config)
    service.space_check_s = 0.1
    events: list[NodeStatus] = []
    service.hub.subscribe(lambda e: events.append(e) if isinstance(e, NodeStatus) else None)
    assert service.start()
    try:
        assert "REFUSING" not in events[-1].message
        service.store.min_free_bytes = 1 << 60  # the disk fills up (another program)
        end = time.monotonic() + 10
        while "REFUSING" not in events[-1].message and time.monotonic() < end:
            time.sleep(0.02)
        assert "REFUSING new instances" in events[-1].message
        service.store.min_free_bytes = 0  # freed
        while "REFUSING" in events[-1].message and time.monotonic() < end:
            time.sleep(0.02)
        assert events[-1].message == f"FIRSTLOOK on 127.0.0.1:{port}"
    finally:
        service.stop()


def test_a_large_instance_is_held_once_not_twice(data_dir: Path, tmp_path: Path) -> None:
    """One 48 MiB multi-frame instance from storescu: the node's Python heap peaks at about the
    instance (pynetdicom's receive buffer), not twice it (the File Meta used to be joined to a
    copy of the whole dataset)."""
    import subprocess
    import tracemalloc

    from tests.support.node_helpers import dcmtk, dcmtk_env, start_node, stop_node

    ds = make_ct_slice(np.zeros((512, 512), np.int16), (0, 0, 0))
    ds.NumberOfFrames = 96
    ds.PixelData = np.random.default_rng(0).integers(-1000, 1000, (96, 512, 512)).astype(np.int16).tobytes()
    path = write(ds, tmp_path / "big")
    size = path.stat().st_size
    node = start_node(data_dir)
    try:
        tracemalloc.start()
        done = subprocess.run([dcmtk("storescu"), "-aec", node.ae, "127.0.0.1", str(node.port), str(path)],
                              capture_output=True, text=True, timeout=300, env=dcmtk_env())
        _, peak = tracemalloc.get_traced_memory()
        tracemalloc.stop()
        assert done.returncode == 0, done.stderr
        (row,) = node.store.instance_rows()
        import pydicom

        assert pydicom.dcmread(data_dir / row["path"]).PixelData == ds.PixelData
        assert node.store.verify() == []
        assert peak < 1.5 * size, f"peak Python heap {peak >> 20} MiB for a {size >> 20} MiB instance"
    finally:
        stop_node(node)
