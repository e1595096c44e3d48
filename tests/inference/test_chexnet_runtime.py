"""CheXNet runtime on the built pack: probabilities, flags, CAMs where the feature map says."""

from __future__ import annotations

import subprocess
import sys
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import numpy as np
import openvino as ov
import pytest

from inference.chexnet import Chexnet, ChexnetOutput, cam_to_image
from inference.cxr_input import CxrImage, load_cxr, load_png, to_model_input
from inference.packs import ModelPack, load_pack
from tests.support import REPO
from tests.support.dicom_factory import make_cxr_dataset


@pytest.fixture(scope="module")
def pack(packs_dir: Path) -> ModelPack:
    return load_pack(packs_dir / "chexnet")


@pytest.fixture(scope="module")
def chexnet(pack: ModelPack, core: ov.Core) -> Chexnet:
    return Chexnet(pack, core, device="CPU")


@pytest.fixture(scope="module")
def image(cxr_dir: Path) -> CxrImage:
    ds = make_cxr_dataset(cxr_dir / "images" / "00000211_000.png", modality="CR", photometric="MONOCHROME1")
    # A non-square crop, so rows and columns cannot be confused anywhere.
    full = load_cxr(ds)
    return CxrImage(pixels=full.pixels[:, 100:860].copy(), pixel_spacing_mm=full.pixel_spacing_mm,
                    raw_shape=(1024, 760))


def test_analyse_outputs(chexnet: Chexnet, image: CxrImage, pack: ModelPack) -> None:
    out = chexnet.analyse(image)
    assert isinstance(out, ChexnetOutput)
    assert list(out.probabilities) == pack.manifest["labels"] == out.labels
    assert all(0.0 < p < 1.0 for p in out.probabilities.values())
    assert out.thresholds == pack.manifest["thresholds"]
    assert out.flagged == [k for k, p in out.probabilities.items() if p >= out.thresholds[k]]
    assert out.cam.dtype == np.uint8 and out.cam.shape == (14, image.rows, image.cols) == (14, 1024, 760)
    # 7x7 maps are min..max normalised before upsampling: the hottest cell's centre is ~255, the coldest ~0.
    assert (out.cam.reshape(14, -1).max(axis=1) >= 250).all() and (out.cam.reshape(14, -1).min(axis=1) <= 5).all()
    assert set(out.timings) == {"preprocess", "infer", "cam"} and all(t >= 0 for t in out.timings.values())
    assert out.device == "CPU" and out.fallback_note is None and out.validated is False
    assert out.findings()["flagged"] == out.flagged


def test_int8_runtime_tracks_fp32(chexnet: Chexnet, image: CxrImage, pack: ModelPack, core: ov.Core) -> None:
    fp32 = core.compile_model(str(pack.member_xml("model", "fp32")), "CPU", {"INFERENCE_PRECISION_HINT": "f32"})
    reference = fp32(to_model_input(image, pack.manifest["preprocessing"]))["probs"][0]
    got = np.array(list(chexnet.analyse(image).probabilities.values()))
    assert np.abs(got - reference).max() <= 0.05


def test_cam_peaks_where_the_feature_map_says(chexnet: Chexnet, image: CxrImage, pack: ModelPack,
                                              core: ov.Core) -> None:
    compiled = core.compile_model(str(pack.member_xml("model", "int8")), "CPU")
    features = compiled(to_model_input(image, pack.manifest["preprocessing"]))["features"][0]  # [1024, 7, 7]
    weights = np.load(pack.file(pack.manifest["cam"]["weights"]))
    expected = np.einsum("ck,khw->chw", weights, features)
    out = chexnet.analyse(image)
    np.testing.assert_allclose(out.cam_raw, expected, rtol=1e-3, atol=1e-3 * np.abs(expected).max())
    cell_h, cell_w = image.rows / 7, image.cols / 7
    for c, label in enumerate(out.labels):
        unit = (expected[c] - expected[c].min()) / (expected[c].max() - expected[c].min())
        i, j = np.unravel_index(np.argmax(unit), (7, 7))
        # The hottest cell's centre is at full heat...
        assert out.cam[c, int((i + 0.5) * cell_h), int((j + 0.5) * cell_w)] >= 250, label
        # ...and every hottest pixel lies in a cell whose 7x7 score is (within rounding) the top one.
        allowed = np.zeros((image.rows, image.cols), bool)
        for ci, cj in zip(*np.nonzero(unit >= 1.0 - 2.0 / 255)):
            allowed[int(ci * cell_h):int((ci + 1) * cell_h) + 1, int(cj * cell_w):int((cj + 1) * cell_w) + 1] = True
        hot = out.cam[c] == out.cam[c].max()
        assert allowed[hot].all(), label
        # Far from the hottest cell (its opposite corner region) the map is cooler.
        assert out.cam[c].max() > np.percentile(out.cam[c], 50), label


def test_cam_normalisation_and_orientation() -> None:
    raw = np.zeros((2, 7, 7), np.float32)
    raw[0, 0, 6] = 5.0  # top right
    raw[0] -= 1.0
    cam = cam_to_image(raw, 70, 140)  # second finding constant -> all zero
    assert cam.shape == (2, 70, 140)
    assert cam[0, 4, 135] == 255 and cam[0, 65, 5] == 0 and cam[0, 5, 130] < 255
    assert not cam[1].any()
    with ThreadPoolExecutor(2) as pool:  # the runtime's threaded path gives the same pixels
        np.testing.assert_array_equal(cam_to_image(raw, 70, 140, pool), cam)


def test_rgba_png_runs_end_to_end(chexnet: Chexnet, cxr_dir: Path) -> None:
    out = chexnet.analyse(load_png(cxr_dir / "images" / "00005813_000.png"))
    assert out.cam.shape == (14, 1024, 1024)
    assert np.isfinite(list(out.probabilities.values())).all()


def test_unavailable_device_falls_back_to_cpu(pack: ModelPack, core: ov.Core, image: CxrImage) -> None:
    if "GPU" in core.available_devices:
        pytest.skip("a GPU is present; the fallback path is not reachable")
    model = Chexnet(pack, core, device="GPU")
    assert model.device == "CPU" and model.fallback_note and "GPU" in model.fallback_note
    out = model.analyse(image)
    assert out.device == "CPU" and out.fallback_note == model.fallback_note


def test_runtime_never_imports_torch_or_nncf() -> None:
    code = ("import sys, inference.chexnet, inference.cxr_input; "
            "bad = [m for m in ('torch', 'nncf') if m in sys.modules]; assert not bad, bad")
    repo = REPO
    subprocess.run([sys.executable, "-c", code], cwd=repo, check=True, timeout=120)
