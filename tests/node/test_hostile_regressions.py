"""Regression tests for what fuzzing the receive and DICOM-to-tensor paths found."""

from __future__ import annotations

import resource
import time
import tracemalloc
import zlib
from pathlib import Path

import numpy as np
import pytest
from pydicom.encaps import encapsulate
from pydicom.uid import CTImageStorage, JPEG2000Lossless, RLELossless, generate_uid

from app.core.store import MAX_INFLATED_BYTES, StudyStore, UnreadableDataset, read_header
from app.core.store.part10 import file_meta_bytes
from dicom_node.statuses import STATUS_CANNOT_UNDERSTAND
from dicom_node.scu import send_files, send_raw
from inference.ct_volume import load_ct_volume
from inference.cxr_input import load_cxr
from inference.errors import NotAnalysable
from tests.support.dicom_factory import make_ct_slice, make_cxr_dataset, write
from tests.support.node_helpers import Node
from tests.support.dicom_factory import encode_body

DEFLATED = "1.2.840.10008.1.2.1.99"


def _deflate(data: bytes) -> bytes:
    c = zlib.compressobj(9, zlib.DEFLATED, -zlib.MAX_WBITS)
    return c.compress(data) + c.flush()


def _ct() -> object:
    return make_ct_slice(np.zeros((16, 16), np.int16), (0.0, 0.0, 0.0))


def test_corrupt_deflate_stream_is_cannot_understand_not_processing_failure(node: Node) -> None:
    """zlib.error escaped read_header, so the SCP answered 0x0110 (unexpected error) with a traceback."""
    ds = _ct()
    data = file_meta_bytes(ds.SOPClassUID, ds.SOPInstanceUID, DEFLATED, "X") + b"\x01\x02not deflate" * 8
    with pytest.raises(UnreadableDataset):
        read_header(data)
    status = send_raw("127.0.0.1", node.port, node.ae, CTImageStorage, ds.SOPInstanceUID, b"\x01\x02junk" * 8,
                      transfer_syntax=DEFLATED)
    assert status == STATUS_CANNOT_UNDERSTAND
    assert node.store.instance_rows() == [] and list(node.store.tmp_dir.iterdir()) == []


def test_deflate_bomb_is_refused_without_inflating_it(data_dir: Path) -> None:
    """pydicom inflates a whole deflated dataset in memory: 300 KB on the wire became 300 MB
    (and a few MB would have become gigabytes) on every association sending it."""
    ds = _ct()
    body = encode_body(ds)
    bomb = _deflate(body + b"\x00" * (MAX_INFLATED_BYTES + (16 << 20)))
    assert len(bomb) < 1 << 20
    data = file_meta_bytes(ds.SOPClassUID, ds.SOPInstanceUID, DEFLATED, "X") + bomb
    store = StudyStore(data_dir)
    tracemalloc.start()
    try:
        with pytest.raises(UnreadableDataset, match="inflates to more than"):
            store.store_instance(data)
        peak = tracemalloc.get_traced_memory()[1]
    finally:
        tracemalloc.stop()
    assert peak < 64 << 20  # bounded steps, output discarded
    assert store.instance_rows() == []
    # an honest deflated instance still goes in
    ok = file_meta_bytes(ds.SOPClassUID, ds.SOPInstanceUID, DEFLATED, "X") + _deflate(body)
    assert store.store_instance(ok).outcome == "stored"


@pytest.mark.parametrize("syntax", [None, JPEG2000Lossless, RLELossless])
def test_absurd_radiograph_dimensions_are_refused_before_decoding(cxr_dir: Path, syntax: object) -> None:
    """A 65535 x 65535 header with a tiny payload made the decoders allocate 8 GiB up front."""
    png = sorted((cxr_dir / "images").glob("*.png"))[0]
    ds = make_cxr_dataset(png)
    ds.Rows = ds.Columns = 65535
    if syntax is None:
        ds.PixelData = b"\x00" * 1000
    else:
        ds.file_meta.TransferSyntaxUID = syntax
        ds.PixelData = encapsulate([b"\xff\x4f\xff\x51" + b"\x00" * 200])
        ds["PixelData"].VR = "OB"
    before = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    started = time.monotonic()
    with pytest.raises(NotAnalysable, match="would take 8191 MiB decoded"):
        load_cxr(ds)
    assert time.monotonic() - started < 1.0
    assert resource.getrusage(resource.RUSAGE_SELF).ru_maxrss - before < 100 << 10  # KiB: < 100 MB


