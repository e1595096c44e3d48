"""inference.ct_volume on the real gantry-tilted series and on synthetic tilted series with a known sphere."""

from __future__ import annotations

import math
from pathlib import Path

import numpy as np
import pydicom
import pytest

from inference.ct_volume import labels_to_native, load_ct_volume, volumes_ml
from inference.errors import NotAnalysable
from tests.support.dicom_factory import SPHERE_CENTRE, SPHERE_R, sphere_series

def _native_sphere_masks(series: list[pydicom.Dataset]) -> np.ndarray:
    return np.stack([ds.pixel_array.astype(np.int32) + int(ds.RescaleIntercept) > -450 for ds in series])


def test_real_series_geometry(headct_dir: Path) -> None:
    vol = load_ct_volume(sorted(headct_dir.glob("*.dcm")))
    assert vol.shape == (233, 239, 251)
    np.testing.assert_allclose(vol.origin, [-125.0, -124.0, -74.0])
    assert vol.fill_value == -1500.0
    geo = vol.native
    steps = np.diff(geo.offsets)
    np.testing.assert_allclose(steps[:13], 4.002, atol=0.01)
    assert abs(steps[13] - 1.081) < 0.01
    np.testing.assert_allclose(steps[14:], 6.999, atol=0.01)
    assert abs(geo.offsets[-1] - 144.1) < 0.1
    assert [int(pydicom.dcmread(headct_dir / f"{i:02d}.dcm", stop_before_pixels=True).InstanceNumber)
            for i in range(1, 29)] == list(range(1, 29))
    # Brain tissue fills the centre, air/padding the corners of the tilted bounding box.
    centre = vol.hu[110:130, 110:130, 115:135]
    assert 0 < np.median(centre) < 80
    assert vol.hu[0, 0, 0] == -1500.0 and vol.hu[-1, -1, -1] == -1500.0


def test_real_series_round_trip(headct_dir: Path) -> None:
    """HU sampled back at native pixels agrees with the native pixels (tilt handled both ways)."""
    files = sorted(headct_dir.glob("*.dcm"))
    vol = load_ct_volume(files)
    tissue = ((vol.hu > 0) & (vol.hu < 80)).astype(np.uint8)
    back = labels_to_native(tissue, vol)
    by_uid = {str(pydicom.dcmread(f, stop_before_pixels=True).SOPInstanceUID): f for f in files}
    native = np.stack([(lambda a: (a > 0) & (a < 80))(pydicom.dcmread(by_uid[u]).pixel_array) for u in vol.sop_uids])
    agree = (back.astype(bool) == native).mean()
    assert agree > 0.93, agree
    # A stack ignoring the tilt would shift the anatomy by up to ~25 mm: much worse agreement.


@pytest.mark.parametrize("tilt", [0.0, 20.0])
def test_synthetic_tilted_sphere_is_round(tilt: float) -> None:
    series = sphere_series(tilt)
    rng = np.random.default_rng(1)
    shuffled = [series[i] for i in rng.permutation(len(series))]  # order must not matter
    vol = load_ct_volume(shuffled)
    mask = vol.hu > -450
    idx = np.argwhere(mask).astype(float)
    centre_lps = idx.mean(axis=0)[::-1] + vol.origin
    np.testing.assert_allclose(centre_lps, SPHERE_CENTRE, atol=1.0)
    extents = idx.max(axis=0) - idx.min(axis=0) + 1
    np.testing.assert_allclose(extents, 2 * SPHERE_R, atol=3.0)
    # Round: the centroid of every axial section lies on the centre (a shear would move it).
    for z in range(int(idx[:, 0].min()) + 5, int(idx[:, 0].max()) - 5, 5):
        yx = np.argwhere(mask[z]).mean(axis=0)
        np.testing.assert_allclose(yx[::-1] + vol.origin[:2], SPHERE_CENTRE[:2], atol=1.0)
    true_ml = 4 / 3 * math.pi * SPHERE_R**3 / 1000
    assert abs(mask.sum() / 1000 - true_ml) < 0.05 * true_ml

    native = labels_to_native(mask.astype(np.uint8), vol)
    expected = _native_sphere_masks(vol_order(series, vol.sop_uids))
    assert (native.astype(bool) == expected).mean() > 0.995
    ml = volumes_ml(expected.astype(np.uint8), vol.native)[1]
    assert abs(ml - true_ml) < 0.06 * true_ml, (ml, true_ml)


def vol_order(series: list[pydicom.Dataset], uids: tuple[str, ...]) -> list[pydicom.Dataset]:
    by_uid = {str(ds.SOPInstanceUID): ds for ds in series}
    return [by_uid[u] for u in uids]


def test_slice_extents_do_not_double_count() -> None:
    series = sphere_series(0.0, steps=tuple([4.0] * 8 + [1.0] + [7.0] * 6))
    vol = load_ct_volume(series)
    ext = vol.native.extents
    assert abs(ext.sum() - (vol.native.offsets[-1] + (ext[0] + ext[-1]) / 2)) < 1e-6
    assert abs(ext[8] - 2.5) < 1e-6 and abs(ext[9] - 4.0) < 1e-6


def _refusal(series: list, match: str) -> None:
    with pytest.raises(NotAnalysable, match=match):
        load_ct_volume(series)


def test_refuses_too_few_slices() -> None:
    _refusal(sphere_series(steps=(5.0,) * 5), "only 6 slices")


def test_refuses_missing_slice() -> None:
    series = sphere_series(steps=(5.0,) * 20)
    _refusal(series[:8] + series[9:], "missing slices")


def test_refuses_missing_slice_in_real_series(headct_dir: Path) -> None:
    files = sorted(headct_dir.glob("*.dcm"))
    _refusal(files[:19] + files[20:], "missing slices")  # one 7 mm slice gone
    _refusal(files[:5] + files[6:], "missing slices")  # one 4 mm slice gone


def test_refuses_non_ct_localizer_body_part_and_mixtures() -> None:
    _refusal(sphere_series(modality="MR"), "not a CT")
    series = sphere_series()
    series[3].ImageType = ["ORIGINAL", "PRIMARY", "LOCALIZER"]
    _refusal(series, "localizer")
    _refusal(sphere_series(body_part="CHEST"), "body part")
    a, b = sphere_series(), sphere_series()
    _refusal(a[:10] + b[10:], "different series")
    c = sphere_series()
    c[4].ImageOrientationPatient = [0, 1, 0, 0, 0, -1]
    _refusal(c, "orientation")
    d = sphere_series()
    small = sphere_series(matrix=64)
    small[5].SeriesInstanceUID = d[0].SeriesInstanceUID
    _refusal(d[:5] + [small[5]] + d[6:], "matrix")
    e = sphere_series()
    e[7].ImagePositionPatient = list(e[6].ImagePositionPatient)
    _refusal(e, "same position")
