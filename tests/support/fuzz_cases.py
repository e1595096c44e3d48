"""Hostile and broken DICOM for fuzzing, as hypothesis strategies, plus the checks each case must pass.

Shared by tests/node/test_fuzz_receive.py, tests/inference/test_fuzz_tensor.py (CI-sized) and bench/fuzz_long.py
(>= 10,000 cases, hangs and crashes counted from a watchdog process).

A receive case is a valid dataset (CT slice, chest radiograph, RGB ultrasound, structured
report, encapsulated PDF) put through dataset-level damage (absurd dimensions, pixel data
that does not match rows x columns x bits, hostile or missing UIDs, non-ASCII bytes in text
VRs under various character sets, corrupt compressed streams) and then byte-level damage on
its encoding (wrong VR codes, huge or undefined lengths, undefined-length sequences that
never end, truncation, flipped bytes). ``check_receive`` stores it and, when stored, pushes
it down the DICOM-to-tensor path; ``check_ct_series`` does the same for head-CT series.
"""

from __future__ import annotations

import io
import math
import os
import struct
import zlib
from dataclasses import dataclass
from functools import lru_cache
from pathlib import Path
from typing import Any, Callable

import numpy as np
import pydicom
from hypothesis import strategies as st
from pydicom.dataset import Dataset
from pydicom.filewriter import write_dataset

from app.core.store import InvalidDataset, OutOfResources, StudyStore
from app.core.store.part10 import file_meta_bytes
from inference.ct_volume import load_ct_volume
from inference.cxr_input import load_cxr, to_model_input
from inference.errors import NotAnalysable
from tests.support.dicom_factory import make_ct_slice

ROOT = "1.2.826.0.1.3680043.10.1234"  # UIDs of fuzz cases
# CI runs the same cases every time (a red build is reproducible); FIRSTLOOK_FUZZ_RANDOM=1 explores,
# as bench/fuzz_long.py always does.
DERANDOMIZE = not os.environ.get("FIRSTLOOK_FUZZ_RANDOM")
EXPLICIT, IMPLICIT, BIG = "1.2.840.10008.1.2.1", "1.2.840.10008.1.2", "1.2.840.10008.1.2.2"
DEFLATED = "1.2.840.10008.1.2.1.99"
COMPRESSED = {
    "1.2.840.10008.1.2.4.50": "SC_rgb_jpeg_dcmtk.dcm", "1.2.840.10008.1.2.4.51": "JPEG-lossy.dcm",
    "1.2.840.10008.1.2.4.70": "SC_rgb_jpeg_gdcm.dcm", "1.2.840.10008.1.2.4.80": "MR_small_jpeg_ls_lossless.dcm",
    "1.2.840.10008.1.2.4.90": "MR_small_jp2klossless.dcm", "1.2.840.10008.1.2.4.91": "JPEG2000.dcm",
    "1.2.840.10008.1.2.5": "SC_rgb_rle.dcm",
}
UNSUPPORTED_SYNTAXES = ["1.2.840.10008.1.2.4.100", "1.2.840.10008.1.2.4.201", "1.2.3.4.5", "1.2.840.10008.1.2.4.57"]
HOSTILE_UIDS = ["../../../../tmp/firstlook-escape", "1.2.3/../../4", "/etc/passwd", "..", ".", "1.2.840..5",
                "1.2.03", "1." + "2" * 198, "1.2.3\\4.5", "C:\\Windows\\x", "1.2.3\x00/..", "１.２.３", "1.2.3 ",
                " ", "1.2.3.", "0.0", "1.2.3%2F..", "~/x", "1.2.3\n4", "1" * 64, "1" * 65]
TEXT_KEYWORDS = ["PatientName", "PatientID", "StudyDescription", "SeriesDescription", "InstitutionName",
                 "ReferringPhysicianName", "AccessionNumber", "BodyPartExamined", "Modality", "ViewPosition",
                 "StudyDate", "StudyTime", "PatientBirthDate", "PatientSex", "PatientAge", "Manufacturer",
                 "ImageComments", "PhotometricInterpretation", "ImageType", "PatientComments", "StudyID",
                 "OperatorsName", "ProtocolName", "SeriesNumber", "InstanceNumber", "WindowCenter", "WindowWidth",
                 "RescaleSlope", "RescaleIntercept", "PixelSpacing", "ImagePositionPatient",
                 "ImageOrientationPatient", "SliceThickness", "TextValue", "PresentationIntentType"]
