"""DICOM chest radiograph decoding: Modality LUT, VOI, MONOCHROME1, bits stored, refusals."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
from PIL import Image
from pydicom.dataset import Dataset
from pydicom.uid import JPEG2000Lossless, RLELossless

from inference.cxr_input import CxrImage, load_cxr, load_png, to_model_input
from inference.errors import NotAnalysable
from tests.support.dicom_factory import make_cxr_dataset, write_cxr

GREY = "00000129_000.png"
RGBA = "00000100_000.png"


def _png(cxr_dir: Path, name: str = GREY) -> np.ndarray:
    return np.asarray(Image.open(cxr_dir / "images" / name).convert("L"), dtype=np.float64) / 255.0


@pytest.mark.parametrize("modality", ["DX", "CR"])
@pytest.mark.parametrize("photometric", ["MONOCHROME1", "MONOCHROME2"])
def test_12bit_radiograph_matches_png(cxr_dir: Path, modality: str, photometric: str) -> None:
    ds = make_cxr_dataset(cxr_dir / "images" / GREY, modality=modality, photometric=photometric, bits_stored=12)
    image = load_cxr(ds)
    expected = _png(cxr_dir)
    assert image.pixels.dtype == np.float32 and image.pixels.shape == expected.shape == image.raw_shape
    assert image.voi == "window" and image.photometric == photometric and image.modality == modality
    # 8 bits spread over 12 and windowed back: within half an 8-bit step everywhere.
    assert np.abs(image.pixels - expected).max() < 0.5 / 255
    assert image.pixel_spacing_mm == (0.4, 0.4) and image.spacing_source == "PixelSpacing"


def test_monochrome1_is_inverted(cxr_dir: Path) -> None:
    ds = make_cxr_dataset(cxr_dir / "images" / GREY, photometric="MONOCHROME1")
    stored = ds.pixel_array.astype(np.float64) / 4095
    expected = _png(cxr_dir)
    # The stored values are the negative of the picture; the decoded pixels are the picture.
    assert np.corrcoef(stored.ravel(), expected.ravel())[0, 1] < -0.99
    assert np.corrcoef(load_cxr(ds).pixels.ravel(), expected.ravel())[0, 1] > 0.999


def test_without_voi_the_stored_range_is_stretched(cxr_dir: Path) -> None:
    ds = make_cxr_dataset(cxr_dir / "images" / GREY, photometric="MONOCHROME1", window=False)
    image = load_cxr(ds)
    assert image.voi == "minmax"
    png = _png(cxr_dir)
    expected = (png - png.min()) / (png.max() - png.min())
    assert np.abs(image.pixels - expected).max() < 1 / 255
    assert image.pixels.min() == 0.0 and image.pixels.max() == 1.0


def test_rescale_is_applied_before_the_window(cxr_dir: Path) -> None:
    """A window in modality units (after slope/intercept) must select the same picture."""
    ds = make_cxr_dataset(cxr_dir / "images" / GREY)
    ds.RescaleSlope = 2
    ds.RescaleIntercept = -1000
    ds.WindowCenter = 2 * 2047.5 - 1000
    ds.WindowWidth = 2 * 4096
    assert np.abs(load_cxr(ds).pixels - _png(cxr_dir)).max() < 1 / 255


def test_voi_lut_sequence_is_used(cxr_dir: Path) -> None:
    ds = make_cxr_dataset(cxr_dir / "images" / GREY)
    lut = np.round(np.sqrt(np.arange(4096) / 4095) * 65535).astype(np.uint16)
    item = Dataset()
    item.LUTDescriptor = [4096, 0, 16]
    item.LUTData = lut.tolist()
    ds.VOILUTSequence = [item]
    image = load_cxr(ds)
    assert image.voi == "lut"
    stored = ds.pixel_array.astype(np.float64)
    np.testing.assert_allclose(image.pixels, np.sqrt(stored / 4095), atol=1e-4)


def test_padding_is_black_and_outside_the_stretch(cxr_dir: Path) -> None:
    ds = make_cxr_dataset(cxr_dir / "images" / GREY, photometric="MONOCHROME1", window=False)
    stored = ds.pixel_array // 2  # image content in 0..2047
    stored[:, :40] = 4095  # a padded border, white in MONOCHROME1 storage
    ds.PixelData = stored.tobytes()
    ds.PixelPaddingValue = 4095
    image = load_cxr(ds)
    assert (image.pixels[:, :40] == 0).all()
    inner = -stored[:, 40:].astype(np.float64)
    expected = (inner - inner.min()) / (inner.max() - inner.min())
    assert np.abs(image.pixels[:, 40:] - expected).max() < 1e-5


def test_bits_above_bits_stored_are_ignored(cxr_dir: Path) -> None:
    clean = make_cxr_dataset(cxr_dir / "images" / GREY)
    dirty = make_cxr_dataset(cxr_dir / "images" / GREY)
    stored = np.frombuffer(dirty.PixelData, dtype=np.uint16) | np.uint16(0xA000)  # overlay bits 13, 15
    dirty.PixelData = stored.tobytes()
    np.testing.assert_array_equal(load_cxr(dirty).pixels, load_cxr(clean).pixels)


def test_rgba_png_derived_dicom_and_png(cxr_dir: Path, tmp_path: Path) -> None:
    path = write_cxr(tmp_path, cxr_dir / "images" / RGBA, modality="CR", photometric="MONOCHROME1")
    image = load_cxr(path)
    expected = _png(cxr_dir, RGBA)
    assert np.abs(image.pixels - expected).max() < 0.5 / 255
    png = load_png(cxr_dir / "images" / RGBA)
    assert png.raw_shape == (1024, 1024, 4) and png.pixels.shape == (1024, 1024)
    np.testing.assert_allclose(png.pixels, expected, atol=1e-6)


@pytest.mark.parametrize("syntax", [RLELossless, JPEG2000Lossless])
def test_compressed_pixel_data(cxr_dir: Path, tmp_path: Path, syntax: str) -> None:
    ds = make_cxr_dataset(cxr_dir / "images" / GREY, transfer_syntax=syntax)
    assert ds.file_meta.TransferSyntaxUID == syntax
    path = tmp_path / "c.dcm"
    ds.save_as(path, enforce_file_format=True)
    assert np.abs(load_cxr(path).pixels - _png(cxr_dir)).max() < 0.5 / 255


@pytest.mark.parametrize("view", ["LL", "RL", "LATERAL"])
def test_lateral_is_refused_with_reason(cxr_dir: Path, view: str) -> None:
    ds = make_cxr_dataset(cxr_dir / "images" / GREY, view=view)
    with pytest.raises(NotAnalysable, match="lateral") as info:
        load_cxr(ds)
    assert view in info.value.reason


def test_absent_view_and_body_part_are_accepted(cxr_dir: Path) -> None:
    ds = make_cxr_dataset(cxr_dir / "images" / GREY, view=None, body_part=None, modality="CR")
    assert load_cxr(ds).view is None
    ds = make_cxr_dataset(cxr_dir / "images" / GREY, view="AP")
    assert load_cxr(ds).view == "AP"


def _refused(ds: Dataset, fragment: str) -> None:
    with pytest.raises(NotAnalysable) as info:
        load_cxr(ds)
    assert fragment in info.value.reason.lower(), info.value.reason


def test_other_inputs_are_refused(cxr_dir: Path) -> None:
    png = cxr_dir / "images" / GREY
    ds = make_cxr_dataset(png)
    ds.Modality = "MR"
    _refused(ds, "modality mr")
    _refused(make_cxr_dataset(png, body_part="SKULL"), "body part skull")
    _refused(make_cxr_dataset(png, view="LLO"), "not a frontal")
    ds = make_cxr_dataset(png)
    ds.PresentationIntentType = "FOR PROCESSING"
    _refused(ds, "for processing")
    ds = make_cxr_dataset(png)
    ds.SOPClassUID = "1.2.840.10008.5.1.4.1.1.1.1.1"  # DX for processing, intent not stated
    del ds.PresentationIntentType
    _refused(ds, "for processing")

    ds = make_cxr_dataset(png)
    ds.NumberOfFrames = 2
    ds.PixelData = ds.PixelData * 2
    _refused(ds, "multi-frame")

    ds = make_cxr_dataset(png)
    rgb = np.repeat(np.asarray(Image.open(png).convert("L"))[..., None], 3, axis=2)
    ds.SamplesPerPixel, ds.PhotometricInterpretation, ds.PlanarConfiguration = 3, "RGB", 0
    ds.BitsAllocated = ds.BitsStored = 8
    ds.HighBit = 7
    ds.PixelData = rgb.tobytes()
    _refused(ds, "colour")


def test_model_tensor_follows_preprocessing(cxr_dir: Path) -> None:
    flat = CxrImage(pixels=np.full((300, 200), 0.5, np.float32), pixel_spacing_mm=None, raw_shape=(300, 200))
    x = to_model_input(flat)
    assert x.shape == (1, 3, 224, 224) and x.dtype == np.float32
    expected = (0.5 - np.array([0.485, 0.456, 0.406])) / np.array([0.229, 0.224, 0.225])
    np.testing.assert_allclose(x[0, :, 100, 100], expected, rtol=1e-5)
    # Whole image, no crop: a bright top band stays at the top of the tensor.
    band = flat.pixels.copy()
    band[:30] = 1.0
    y = to_model_input(CxrImage(pixels=band, pixel_spacing_mm=None, raw_shape=band.shape))
    assert y[0, 0, 2].mean() > y[0, 0, 100].mean() + 1.0
    small = to_model_input(flat, {"resize": [64, 96]})
    assert small.shape == (1, 3, 64, 96)
