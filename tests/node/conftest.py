"""The DICOM node over real associations on 127.0.0.1: pynetdicom and DCMTK as peers."""

from __future__ import annotations

from tests.support.node_helpers import node  # noqa: F401  (the running-node fixture, for every node test)