CHARSETS = ["", "ISO_IR 100", "ISO_IR 192", "ISO 2022 IR 87", "\\ISO 2022 IR 149", "GB18030", "ISO_IR 144",
            "ISO_IR 13", "BOGUS", "ISO_IR 6\\ISO_IR 6", "\xff\xfe"]
VRS = [b"AE", b"AS", b"AT", b"CS", b"DA", b"DS", b"DT", b"FL", b"FD", b"IS", b"LO", b"LT", b"OB", b"OD", b"OF",
       b"OL", b"OV", b"OW", b"PN", b"SH", b"SL", b"SQ", b"SS", b"ST", b"SV", b"TM", b"UC", b"UI", b"UL", b"UN",
       b"UR", b"US", b"UT", b"UV", b"ZZ", b"\x00\x00", b"\xff\xff"]
LONG_VRS = {b"OB", b"OD", b"OF", b"OL", b"OV", b"OW", b"SQ", b"UC", b"UN", b"UR", b"UT", b"SV", b"UV"}
IMAGE_INTS = ["Rows", "Columns", "BitsAllocated", "BitsStored", "HighBit", "SamplesPerPixel", "PixelRepresentation",
              "PlanarConfiguration"]


@dataclass
class ReceiveCase:
    sop_class: str
    sop_uid_hint: str
    transfer_syntax: str
    body: bytes
    steps: list[str]

    def part10(self) -> bytes:
        return file_meta_bytes(self.sop_class, self.sop_uid_hint, self.transfer_syntax, "FUZZ") + self.body


# -- base datasets ---------------------------------------------------------------------------------
def cxr_dataset(rows: int = 64, cols: int = 64) -> Dataset:
    ds = make_ct_slice(np.zeros((rows, cols), np.int16), (0.0, 0.0, 0.0))
    ds.SOPClassUID = "1.2.840.10008.5.1.4.1.1.1.1"
    ds.Modality = "DX"
    ds.BodyPartExamined = "CHEST"
    ds.ViewPosition = "PA"
    ds.PresentationIntentType = "FOR PRESENTATION"
    ds.BitsStored, ds.HighBit, ds.PixelRepresentation = 12, 11, 0
    ds.PixelData = (np.arange(rows * cols, dtype=np.uint16).reshape(rows, cols) % 4096).tobytes()
    return ds


def _rgb() -> Dataset:
    ds = cxr_dataset(32, 32)
    ds.SOPClassUID = "1.2.840.10008.5.1.4.1.1.6.1"
    ds.Modality = "US"
    ds.SamplesPerPixel, ds.PhotometricInterpretation, ds.PlanarConfiguration = 3, "RGB", 0
    ds.BitsAllocated, ds.BitsStored, ds.HighBit = 8, 8, 7
    ds.PixelData = bytes(range(256)) * 12
    return ds


def _sr() -> Dataset:
    ds = cxr_dataset(8, 8)
    for kw in ("PixelData", "Rows", "Columns", "BitsAllocated", "BitsStored", "HighBit", "SamplesPerPixel",
               "PhotometricInterpretation", "PixelRepresentation"):
        delattr(ds, kw)
    ds.SOPClassUID = "1.2.840.10008.5.1.4.1.1.88.11"
    ds.Modality = "SR"
    item = Dataset()
    item.ValueType, item.TextValue = "TEXT", "no pneumothorax"
    ds.ContentSequence = [item]
    return ds


def _pdf() -> Dataset:
    ds = _sr()
    del ds.ContentSequence
    ds.SOPClassUID = "1.2.840.10008.5.1.4.1.1.104.1"
    ds.Modality = "DOC"
    ds.MIMETypeOfEncapsulatedDocument = "application/pdf"
    ds.EncapsulatedDocument = b"%PDF-1.4\n%%EOF\n"
    return ds


