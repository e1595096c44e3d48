"""DICOM Part 10 files: the File Meta Information the node writes in front of each received
dataset, and the header the store reads back without touching pixel data. One module, so the
writer and the reader agree on the format and its guards (truncation, deflate bombs)."""

from __future__ import annotations

import io
import struct
import zlib
from dataclasses import dataclass
from pathlib import Path
from typing import Any, BinaryIO

import pydicom
from pydicom.dataelem import RawDataElement

from app.core.store.errors import BadUID, InvalidDataset, MissingUID, UnreadableDataset
from app.core.uids import is_valid_uid

IMPLEMENTATION_CLASS_UID = "2.25.223658096526933838911375802139257355250"
IMPLEMENTATION_VERSION = "FIRSTLOOK_010"


@dataclass(frozen=True)
class InstanceHeader:
    """What the index keeps of a dataset, read without touching pixel data."""

    study_uid: str
    series_uid: str
    sop_uid: str
    sop_class_uid: str = ""
    transfer_syntax: str = ""
    instance_number: int | None = None
    patient_id: str = ""
    patient_name: str = ""
    patient_birth_date: str = ""
    patient_sex: str = ""
    study_date: str = ""
    study_time: str = ""
    accession: str = ""
    study_description: str = ""
    modality: str = ""
    body_part: str = ""
    series_description: str = ""
    series_number: int | None = None


# Character sets whose bytes decode directly; anything else goes through pydicom's decoder.
_DIRECT_CHARSETS = {"": "ascii", "ISO_IR 6": "ascii", "ISO_IR 100": "latin-1", "ISO_IR 192": "utf-8"}


def _text(ds: pydicom.Dataset, keyword: str) -> str:
    """Header value as text. Reads the raw element bytes when the character set allows:
    pydicom's value conversion was most of the per-instance header cost on the receive path."""
    encoding = ds.__dict__.get("_firstlook_encoding")
    if encoding is None:
        raw_cs = ds.get_item("SpecificCharacterSet") if "SpecificCharacterSet" in ds else None
        cs = ""
        if raw_cs is not None:
            value = raw_cs.value
            cs = (value.decode("ascii", "replace") if isinstance(value, bytes) else str(value)).strip(" \x00")
        encoding = _DIRECT_CHARSETS.get(cs, "")
        ds.__dict__["_firstlook_encoding"] = encoding
    if encoding:
        raw = ds.get_item(keyword) if keyword in ds else None
        if raw is None:
            return ""
        if isinstance(raw.value, bytes):
            return raw.value.decode(encoding, "replace").strip(" \x00")
    value = ds.get(keyword, "")
    if value is None:
        return ""
    return str(value).strip()


def _int(ds: pydicom.Dataset, keyword: str) -> int | None:
    try:
        value = _text(ds, keyword)
        return int(value) if value else None
    except (TypeError, ValueError):
        return None


def _check_not_truncated(ds: pydicom.Dataset) -> None:
    """pydicom (with force) quietly returns short values for elements that run past the end
    of the data; random bytes look like that, so it is the line between garbage and a dataset."""
    for tag in ds.keys():
        raw = ds.get_item(tag)
        if isinstance(raw, RawDataElement) and raw.length != 0xFFFFFFFF and isinstance(raw.value, bytes) \
                and len(raw.value) < raw.length:
            raise UnreadableDataset(f"element {raw.tag} claims {raw.length} bytes but the data ends after "
                                    f"{len(raw.value)}")