def test_bits_allocated_nonsense_is_not_analysed(cxr_dir: Path) -> None:
    ds = make_cxr_dataset(sorted((cxr_dir / "images").glob("*.png"))[0])
    ds.BitsAllocated = 7
    with pytest.raises(NotAnalysable, match="Bits Allocated 7"):
        load_cxr(ds)


def test_absurd_ct_matrix_is_refused_before_the_stack_is_allocated() -> None:
    series, study = generate_uid(), generate_uid()
    slices = [make_ct_slice(np.zeros((16, 16), np.int16), (0.0, 0.0, 5.0 * i), instance=i + 1,
                            series_uid=series, study_uid=study) for i in range(12)]
    for ds in slices:
        ds.Rows = ds.Columns = 65535
    with pytest.raises(NotAnalysable, match="65535x65535"):
        load_ct_volume(slices)


def test_node_keeps_serving_after_hostile_input(node: Node, tmp_path: Path) -> None:
    ds = _ct()
    for body in (b"", b"\xff" * 7, encode_body(ds)[:-3]):
        send_raw("127.0.0.1", node.port, node.ae, CTImageStorage, generate_uid(), body)
    assert send_files("127.0.0.1", node.port, node.ae, [write(_ct(), tmp_path)]) == [0]


# -- found by tests/node/test_fuzz_receive.py -------------------------------------------------------
def _cxr_small() -> object:
    from tests.support.fuzz_cases import cxr_dataset

    return cxr_dataset(64, 64)


def test_nan_window_is_ignored_not_fed_to_the_model() -> None:
    """WindowCenter 'nan' produced a NaN tensor (every probability NaN)."""
    from inference.cxr_input import to_model_input
    from tests.support.fuzz_cases import set_raw

    ds = _cxr_small()
    set_raw(ds, "WindowCenter", b"nan")
    image = load_cxr(ds)
    assert image.voi == "minmax"
    assert np.isfinite(to_model_input(image)).all()


@pytest.mark.parametrize("keyword,raw", [("RescaleSlope", b""), ("RescaleSlope", b"x"), ("RescaleIntercept", b"nan"),
                                         ("RescaleSlope", b"0")])
def test_unusable_rescale_is_not_analysed_with_a_reason(keyword: str, raw: bytes) -> None:
    """An empty Rescale Slope raised TypeError out of load_cxr (pipeline: 'failed: TypeError')."""
    from tests.support.fuzz_cases import set_raw

    ds = _cxr_small()
    set_raw(ds, keyword, raw)
    with pytest.raises(NotAnalysable, match="Rescale"):
        load_cxr(ds)


def test_single_valued_pixel_spacing_is_ignored() -> None:
    """PixelSpacing with one value raised TypeError: object of type 'DSfloat' has no len()."""
    from tests.support.fuzz_cases import set_raw

    ds = _cxr_small()
    set_raw(ds, "PixelSpacing", b"0.2")
    assert load_cxr(ds).pixel_spacing_mm is None


def test_malformed_voi_lut_is_not_analysed() -> None:
    """A VOI LUT descriptor with 0 bits per entry raised NotImplementedError."""
    from pydicom.dataset import Dataset

    ds = _cxr_small()
    item = Dataset()
    item.LUTDescriptor, item.LUTData = [1, 0, 0], [0]
    ds.VOILUTSequence = [item]
    with pytest.raises(NotAnalysable, match="malformed header"):
        load_cxr(ds)


def test_wrong_vr_on_the_character_set_is_cannot_understand(data_dir: Path) -> None:
    """(0008,0005) sent with VR FL made pydicom raise BytesLengthException, which escaped
    read_header: the SCP answered 0x0110 (unexpected error) and logged a traceback."""
    ds = _ct()
    body = encode_body(ds)
    body = body.replace(b"\x08\x00\x08\x00CS", b"\x08\x00\x05\x00FL\x0a\x00ISO_IR 100\x08\x00\x08\x00CS", 1)
    with pytest.raises(UnreadableDataset):
        StudyStore(data_dir).store_instance(file_meta_bytes(ds.SOPClassUID, ds.SOPInstanceUID,
                                                            "1.2.840.10008.1.2.1", "X") + body)