def _ct() -> Dataset:
    return make_ct_slice(np.random.default_rng(0).integers(-1000, 1000, (32, 32)).astype(np.int16), (0.0, 0.0, 0.0))


def _deterministic(ds: Dataset) -> Dataset:
    """Hypothesis replays draws and expects the same sizes: no clock or random UIDs in the bytes."""
    ds.StudyDate, ds.StudyTime, ds.AccessionNumber = "20260101", "120000", "ACC000001"
    ds.SOPInstanceUID = ds.SeriesInstanceUID = ds.StudyInstanceUID = f"{ROOT}.0"
    return ds


BASES: dict[str, Callable[[], Dataset]] = {"cxr": cxr_dataset, "ct": _ct, "rgb": _rgb, "sr": _sr, "pdf": _pdf}


@lru_cache(maxsize=None)
def compressed_sample(syntax: str) -> tuple[bytes, ...]:
    """Fragments of a real compressed stream of that syntax (pydicom's test files)."""
    from pydicom.data import get_testdata_file

    ds = pydicom.dcmread(get_testdata_file(COMPRESSED[syntax], download=False))
    return tuple(_frames(ds.PixelData))


def _frames(data: bytes) -> list[bytes]:
    from pydicom.encaps import generate_fragments

    try:
        return list(generate_fragments(data))
    except Exception:
        return [data]


def encaps(fragments: list[bytes]) -> bytes:
    """Encapsulated pixel data (empty offset table, one item per fragment, delimiter); unlike
    pydicom's helper it accepts empty and odd fragments, as a broken sender would send them."""
    items = b"".join(b"\xfe\xff\x00\xe0" + struct.pack("<I", len(f)) + f for f in fragments)
    return b"\xfe\xff\x00\xe0\x00\x00\x00\x00" + items + b"\xfe\xff\xdd\xe0\x00\x00\x00\x00"


# -- dataset-level damage -------------------------------------------------------------------------
def set_raw(ds: Dataset, keyword: str, raw: bytes) -> None:
    """Put raw bytes as the value of a text element (bypassing pydicom's value checks)."""
    from pydicom.datadict import dictionary_VR, tag_for_keyword
    from pydicom.dataelem import RawDataElement

    tag = tag_for_keyword(keyword)
    if tag is None:
        return
    vr = dictionary_VR(tag)
    if vr.startswith("US") or vr == "SQ":
        vr = "UN"
    ds._dict[pydicom.tag.Tag(tag)] = RawDataElement(pydicom.tag.Tag(tag), vr, len(raw), raw, 0, False, True)