class _Joined(io.RawIOBase):
    """Several buffers read as one seekable stream without joining them: the SCP's File Meta
    plus pynetdicom's receive buffer, so a 1 GiB instance is not copied once more just to put
    200 bytes in front of it (that copy doubled the node's peak memory per large instance)."""

    def __init__(self, *parts: bytes | memoryview) -> None:
        super().__init__()
        self._parts = [memoryview(p).cast("B") for p in parts]
        self._size = sum(len(p) for p in self._parts)
        self._pos = 0
        self.name = None  # pydicom reads fp.name; not a file on disk

    def readable(self) -> bool:
        return True

    def seekable(self) -> bool:
        return True

    def tell(self) -> int:
        return self._pos

    def seek(self, offset: int, whence: int = io.SEEK_SET) -> int:
        base = {io.SEEK_SET: 0, io.SEEK_CUR: self._pos, io.SEEK_END: self._size}[whence]
        self._pos = max(0, base + offset)
        return self._pos

    def readinto(self, buffer: Any) -> int:
        out = memoryview(buffer).cast("B")
        n, start = 0, 0
        for part in self._parts:
            end = start + len(part)
            if self._pos + n < end and n < len(out):
                lo = self._pos + n - start
                take = min(len(part) - lo, len(out) - n)
                out[n:n + take] = part[lo:lo + take]
                n += take
            start = end
        self._pos += n
        return n


def joined_stream(data: bytes, body: bytes | memoryview) -> bytes | BinaryIO:
    """``data`` followed by ``body`` for read_header: the bytes themselves when there is no body."""
    if not len(body):
        return data
    return io.BufferedReader(_Joined(data, body), buffer_size=1 << 16)  # type: ignore[return-value]


DEFLATED = "1.2.840.10008.1.2.1.99"
# pydicom inflates a whole deflated dataset in memory before parsing it: a few MB of deflated
# zeros would otherwise take gigabytes per association (a "zip bomb").
MAX_INFLATED_BYTES = 256 << 20
_LONG_VRS = (b"OB", b"OW", b"OF", b"OD", b"OL", b"OV", b"SQ", b"UT", b"UN", b"UC", b"UR", b"SV", b"UV")


def _meta_transfer_syntax(data: bytes) -> tuple[str, int]:
    """(Transfer Syntax UID, offset of the dataset) of Part 10 bytes; ("", 0) without a header."""
    if data[128:132] != b"DICM":
        return "", 0
    pos, syntax = 132, ""
    while pos + 8 <= len(data) and data[pos:pos + 2] == b"\x02\x00":
        elem, vr = struct.unpack_from("<H", data, pos + 2)[0], data[pos + 4:pos + 6]
        if vr in _LONG_VRS:
            if pos + 12 > len(data):
                break
            length, value_at = struct.unpack_from("<I", data, pos + 8)[0], pos + 12
        else:
            length, value_at = struct.unpack_from("<H", data, pos + 6)[0], pos + 8
        if elem == 0x0010:
            syntax = data[value_at:value_at + length].decode("ascii", "replace").strip(" \x00")
        pos = value_at + length
    return syntax, pos


def _check_inflated_size(fh: BinaryIO) -> None:
    """Refuse a deflated dataset that inflates beyond MAX_INFLATED_BYTES or is corrupt,
    inflating in bounded steps and discarding the output; ``fh`` is left where it was."""
    start = fh.tell()
    try:
        syntax, _ = _meta_transfer_syntax(fh.read(1 << 16))
        if syntax != DEFLATED:
            return
        fh.seek(start)
        data = fh.read()
    finally:
        fh.seek(start)
    _, offset = _meta_transfer_syntax(data)
    inflater = zlib.decompressobj(-zlib.MAX_WBITS)
    buf, total = data[offset:], 0
    while True:
        out = inflater.decompress(buf, 1 << 22)
        total += len(out)
        if total > MAX_INFLATED_BYTES:
            raise UnreadableDataset(f"deflated dataset inflates to more than {MAX_INFLATED_BYTES >> 20} MiB")
        buf = inflater.unconsumed_tail
        if not buf and not out:
            return


