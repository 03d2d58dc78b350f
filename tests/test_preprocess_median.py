"""Median subtraction, 3D median filter and depth correction against hand-computed cases and SciPy."""

from __future__ import annotations

import numpy as np
import pytest
from scipy import ndimage as ndi

from napari_vessel.errors import InputError
from napari_vessel.preprocess import (
    correct_depth_attenuation,
    median_filter2d,
    median_filter3d,
    subtract_slice_median,
)
from napari_vessel.preprocess._median3 import _programs, _run, median3x3x3, verify_networks


def test_slice_median_becomes_zero():
    rng = np.random.default_rng(0)
    image = rng.gamma(2.0, 10.0, (4, 7, 9)) + np.arange(4)[:, None, None] * 50  # odd slice size
    out = subtract_slice_median(image)
    assert out.dtype == np.float32
    assert np.all(out >= 0)
    np.testing.assert_array_equal(np.median(out.reshape(4, -1), axis=1), 0)
    # without clipping every slice is shifted by exactly its median
    raw = subtract_slice_median(image, clip=False)
    expected = image - np.median(image.reshape(4, -1), axis=1)[:, None, None]
    np.testing.assert_allclose(raw, expected, rtol=1e-5, atol=1e-4)


def test_slice_median_hand_computed_and_2d():
    image = np.array([[1.0, 5.0, 3.0], [2.0, 2.0, 8.0]])  # one slice, median (2 + 3) / 2
    expected = [[0, 2.5, 0.5], [0, 0, 5.5]]
    np.testing.assert_array_equal(subtract_slice_median(image), expected)
    stack = np.stack([image, image + 10])
    np.testing.assert_array_equal(subtract_slice_median(stack)[1], expected)


def test_even_slice_at_least_half_zero():
    rng = np.random.default_rng(1)
    out = subtract_slice_median(rng.random((3, 8, 8)))
    assert np.all((out == 0).reshape(3, -1).sum(axis=1) >= 32)


@pytest.mark.parametrize("shape", [(3, 4, 5), (1, 1, 1), (2, 3, 1), (6, 37, 35), (5, 70, 9)])
def test_median3_equals_scipy(shape):
    rng = np.random.default_rng(sum(shape))
    for image in (rng.random(shape).astype(np.float32), rng.integers(0, 4, shape)):
        np.testing.assert_array_equal(median3x3x3(image.astype(np.float32)),
                                      ndi.median_filter(image.astype(np.float32), size=3))


def test_median_filter3d_public_and_size5():
    rng = np.random.default_rng(3)
    image = (rng.random((6, 20, 18)) * 4000).astype(np.uint16)
    np.testing.assert_array_equal(median_filter3d(image), ndi.median_filter(image, 3).astype("f4"))
    np.testing.assert_array_equal(median_filter3d(image, 5),
                                  ndi.median_filter(image.astype(np.float32), 5))
    np.testing.assert_array_equal(median_filter3d(image, 1), image)


def test_median_networks_pass_the_01_check():
    verify_networks()  # every 0-1 input: enough for min/max networks (0-1 principle)


def test_median_networks_sort_ties_and_extremes():
    _, _, stage_c = _programs()
    values = [3.0, -1.0, 3.0, 1e30, -1e30, 0.0, 3.0, 2.0, 2.0] * 3
    assert _run(stage_c, sorted(values[:9]) + sorted(values[9:18]) + sorted(values[18:])) == [
        sorted(values)[13]]


def test_median_filter2d_preview():
    rng = np.random.default_rng(4)
    plane = rng.random((9, 11))
    np.testing.assert_allclose(median_filter2d(plane), ndi.median_filter(plane.astype("f4"), 3))


def test_median_bad_input():
    with pytest.raises(InputError, match="3D stack"):
        median_filter3d(np.zeros((5, 5)))
    with pytest.raises(InputError, match="odd"):
        median_filter3d(np.zeros((5, 5, 5)), 4)
    with pytest.raises(InputError, match="larger than the image"):
        median_filter3d(np.zeros((2, 5, 5)), 3)
    with pytest.raises(InputError, match="NaN"):
        subtract_slice_median(np.array([[[1.0, np.nan]]]))
    with pytest.raises(InputError, match="empty"):
        subtract_slice_median(np.zeros((0, 4, 4)))


def test_depth_correction_equalises_slices():
    rng = np.random.default_rng(5)
    n_z = 12
    base = rng.gamma(2.0, 1.0, (n_z, 40, 40))
    base[:, 10:14, :] += 20.0  # a bright vessel in every slice
    gain = np.exp(-np.linspace(0, 2, n_z))[:, None, None]  # signal fades with depth
    image = (base * gain + 5.0).astype(np.float32)
    before = image.copy()
    out = correct_depth_attenuation(image, smooth=1)
    np.testing.assert_array_equal(image, before)  # input untouched
    high = np.percentile(out.reshape(n_z, -1), 99.5, axis=1)
    low = np.percentile(out.reshape(n_z, -1), 5, axis=1)
    assert np.ptp(high) < 0.05 * np.mean(high)
    assert np.ptp(low) < 0.05 * np.mean(high)
    raw_high = np.percentile(image.reshape(n_z, -1), 99.5, axis=1)
    assert np.ptp(raw_high) > 0.5 * np.mean(raw_high)


def test_depth_correction_limits_gain_and_rejects_constant():
    image = np.ones((4, 10, 10), np.float32)
    image[0, :5] = 100.0
    image[1:, :5] = 1.001  # almost empty deep slices
    out = correct_depth_attenuation(image, smooth=1, max_gain=3.0)
    assert np.all(np.isfinite(out))
    with pytest.raises(InputError, match="no contrast"):
        correct_depth_attenuation(np.full((3, 5, 5), 7.0))
    with pytest.raises(InputError, match="above the background"):
        correct_depth_attenuation(image, background=50, foreground=10)
    with pytest.raises(InputError, match="3D stack"):
        correct_depth_attenuation(image[0])


@pytest.mark.realdata
def test_real_volumes_depth_levels_and_default_pipeline(vesselnn_dir):
    import tifffile

    from napari_vessel.preprocess import DEFAULT_2PM

    for path in sorted((vesselnn_dir / "images").glob("*.tif")):
        image = tifffile.imread(path)
        corrected = correct_depth_attenuation(image, smooth=1)
        levels = [np.percentile(v.reshape(len(v), -1), [5, 99.5], axis=1) for v in (image,
                                                                                  corrected)]
        spread = [np.ptp(high - low) for low, high in levels]
        assert spread[1] <= spread[0] + 1e-3, path.name
        out = DEFAULT_2PM.apply(image)
        assert out.min() == 0.0 and out.max() == 1.0, path.name


def test_fast_median_equals_numpy_median():
    from napari_vessel.preprocess.median import _median

    rng = np.random.default_rng(7)
    for n in (5, 4095, 4096, 10001, 70000):
        for values in (rng.random(n), rng.integers(0, 3, n), rng.gamma(0.3, 1.0, n),
                       np.where(rng.random(n) < 0.6, 0, rng.random(n)), np.zeros(n)):
            values = values.astype(np.float32)
            assert _median(values) == np.median(values)
            assert _median(values).dtype == np.float32
