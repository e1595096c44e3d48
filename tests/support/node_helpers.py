"""Helpers for the DICOM node tests: a running SCP on 127.0.0.1, DCMTK tools, test files."""

from __future__ import annotations

import os
import shutil
import subprocess
import threading
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable, Iterator

import pydicom
import pytest
from pydicom.data import get_testdata_file

from app.core.config import Config
from app.core.events import AssociationEnded, Event, EventHub, InstanceStored
from app.core.readiness import SeriesReadinessTracker
from app.core.store import StudyStore
from dicom_node.scp import StorageSCP
from tests.support import free_port

# pydicom's bundled files, one per transfer syntax the node must accept. Chosen so that
# no two share a SOP Instance UID (several of pydicom's files do).
PYDICOM_FILES: dict[str, str] = {
    "CT_small.dcm": "1.2.840.10008.1.2.1",                 # explicit VR LE
    "MR_small_implicit.dcm": "1.2.840.10008.1.2",          # implicit VR LE
    "image_dfl.dcm": "1.2.840.10008.1.2.1.99",             # deflated explicit VR LE
    "SC_rgb_jpeg_dcmtk.dcm": "1.2.840.10008.1.2.4.50",     # JPEG baseline
    "JPEG-lossy.dcm": "1.2.840.10008.1.2.4.51",            # JPEG extended (12-bit)
    "SC_rgb_jpeg_gdcm.dcm": "1.2.840.10008.1.2.4.70",      # JPEG lossless SV1
    "MR_small_jpeg_ls_lossless.dcm": "1.2.840.10008.1.2.4.80",  # JPEG-LS lossless
    "MR_small_jp2klossless.dcm": "1.2.840.10008.1.2.4.90",  # JPEG 2000 lossless
    "JPEG2000.dcm": "1.2.840.10008.1.2.4.91",              # JPEG 2000 (lossy)
    "SC_rgb_rle.dcm": "1.2.840.10008.1.2.5",               # RLE lossless
}


def pydicom_file(name: str) -> Path:
    path = get_testdata_file(name, download=False)
    assert path, f"pydicom test file {name} is not installed"
    return Path(path)


def fresh_uids(src: Path, dst_dir: Path, **overrides: str) -> Path:
    """Copy a test file with new Study/Series/SOP UIDs (pixel data and encoding untouched)."""
    ds = pydicom.dcmread(src)
    ds.StudyInstanceUID = overrides.get("study", pydicom.uid.generate_uid())
    ds.SeriesInstanceUID = overrides.get("series", pydicom.uid.generate_uid())
    ds.SOPInstanceUID = overrides.get("sop", pydicom.uid.generate_uid())
    ds.file_meta.MediaStorageSOPInstanceUID = ds.SOPInstanceUID
    dst_dir.mkdir(parents=True, exist_ok=True)
    out = dst_dir / f"{ds.SOPInstanceUID}.dcm"
    ds.save_as(out)
    return out


def jpegls_near_lossless(dst_dir: Path) -> Path:
    """pydicom's JPEG-LS near-lossless sample lacks the UIDs; give it some (pixels untouched)."""
    ds = pydicom.dcmread(pydicom_file("JPEGLSNearLossless_16.dcm"))
    ds.SOPClassUID = ds.file_meta.MediaStorageSOPClassUID
    ds.SOPInstanceUID = pydicom.uid.generate_uid()
    ds.file_meta.MediaStorageSOPInstanceUID = ds.SOPInstanceUID
    ds.StudyInstanceUID = pydicom.uid.generate_uid()
    ds.SeriesInstanceUID = pydicom.uid.generate_uid()
    ds.PatientID = "JLSN"
    dst_dir.mkdir(parents=True, exist_ok=True)
    out = dst_dir / "jlsn.dcm"
    ds.save_as(out)
    return out


def dcmtk(tool: str) -> str:
    """Path of the DCMTK binary (a same-named Python console script may come first on PATH)."""
    for directory in ["/usr/bin", *os.environ.get("PATH", "").split(os.pathsep)]:
        candidate = Path(directory) / tool
        if candidate.is_file() and os.access(candidate, os.X_OK):
            out = subprocess.run([str(candidate), "--version"], capture_output=True, text=True, timeout=10)
            if "dcmtk" in (out.stdout + out.stderr).lower():
                return str(candidate)
    raise AssertionError(f"DCMTK {tool} is not installed (.ci/system-deps.sh installs it)")


def dcmtk_env() -> dict[str, str]:
    return dict(os.environ, TCP_NODELAY="1")


@dataclass
class Node:
    """A running StorageSCP with its store, hub and readiness tracker, plus what they emitted."""

    scp: StorageSCP
    store: StudyStore
    hub: EventHub
    tracker: SeriesReadinessTracker
    port: int
    events: list[Event] = field(default_factory=list)
    ready: list = field(default_factory=list)

    @property
    def ae(self) -> str:
        return self.scp.config.ae_title

    def wait_for(self, predicate: Callable[[], bool], timeout: float = 10.0) -> bool:
        end = time.monotonic() + timeout
        while time.monotonic() < end:
            if predicate():
                return True
            time.sleep(0.02)
        return predicate()


def start_node(data_dir: Path, chunked: bool = False, **config_kwargs: object) -> Node:
    port = free_port()
    kwargs: dict[str, object] = {"data_dir": data_dir, "port": port, "min_free_mb": 0, "quiet_period_s": 1.0}
    kwargs.update(config_kwargs)
    config = Config(**kwargs).validate()  # type: ignore[arg-type]
    store = StudyStore(data_dir, min_free_bytes=config.min_free_mb << 20)
    hub = EventHub()
    ready: list = []
    lock = threading.Lock()

    def on_ready(event: object) -> None:
        with lock:
            ready.append((time.monotonic(), event))

    tracker = SeriesReadinessTracker(config.quiet_period_s, on_ready)

    def to_readiness(event: Event) -> None:  # as app.service routes the node's events
        if isinstance(event, InstanceStored) and event.association is not None:
            tracker.instance_arrived(event.study_uid, event.series_uid, event.association)
        elif isinstance(event, AssociationEnded):
            tracker.association_ended(event.association, event.released)

    scp = StorageSCP(config, store, hub, chunked=chunked)
    node = Node(scp, store, hub, tracker, port, ready=ready)
    hub.subscribe(node.events.append)
    hub.subscribe(to_readiness)
    tracker.start()
    scp.start()
    return node


def stop_node(node: Node) -> None:
    node.scp.stop(timeout=10)
    node.tracker.stop()
    node.store.close()


@pytest.fixture
def node(data_dir: Path) -> Iterator[Node]:
    n = start_node(data_dir)
    yield n
    stop_node(n)


def copy_tree(src: Path, dst: Path) -> None:
    shutil.copytree(src, dst)