def _panicking_rle_radiograph() -> object:
    """A 64x64 radiograph whose RLE stream (pydicom's sample with a few bytes flipped, fixed
    seed) makes the Rust RLE decoder panic: 'index out of bounds'."""
    import random

    from tests.support.fuzz_cases import cxr_dataset, compressed_sample, encaps

    base = max(compressed_sample("1.2.840.10008.1.2.5"), key=len)
    rng = random.Random(0)
    for _ in range(200):
        kind = rng.choice(["trunc", "flip", "rand"])
        frag = bytearray(base)
        if kind == "trunc":
            frag = frag[:rng.randrange(1, len(frag))]
        elif kind == "flip":
            for _ in range(rng.randint(1, 8)):
                frag[rng.randrange(len(frag))] = rng.randrange(256)
        else:
            frag = bytearray(rng.randbytes(rng.randint(1, 300)))
        ds = cxr_dataset(64, 64)
        ds.file_meta.TransferSyntaxUID = "1.2.840.10008.1.2.5"
        ds.PixelData = encaps([bytes(frag)])
        ds["PixelData"].VR = "OB"
        ds["PixelData"].is_undefined_length = True
        try:
            ds.copy().pixel_array
        except Exception:
            continue
        except BaseException as exc:
            if type(exc).__name__ == "PanicException":
                return ds
            raise
    raise AssertionError("no panicking RLE stream found")


def test_decoder_panic_is_not_analysed_and_does_not_escape() -> None:
    """pyo3's PanicException is a BaseException: it escaped load_cxr and the analyser's
    `except Exception` and would have ended the analysis worker thread."""
    ds = _panicking_rle_radiograph()
    with pytest.raises(NotAnalysable, match="could not be decoded"):
        load_cxr(ds)


def _ct_series(n: int = 12) -> list:
    series, study = generate_uid(), generate_uid()
    return [make_ct_slice(np.full((16, 16), i, np.int16), (0.0, 0.0, 5.0 * i), instance=i + 1,
                          series_uid=series, study_uid=study) for i in range(n)]


@pytest.mark.parametrize("damage,match", [
    (lambda ds: setattr(ds, "ImageOrientationPatient", [0, 0, 0, 0, 0, 0]), "orientation"),   # ValueError: negative dims
    (lambda ds: setattr(ds, "ImagePositionPatient", [float("nan"), 0, 0]), "finite"),
    (lambda ds: setattr(ds, "PixelSpacing", [0, 0]), "pixel spacing"),
    (lambda ds: setattr(ds, "RescaleSlope", "nan"), "not finite"),
])
def test_hostile_ct_geometry_is_not_analysed(damage, match: str) -> None:
    """Found by tests/inference/test_fuzz_tensor.py: zero or NaN geometry reached np.full with negative or
    NaN sizes (ValueError) or produced NaN HU instead of a reason."""
    slices = _ct_series()
    for ds in slices:
        damage(ds)
    with pytest.raises(NotAnalysable, match=match):
        load_ct_volume(slices)


def test_pipeline_marks_hostile_series_not_analysed_and_keeps_going(data_dir: Path, tmp_path: Path, cxr_dir: Path,
                                                                    packs_dir: Path) -> None:
    """Through the real pipeline and CheXNet pack: a 65535 x 65535 header, a decoder-panicking
    RLE stream and a NaN window, then a normal radiograph: reasons for the first two, a result
    for the others, and the worker is still there for the last one."""
    from dataclasses import replace

    from app.core.config import Config
    from app.core.events import EventHub
    from app.core.pipeline import Pipeline
    from tests.support.fuzz_cases import set_raw

    store = StudyStore(data_dir)
    huge = make_cxr_dataset(sorted((cxr_dir / "images").glob("*.png"))[0])
    huge.Rows = huge.Columns = 65535
    panic = _panicking_rle_radiograph()
    nan_window = make_cxr_dataset(sorted((cxr_dir / "images").glob("*.png"))[1])
    set_raw(nan_window, "WindowCenter", b"nan")
    normal = make_cxr_dataset(sorted((cxr_dir / "images").glob("*.png"))[2])
    series = []
    for i, ds in enumerate((huge, panic, nan_window, normal)):
        ds.SOPInstanceUID = ds.file_meta.MediaStorageSOPInstanceUID = generate_uid()
        ds.StudyInstanceUID, ds.SeriesInstanceUID = generate_uid(), generate_uid()
        series.append(store.store_instance(write(ds, tmp_path / f"s{i}").read_bytes()).header.series_uid)
        store.enqueue_job(series[-1])
    config = replace(Config(), data_dir=data_dir, packs_dir=packs_dir, cache_dir=tmp_path / "cache")
    pipeline = Pipeline(config, store, EventHub())
    pipeline.models.load()
    pipeline.run_until_idle()
    results = [store.get_result(s) for s in series]
    assert results[0].status == "not_analysed" and "would take 8191 MiB decoded" in results[0].summary
    assert results[1].status == "not_analysed" and results[1].summary.startswith("not analysed: pixel data could not")
    assert results[2].status == "done"
    assert all(np.isfinite(p) for p in results[2].findings["probabilities"].values())
    assert results[3].status == "done"
    assert store.pending_jobs() == 0
