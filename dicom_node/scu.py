"""A small Storage/Verification SCU: the tests' sender and the future self-test's.

Files are sent in the transfer syntax they are stored in (no transcoding), over one
association with one presentation context per (SOP class, transfer syntax) pair.
"""

from __future__ import annotations

import logging
import tempfile
import threading
from pathlib import Path
from typing import Iterable, Sequence

from pydicom import dcmread
from pydicom.dataset import FileMetaDataset
from pydicom.filewriter import write_file_meta_info
from pydicom.uid import UID, ExplicitVRLittleEndian
from pynetdicom import AE
from pynetdicom import _config as pynetdicom_config
from pynetdicom.sop_class import Verification

log = logging.getLogger(__name__)

# Statuses this helper reports when the association itself did not happen.
ASSOCIATION_FAILED = -1
NOT_SENT = -2


_RAW_LOCK = threading.Lock()


class AssociationRejected(ConnectionError):
    """The SCP refused or never answered the association request."""


def _contexts(paths: Sequence[Path]) -> list[tuple[UID, UID]]:
    pairs: list[tuple[UID, UID]] = []
    for path in paths:
        ds = dcmread(path, stop_before_pixels=True, specific_tags=["SOPClassUID"])
        pair = (UID(ds.file_meta.MediaStorageSOPClassUID), UID(ds.file_meta.TransferSyntaxUID))
        if pair not in pairs:
            pairs.append(pair)
    if len(pairs) > 128:
        raise ValueError("more than 128 (SOP class, transfer syntax) pairs; split the send")
    return pairs


def send_files(host: str, port: int, called_ae: str, paths: Iterable[Path | str],
               calling_ae: str = "FIRSTLOOK_SCU", timeout: float = 30.0,
               raise_on_reject: bool = False) -> list[int]:
    """C-STORE each file over one association; returns one DIMSE status per file.

    A refused association gives ``ASSOCIATION_FAILED`` for every file (or raises
    ``AssociationRejected`` when asked to); an association lost midway gives ``NOT_SENT``
    for the files after it.
    """
    files = [Path(p) for p in paths]
    if not files:
        return []
    ae = AE(ae_title=calling_ae)
    ae.acse_timeout = ae.dimse_timeout = ae.network_timeout = timeout
    for sop_class, syntax in _contexts(files):
        ae.add_requested_context(sop_class, syntax)
    assoc = ae.associate(host, port, ae_title=called_ae)
    if not assoc.is_established:
        if raise_on_reject:
            raise AssociationRejected(f"{host}:{port} ({called_ae}) refused the association from {calling_ae}")
        return [ASSOCIATION_FAILED] * len(files)
    statuses: list[int] = []
    try:
        for path in files:
            if not assoc.is_established:
                statuses.append(NOT_SENT)
                continue
            rsp = assoc.send_c_store(path)
            status = getattr(rsp, "Status", None)
            statuses.append(int(status) if status is not None else NOT_SENT)
    finally:
        if assoc.is_established:
            assoc.release()
    return statuses


def echo(host: str, port: int, called_ae: str, calling_ae: str = "FIRSTLOOK_SCU", timeout: float = 10.0) -> int:
    """C-ECHO; returns the status (0 = the node answers) or ``ASSOCIATION_FAILED``."""
    ae = AE(ae_title=calling_ae)
    ae.acse_timeout = ae.dimse_timeout = ae.network_timeout = timeout
    ae.add_requested_context(Verification)
    assoc = ae.associate(host, port, ae_title=called_ae)
    if not assoc.is_established:
        return ASSOCIATION_FAILED
    try:
        rsp = assoc.send_c_echo()
        status = getattr(rsp, "Status", None)
        return int(status) if status is not None else NOT_SENT
    finally:
        if assoc.is_established:
            assoc.release()


def send_raw(host: str, port: int, called_ae: str, sop_class_uid: str, sop_instance_uid: str, dataset: bytes,
             transfer_syntax: str = ExplicitVRLittleEndian, calling_ae: str = "FIRSTLOOK_SCU",
             timeout: float = 30.0) -> int:
    """C-STORE arbitrary dataset bytes, unparsed and unchecked: what a broken modality might
    send. Uses pynetdicom's send-from-file mode (a process-wide flag, set only for the call)."""
    meta = FileMetaDataset()
    meta.MediaStorageSOPClassUID = UID(sop_class_uid)
    meta.MediaStorageSOPInstanceUID = UID(sop_instance_uid)
    meta.TransferSyntaxUID = UID(transfer_syntax)
    with tempfile.NamedTemporaryFile(suffix=".dcm") as fh:
        fh.write(b"\x00" * 128 + b"DICM")
        write_file_meta_info(fh, meta, enforce_standard=True)  # type: ignore[arg-type]
        fh.write(dataset)
        fh.flush()
        ae = AE(ae_title=calling_ae)
        ae.acse_timeout = ae.dimse_timeout = ae.network_timeout = timeout
        ae.add_requested_context(sop_class_uid, transfer_syntax)
        assoc = ae.associate(host, port, ae_title=called_ae)
        if not assoc.is_established:
            return ASSOCIATION_FAILED
        try:
            with _RAW_LOCK:
                previous = pynetdicom_config.STORE_SEND_CHUNKED_DATASET
                pynetdicom_config.STORE_SEND_CHUNKED_DATASET = True
                try:
                    rsp = assoc.send_c_store(Path(fh.name))
                finally:
                    pynetdicom_config.STORE_SEND_CHUNKED_DATASET = previous
            status = getattr(rsp, "Status", None)
            return int(status) if status is not None else NOT_SENT
        finally:
            if assoc.is_established:
                assoc.release()