@st.composite
def dataset_damage(draw: Any, ds: Dataset, steps: list[str]) -> str:
    """Damage ``ds`` in place; returns the transfer syntax to send it with."""
    syntax = EXPLICIT
    for _ in range(draw(st.integers(0, 4))):
        op = draw(st.sampled_from(["uid", "del_uid", "text", "charset", "dims", "pixels", "compressed", "frames",
                                   "syntax", "numbers", "voi"]))
        if op == "uid":
            kw = draw(st.sampled_from(["StudyInstanceUID", "SeriesInstanceUID", "SOPInstanceUID"]))
            value = draw(st.one_of(st.sampled_from(HOSTILE_UIDS), st.text(max_size=80)))
            set_raw(ds, kw, value.encode("utf-8", "surrogatepass"))
            steps.append(f"{kw}={value[:40]!r}")
        elif op == "del_uid":
            kw = draw(st.sampled_from(["StudyInstanceUID", "SeriesInstanceUID", "SOPInstanceUID"]))
            if kw in ds:
                delattr(ds, kw)
            steps.append(f"del {kw}")
        elif op == "text":
            kw = draw(st.sampled_from(TEXT_KEYWORDS))
            text = draw(st.text(max_size=70))
            enc = draw(st.sampled_from(["utf-8", "latin-1", "shift_jis", "utf-16", "raw"]))
            raw = draw(st.binary(max_size=70)) if enc == "raw" else text.encode(enc, "replace")
            set_raw(ds, kw, raw)
            steps.append(f"{kw} <- {len(raw)} bytes {enc}")
        elif op == "charset":
            set_raw(ds, "SpecificCharacterSet", draw(st.sampled_from(CHARSETS)).encode("latin-1"))
            steps.append("charset")
        elif op == "dims":
            kw = draw(st.sampled_from(IMAGE_INTS))
            value = draw(st.sampled_from([0, 1, 2, 3, 7, 12, 15, 17, 31, 32, 33, 64, 255, 4096, 32767, 65535]))
            setattr(ds, kw, value)
            if draw(st.booleans()) and "Rows" in ds:
                ds.Rows = ds.Columns = 65535
                ds.SamplesPerPixel = 3
                steps.append("65535x65535x3")
            steps.append(f"{kw}={value}")
        elif op == "pixels":
            if "PixelData" in ds:
                n = len(ds.PixelData)
                size = draw(st.sampled_from([0, 1, n // 2, n - 1, n + 1, n * 2]))
                ds.PixelData = (bytes(ds.PixelData) * 3)[:size]
                steps.append(f"pixels {n}->{size}")
        elif op == "compressed":
            syntax = draw(st.sampled_from(sorted(COMPRESSED)))
            frags = list(compressed_sample(syntax))
            how = draw(st.sampled_from(["as is", "truncate", "flip", "random", "empty"]))
            if how == "truncate":
                frags = [f[: draw(st.integers(0, max(0, len(f) - 1)))] for f in frags]
            elif how == "flip":
                f = bytearray(frags[0])
                for _ in range(draw(st.integers(1, 8))):
                    if f:
                        f[draw(st.integers(0, len(f) - 1))] ^= draw(st.integers(1, 255))
                frags[0] = bytes(f)
            elif how == "random":
                frags = [draw(st.binary(min_size=0, max_size=300))]
            elif how == "empty":
                frags = [b""]
            ds.PixelData = encaps(frags)
            ds["PixelData"].VR = "OB"
            ds["PixelData"].is_undefined_length = True
            steps.append(f"compressed {syntax} {how}")
        elif op == "frames":
            frames = draw(st.sampled_from(["0", "1", "2", "-1", "65535", "x", "1e9"]))
            set_raw(ds, "NumberOfFrames", frames.encode())
            steps.append(f"frames {frames}")
        elif op == "syntax":
            syntax = draw(st.sampled_from([IMPLICIT, BIG, DEFLATED, *UNSUPPORTED_SYNTAXES]))
            steps.append(f"syntax {syntax}")
        elif op == "numbers":
            kw = draw(st.sampled_from(["WindowCenter", "WindowWidth", "RescaleSlope", "RescaleIntercept",
                                       "PixelSpacing", "ImagePositionPatient", "ImageOrientationPatient"]))
            value = draw(st.sampled_from(["nan", "inf", "-inf", "0", "-1", "1e308", "1e-308", "", "\\", "1\\2\\3",
                                          "abc", "0\\0", "0\\0\\0\\0\\0\\0"]))
            set_raw(ds, kw, value.encode())
            steps.append(f"{kw}={value!r}")
        elif op == "voi":
            item = Dataset()
            item.LUTDescriptor = [draw(st.sampled_from([0, 1, 2, 4096, 65535])), draw(st.integers(0, 65535)),
                                  draw(st.sampled_from([0, 1, 8, 16, 17, 255]))]
            item.LUTData = [draw(st.integers(0, 65535))] * draw(st.integers(0, 8))
            ds.VOILUTSequence = [item]
            steps.append(f"VOI LUT {list(item.LUTDescriptor)}")
    return syntax


def encode(ds: Dataset, syntax: str) -> bytes:
    """The dataset body as a sender would put it on the wire (deflated when asked)."""
    buf = io.BytesIO()
    fp = pydicom.filebase.DicomFileLike(buf)
    fp.is_little_endian = syntax != BIG
    fp.is_implicit_VR = syntax == IMPLICIT
    ds = ds.copy()
    if hasattr(ds, "file_meta"):
        del ds.file_meta
    write_dataset(fp, ds)
    data = buf.getvalue()
    if syntax == DEFLATED:
        c = zlib.compressobj(6, zlib.DEFLATED, -zlib.MAX_WBITS)
        data = c.compress(data) + c.flush()
    return data


# -- byte-level damage ----------------------------------------------------------------------------
def walk(body: bytes, implicit: bool) -> list[tuple[int, int, int, int, bytes]]:
    """Top-level elements of an explicit/implicit VR LE body: (tag, start, value_start, length, vr)."""
    out = []
    pos = 0
    while pos + 8 <= len(body):
        group, elem = struct.unpack_from("<HH", body, pos)
        if implicit:
            length, vstart, vr = struct.unpack_from("<I", body, pos + 4)[0], pos + 8, b""
        else:
            vr = body[pos + 4:pos + 6]
            if vr in LONG_VRS:
                if pos + 12 > len(body):
                    break
                length, vstart = struct.unpack_from("<I", body, pos + 8)[0], pos + 12
            else:
                length, vstart = struct.unpack_from("<H", body, pos + 6)[0], pos + 8
        out.append(((group << 16) | elem, pos, vstart, length, vr))
        if length == 0xFFFFFFFF:
            break
        pos = vstart + length
    return out


def _element(tag: int, vr: bytes, value: bytes, implicit: bool, length: int | None = None) -> bytes:
    n = len(value) if length is None else length
    head = struct.pack("<HH", tag >> 16, tag & 0xFFFF)
    if implicit:
        return head + struct.pack("<I", n) + value
    if vr in LONG_VRS or n > 0xFFFF:
        return head + (vr if vr in LONG_VRS else b"UN") + b"\x00\x00" + struct.pack("<I", n) + value
    return head + vr + struct.pack("<H", n) + value


@st.composite
def byte_damage(draw: Any, body: bytes, syntax: str, steps: list[str]) -> bytes:
    implicit = syntax == IMPLICIT
    walkable = syntax in (EXPLICIT, IMPLICIT)
    for _ in range(draw(st.integers(0, 3))):
        elems = walk(body, implicit) if walkable else []
        op = draw(st.sampled_from(["truncate", "flip", "junk", "length", "vr", "insert", "endless"]
                                  if elems else ["truncate", "flip", "junk"]))
        if op == "truncate" and body:
            at = draw(st.integers(0, len(body) - 1))
            body = body[:at]
            steps.append(f"truncate at {at}")
        elif op == "flip" and body:
            b = bytearray(body)
            for _ in range(draw(st.integers(1, 16))):
                b[draw(st.integers(0, len(b) - 1))] = draw(st.integers(0, 255))
            body = bytes(b)
            steps.append("flip")
        elif op == "junk":
            body = body + draw(st.binary(max_size=64))
            steps.append("junk")
        elif op == "length":
            tag, start, vstart, length, vr = draw(st.sampled_from(elems))
            new = draw(st.sampled_from([0, 1, 0xFFFF, 0xFFFFFFFF, 0xFFFFFFF0, 0x7FFFFFFF, length + 1, length * 3 + 2]))
            if implicit or vr in LONG_VRS:
                at, packed = (start + 4, struct.pack("<I", new & 0xFFFFFFFF)) if implicit else \
                    (start + 8, struct.pack("<I", new & 0xFFFFFFFF))
            else:
                at, packed = start + 6, struct.pack("<H", new & 0xFFFF)
            body = body[:at] + packed + body[at + len(packed):]
            steps.append(f"length of {tag:08X} -> {new:#x}")
        elif op == "vr" and not implicit:
            tag, start, vstart, length, vr = draw(st.sampled_from(elems))
            new_vr = draw(st.sampled_from(VRS))
            value = body[vstart:vstart + length] if length != 0xFFFFFFFF else b""
            body = body[:start] + _element(tag, new_vr, value, False) + body[vstart + len(value):]
            steps.append(f"VR of {tag:08X} {vr!r} -> {new_vr!r}")
        elif op in ("insert", "endless"):
            tag = draw(st.sampled_from([0x00081030, 0x00091001, 0x00102160, 0x00290010, 0x00200052, 0x00400275,
                                        0x7FE00008, 0x00081140, 0x00540016, 0x00189346]))
            if op == "endless":  # an undefined-length sequence or UN whose delimiter never comes
                vr = draw(st.sampled_from([b"SQ", b"UN", b"OB"]))
                item = b"\xfe\xff\x00\xe0\xff\xff\xff\xff" + _element(0x00080100, b"SH", b"X ", implicit)
                raw = _element(tag, vr, item * draw(st.integers(0, 3)), implicit, 0xFFFFFFFF)
            else:
                vr = draw(st.sampled_from(VRS))
                raw = _element(tag, vr, draw(st.binary(max_size=40)), implicit)
            at = next((s for t, s, *_ in elems if t > tag), len(body))
            body = body[:at] + raw + body[at:]
            steps.append(f"{op} {tag:08X} {vr!r}")
    return body


@st.composite
def receive_cases(draw: Any) -> ReceiveCase:
    base = draw(st.sampled_from(sorted(BASES)))
    ds = _deterministic(BASES[base]())
    n = draw(st.integers(1, 10**6))  # deterministic UIDs: hypothesis replays draws; collisions = re-sends
    ds.SOPInstanceUID, ds.SeriesInstanceUID, ds.StudyInstanceUID = (f"{ROOT}.{n}.{k}" for k in (3, 2, 1))
    steps = [base]
    sop_uid = ds.SOPInstanceUID
    syntax = draw(dataset_damage(ds, steps))
    try:
        body = encode(ds, syntax)
    except Exception as exc:  # pydicom refused to write a value: send the undamaged encoding
        steps.append(f"encode failed ({exc.__class__.__name__})")
        body = encode(_deterministic(BASES[base]()), EXPLICIT)
        syntax = EXPLICIT
    body = draw(byte_damage(body, syntax, steps))
    hint = draw(st.sampled_from([sop_uid, sop_uid, "", "1.2.3"]))
    return ReceiveCase(str(ds.get("SOPClassUID", "1.2.840.10008.5.1.4.1.1.7") or "1.2.840.10008.5.1.4.1.1.7"),
                       hint, syntax, body, steps)


# -- checks -----------------------------------------------------------------------------------------
@dataclass
class Outcome:
    stored: bool
    refused: str = ""        # the store's exception class (-> DIMSE failure status) when not stored
    tensor: str = ""         # "ok", "not analysed: <reason>", or "" when not tried


def check_tensor_path(path: Path | Dataset) -> str:
    """load_cxr + to_model_input: a finite tensor or NotAnalysable; anything else propagates."""
    try:
        image = load_cxr(path)
    except NotAnalysable as exc:
        assert exc.reason, "NotAnalysable without a reason"
        return f"not analysed: {exc.reason}"
    tensor = to_model_input(image)
    assert tensor.shape == (1, 3, 224, 224) and tensor.dtype == np.float32
    assert np.isfinite(tensor).all(), "non-finite values in the model input"
    return "ok"


def check_receive(store: StudyStore, case: ReceiveCase, tensor: bool = True) -> Outcome:
    """Store the case; a refusal must be one of the store's typed errors (each maps to a DIMSE
    failure status), a stored instance must sit at its UID path inside the data dir and pass
    the DICOM-to-tensor path or be refused with a reason."""
    try:
        stored = store.store_instance(case.part10(), calling_ae="FUZZ", sop_uid_hint=case.sop_uid_hint)
    except (InvalidDataset, OutOfResources) as exc:
        return Outcome(False, exc.__class__.__name__)
    path = stored.path.resolve()
    assert path.is_relative_to(store.studies_dir.resolve()), path
    assert path.is_file() and path.name == f"{stored.header.sop_uid}.dcm"
    outcome = Outcome(True)
    if tensor:
        outcome.tensor = check_tensor_path(path)
    return outcome


def files_outside(root: Path, data_dir: Path) -> list[Path]:
    """Files under ``root`` that are not in the data dir, and files in the data dir outside its layout."""
    bad = []
    data_dir = data_dir.resolve()
    allowed = [data_dir / d for d in ("studies", "tmp", "superseded", "results")]
    for path in root.resolve().rglob("*"):
        if not path.is_file() and not path.is_symlink():
            continue
        if not path.is_relative_to(data_dir):
            bad.append(path)
        elif path.parent == data_dir:
            if not path.name.startswith(("index.sqlite3", "audit")) and path.name != "service.running":
                bad.append(path)
        elif not any(path.is_relative_to(a) for a in allowed):
            bad.append(path)
    return bad


# -- head-CT series ---------------------------------------------------------------------------------
@st.composite
def ct_series_cases(draw: Any) -> tuple[list[Dataset], list[str]]:
    n = draw(st.sampled_from([0, 3, 9, 10, 12, 12, 14]))
    study, series = f"{ROOT}.1", f"{ROOT}.2"
    rows = draw(st.sampled_from([8, 16]))
    step = draw(st.sampled_from([5.0, 5.0, 5.0, 1.0, -5.0, 0.0, 0.001, 1e6, math.nan, math.inf]))
    slices = [make_ct_slice(np.full((rows, rows), i, np.int16), (0.0, 0.0, step * i), instance=i + 1,
                            study_uid=study, series_uid=series) for i in range(n)]
    for i, ds in enumerate(slices):
        _deterministic(ds)
        ds.SOPInstanceUID = ds.file_meta.MediaStorageSOPInstanceUID = f"{ROOT}.3.{i}"
    steps = [f"{n} slices step {step}"]
    for _ in range(draw(st.sampled_from([0, 0, 1, 2, 3]))):
        if not slices:
            break
        k = draw(st.integers(0, len(slices) - 1))
        ds = slices[k] if draw(st.booleans()) else None
        targets = [ds] if ds is not None else slices
        op = draw(st.sampled_from(["orientation", "spacing", "position", "dims", "pixels", "modality", "scout",
                                   "compressed", "delete", "slope", "duplicate"]))
        for t in targets:
            if op == "orientation":
                t.ImageOrientationPatient = draw(st.sampled_from([[0, 0, 0, 0, 0, 0], [1, 0, 0, 1, 0, 0],
                                                                  [1, 0, 0, 0, 0.7071, 0.7071], [1e308] * 6]))
            elif op == "spacing":
                set_raw(t, "PixelSpacing", draw(st.sampled_from([b"0\\0", b"-1\\1", b"1e308\\1e308", b"nan\\1",
                                                                  b"1", b"x\\y"])))
            elif op == "position":
                set_raw(t, "ImagePositionPatient", draw(st.sampled_from([b"nan\\0\\0", b"inf\\inf\\inf", b"0\\0",
                                                                          b"1e308\\0\\-1e308", b""])))
            elif op == "dims":
                setattr(t, draw(st.sampled_from(["Rows", "Columns"])), draw(st.sampled_from([0, 1, 17, 4096, 65535])))
            elif op == "pixels" and "PixelData" in t:
                t.PixelData = bytes(t.PixelData)[: draw(st.integers(0, len(t.PixelData)))]
            elif op == "modality":
                t.Modality = draw(st.sampled_from(["MR", "", "CT", "ct"]))
            elif op == "scout":
                t.ImageType = ["ORIGINAL", "PRIMARY", "LOCALIZER"]
            elif op == "compressed":
                t.file_meta.TransferSyntaxUID = "1.2.840.10008.1.2.4.90"
                t.PixelData = encaps([draw(st.binary(min_size=0, max_size=64))])
                t["PixelData"].VR = "OB"
                t["PixelData"].is_undefined_length = True
            elif op == "delete":
                kw = draw(st.sampled_from(["ImagePositionPatient", "PixelSpacing", "Rows", "PixelData",
                                           "SeriesInstanceUID", "ImageOrientationPatient"]))
                if kw in t:
                    delattr(t, kw)
            elif op == "slope":
                set_raw(t, "RescaleSlope", draw(st.sampled_from([b"nan", b"0", b"1e308", b"-inf", b"x"])))
            elif op == "duplicate":
                slices.append(t.copy())
                break
        steps.append(f"{op} on {'slice ' + str(k) if ds is not None else 'all'}")
    return slices, steps


def check_ct_series(slices: list[Dataset]) -> str:
    try:
        volume = load_ct_volume(slices)
    except NotAnalysable as exc:
        assert exc.reason
        return f"not analysed: {exc.reason}"
    assert volume.hu.ndim == 3 and volume.hu.dtype == np.float32
    assert np.isfinite(volume.hu).all(), "non-finite HU"
    return "ok"
