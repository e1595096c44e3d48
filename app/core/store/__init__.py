"""The durable study store: DICOM files on disk plus a versioned SQLite (WAL) index.

Everything outside the store uses ``StudyStore`` and the names below; the modules are:

- ``study_store``  the facade and the durable write path (``store_instance``)
- ``storage_area`` files, names, fsync, atomic rename, private modes, free space
- ``index``        SQLite connections and the queries
- ``job_queue``    the persistent analysis queue and its lanes
- ``recovery``     reindex, adopting unindexed files, interrupted replacements, verify
- ``migrations``   the versioned schema (``schema/NNNN_*.sql``); how to add a table is there
- ``records``      the records handed out; ``errors`` the failures; ``part10`` the header reader
"""

from __future__ import annotations

from app.core.store.errors import (
    BadUID,
    InvalidDataset,
    LowDiskSpace,
    MigrationFailed,
    MissingUID,
    OutOfResources,
    SchemaTooNew,
    StoreError,
    UnreadableDataset,
)
from app.core.store.part10 import MAX_INFLATED_BYTES, InstanceHeader, read_header
from app.core.store.records import Job, SeriesRecord, StoredInstance, StudyRecord
from app.core.store.study_store import StudyStore

__all__ = [
    "MAX_INFLATED_BYTES", "BadUID", "InstanceHeader", "InvalidDataset", "Job", "LowDiskSpace",
    "MigrationFailed", "MissingUID", "OutOfResources", "SchemaTooNew", "SeriesRecord", "StoreError",
    "StoredInstance", "StudyRecord", "StudyStore", "UnreadableDataset", "read_header",
]