def read_header(source: bytes | Path | BinaryIO) -> InstanceHeader:
    """Parse only what the index needs; the pixel data is never read."""
    opened: BinaryIO | None = None
    try:
        if isinstance(source, (bytes, bytearray, memoryview)):
            fh: Any = io.BytesIO(source)
        elif isinstance(source, Path):
            fh = opened = open(source, "rb")
        else:
            fh = source
        _check_inflated_size(fh)
        ds = pydicom.dcmread(fh, stop_before_pixels=True, force=True)
        _check_not_truncated(ds)
        study = _text(ds, "StudyInstanceUID")
        series = _text(ds, "SeriesInstanceUID")
        sop = _text(ds, "SOPInstanceUID")
        meta = getattr(ds, "file_meta", None)
        transfer_syntax = str(getattr(meta, "TransferSyntaxUID", "") or "") if meta is not None else ""
        sop_class = _text(ds, "SOPClassUID") or (str(getattr(meta, "MediaStorageSOPClassUID", "")) if meta is not None else "")
        header = InstanceHeader(
            study_uid=study, series_uid=series, sop_uid=sop,
            sop_class_uid=sop_class, transfer_syntax=transfer_syntax,
            instance_number=_int(ds, "InstanceNumber"),
            patient_id=_text(ds, "PatientID"), patient_name=_text(ds, "PatientName"),
            patient_birth_date=_text(ds, "PatientBirthDate"), patient_sex=_text(ds, "PatientSex"),
            study_date=_text(ds, "StudyDate"), study_time=_text(ds, "StudyTime"),
            accession=_text(ds, "AccessionNumber"), study_description=_text(ds, "StudyDescription"),
            modality=_text(ds, "Modality"), body_part=_text(ds, "BodyPartExamined"),
            series_description=_text(ds, "SeriesDescription"), series_number=_int(ds, "SeriesNumber"),
        )
    except InvalidDataset:
        raise
    except Exception as exc:  # pydicom raises many types (e.g. BytesLengthException) for hostile bytes
        raise UnreadableDataset(f"dataset cannot be parsed: {exc.__class__.__name__}: {str(exc)[:200]}") from exc
    finally:
        if opened is not None:
            opened.close()
    for name, uid in (("Study Instance UID", header.study_uid), ("Series Instance UID", header.series_uid),
                      ("SOP Instance UID", header.sop_uid)):
        if not uid:
            raise MissingUID(f"dataset lacks a {name}")
        if not is_valid_uid(uid):
            raise BadUID(f"{name} {uid[:80]!r} is not a valid DICOM UID")
    return header


def _element(group_elem: int, vr: bytes, value: bytes) -> bytes:
    """One explicit VR little endian element of group 0002."""
    if len(value) % 2:
        value += b"\x00" if vr in (b"UI", b"OB") else b" "
    tag = struct.pack("<HH", group_elem >> 16, group_elem & 0xFFFF)
    if vr == b"OB":
        return tag + vr + b"\x00\x00" + struct.pack("<I", len(value)) + value
    return tag + vr + struct.pack("<H", len(value)) + value


def file_meta_bytes(sop_class_uid: str, sop_instance_uid: str, transfer_syntax: str, calling_ae: str) -> bytes:
    """Preamble, prefix and File Meta Information (PS3.10 7.1), encoded by hand: pydicom's
    writer cost ~0.8 ms per instance for these seven elements."""
    def ascii_(text: str) -> bytes:
        return text.encode("ascii", "replace")

    body = b"".join([
        _element(0x00020001, b"OB", b"\x00\x01"),
        _element(0x00020002, b"UI", ascii_(sop_class_uid)),
        _element(0x00020003, b"UI", ascii_(sop_instance_uid)),
        _element(0x00020010, b"UI", ascii_(transfer_syntax)),
        _element(0x00020012, b"UI", ascii_(IMPLEMENTATION_CLASS_UID)),
        _element(0x00020013, b"SH", ascii_(IMPLEMENTATION_VERSION)),
        *([_element(0x00020016, b"AE", ascii_(calling_ae[:16]))] if calling_ae else []),
    ])
    group_length = _element(0x00020000, b"UL", struct.pack("<I", len(body)))
    return b"\x00" * 128 + b"DICM" + group_length + body
