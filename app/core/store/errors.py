"""Store errors, each mapped by the node to one DIMSE status (see dicom_node): 0xC210 cannot
understand, 0xC211/0xC212 missing or bad UID, 0xA700 out of resources."""

from __future__ import annotations


class StoreError(Exception):
    """Base for store failures the SCP turns into DICOM statuses."""


class InvalidDataset(StoreError):
    """Cannot be parsed or lacks a valid Study/Series/SOP Instance UID (0xC000 range)."""


class UnreadableDataset(InvalidDataset):
    """The bytes are not a DICOM dataset pydicom can parse (SCP status 0xC210)."""


class MissingUID(InvalidDataset):
    """Study, Series or SOP Instance UID is absent or empty (SCP status 0xC211)."""


class BadUID(InvalidDataset):
    """A UID breaks the DICOM UID grammar, e.g. carries path characters (SCP status 0xC212)."""


class OutOfResources(StoreError):
    """Disk full, below the free-space watermark, or a write error (0xA700)."""


class LowDiskSpace(OutOfResources):
    """Free space below ``min_free_mb`` or the disk is full: refused until space is freed, and
    shown to the user (status bar, log), not just answered 0xA700 per instance."""


class SchemaTooNew(StoreError):
    """The index was written by a newer release: refused rather than half-understood."""


class MigrationFailed(StoreError):
    """Upgrading the index schema failed; the transaction was rolled back, the index is as it was."""
