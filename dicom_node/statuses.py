"""The DIMSE statuses the node answers a C-STORE with, and which store error earns which.

PS3.4 C.4.2.3 leaves the 0xCxxx "cannot understand" range to the SCP, so the node uses it to
tell a sender *what* was wrong with an instance, not only that it was refused.

====== ===========================================================================
0x0000 Success (stored, identical duplicate, or replacement of an earlier version)
0xA700 Refused: Out of Resources (disk full, below the free-space watermark, write
       error, node stopping)
0xC210 Cannot understand: the dataset cannot be parsed
0xC211 Cannot understand: Study, Series or SOP Instance UID missing
0xC212 Cannot understand: a UID violates the DICOM UID grammar (e.g. path characters)
0x0110 Processing failure: an unexpected error (logged with a traceback)
====== ===========================================================================
"""

from __future__ import annotations

from app.core.store import BadUID, MissingUID, OutOfResources, UnreadableDataset

STATUS_SUCCESS = 0x0000
STATUS_OUT_OF_RESOURCES = 0xA700
STATUS_CANNOT_UNDERSTAND = 0xC210
STATUS_MISSING_UID = 0xC211
STATUS_BAD_UID = 0xC212
STATUS_PROCESSING_FAILURE = 0x0110

# First match wins, so a subclass (e.g. LowDiskSpace under OutOfResources) maps with its base
# unless listed before it.
STORE_ERROR_STATUSES: tuple[tuple[type[Exception], int], ...] = (
    (UnreadableDataset, STATUS_CANNOT_UNDERSTAND),
    (MissingUID, STATUS_MISSING_UID),
    (BadUID, STATUS_BAD_UID),
    (OutOfResources, STATUS_OUT_OF_RESOURCES),
)


def status_for(exc: BaseException) -> int:
    """The status for an exception raised by ``StudyStore.store_instance``; anything the store
    did not anticipate is a processing failure (never Success)."""
    for error, status in STORE_ERROR_STATUSES:
        if isinstance(exc, error):
            return status
    return STATUS_PROCESSING_FAILURE
