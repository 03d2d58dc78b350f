"""Histogram scaling (factor estimation against an image or a profile) and normalisation."""

from __future__ import annotations

import json

import numpy as np
import pytest

from napari_vessel.errors import InputError
from napari_vessel.preprocess import (
    estimate_scale_factor,
    intensity_profile,
    percentile_stretch,
    scale_intensity,
    zscore,
)


def _angiogram(seed: int, shape=(8, 48, 48)) -> np.ndarray:
    """Background noise with a few bright tubes, on a 16-bit-like scale (0..65535)."""
    rng = np.random.default_rng(seed)
    image = rng.gamma(2.0, 800.0, shape)
    zz, yy, xx = np.indices(shape)
    for y0, x0 in ((12, 10), (30, 35), (20, 25)):
        image += 30000.0 * np.exp(-((yy - y0 - zz) ** 2 + (xx - x0) ** 2) / 18.0)
    return np.clip(image, 0, 65535)


def test_scaling_recovers_factor_16_between_12_and_16_bit():
    reference = _angiogram(0)  # "setup 1": 16-bit detector
    twelve_bit = np.round(_angiogram(1) / 16.0)  # "setup 2": another stack, 12-bit detector
    for reference_input in (reference, intensity_profile(reference)):
        for method in ("histogram", "percentiles"):
            factor = estimate_scale_factor(twelve_bit, reference_input, method=method)
            assert factor == pytest.approx(16.0, rel=0.04), (method, factor)


def test_pure_scaling_is_exact_and_profile_is_json():
    rng = np.random.default_rng(2)
    image = rng.gamma(2.0, 3.0, (4, 30, 30))
    profile = intensity_profile(image * 7.5)
    json.dumps(profile)
    assert estimate_scale_factor(image, profile) == pytest.approx(7.5, rel=1e-6)
    assert estimate_scale_factor(image, profile, method="percentiles") == pytest.approx(7.5)


def test_model_card_style_profile():
    image = np.arange(1, 1001, dtype=np.float64).reshape(1, 10, 100)
    card = {"percentiles": [1, 50, 99, 99.9], "values": list(np.percentile(image * 2, [1, 50, 99,
                                                                                       99.9]))}
    assert estimate_scale_factor(image, card) == pytest.approx(2.0)


def test_uint16_times_factor_does_not_wrap():
    image = np.array([[[65535, 65000, 1]]], dtype=np.uint16)
    before = image.copy()
    out = scale_intensity(image, 16)
    assert out.dtype == np.float32
    np.testing.assert_array_equal(out, [[[65535 * 16, 65000 * 16, 16]]])
    np.testing.assert_array_equal(image, before)


@pytest.mark.parametrize("factor", [0, -2, float("nan"), float("inf"), "x"])
def test_bad_factor(factor):
    with pytest.raises(InputError, match="scaling factor"):
        scale_intensity(np.ones((2, 2)), factor)


def test_bad_references():
    image = np.ones((2, 4, 4))
    with pytest.raises(InputError, match="no positive intensities"):
        estimate_scale_factor(np.zeros((2, 4, 4)), {"percentiles": [50], "values": [3.0]})
    with pytest.raises(InputError, match="one value per percentile"):
        estimate_scale_factor(image, {"percentiles": [1, 50], "values": [3.0]})
    with pytest.raises(InputError, match="'percentiles' and 'values'"):
        estimate_scale_factor(image, {"p": [1]})
    with pytest.raises(InputError, match="increase"):
        estimate_scale_factor(image, {"percentiles": [50, 1], "values": [1, 2]})
    with pytest.raises(InputError, match="unknown method"):
        estimate_scale_factor(image, {"percentiles": [50], "values": [1]}, method="guess")
    with pytest.raises(InputError, match="NaN"):
        intensity_profile(np.array([[1.0, np.inf]]))


def test_percentile_stretch_hand_computed():
    image = np.arange(101, dtype=np.float64).reshape(1, 1, 101)
    out = percentile_stretch(image, low=10, high=90)
    np.testing.assert_allclose(out[0, 0, [0, 10, 50, 90, 100]], [0, 0, 0.5, 1, 1], atol=1e-6)
    assert out.dtype == np.float32


def test_percentile_stretch_sparse_falls_back_to_min_max():
    image = np.zeros((2, 20, 20))
    image[0, 0, 0] = 4.0  # 1 bright voxel in 800: the 99.8th percentile is still 0
    out = percentile_stretch(image)
    assert out.max() == 1.0 and out.min() == 0.0


def test_zscore():
    rng = np.random.default_rng(3)
    out = zscore(rng.normal(50, 5, (3, 20, 20)))
    assert abs(float(out.mean())) < 1e-4 and float(out.std()) == pytest.approx(1.0, rel=1e-4)


@pytest.mark.parametrize("func", [zscore, percentile_stretch])
def test_constant_volume_is_an_error(func):
    with pytest.raises(InputError, match="constant"):
        func(np.full((3, 4, 4), 9.0))


def test_stretch_bad_percentiles():
    with pytest.raises(InputError, match="above the low"):
        percentile_stretch(np.ones((2, 2)), low=50, high=50)
    with pytest.raises(InputError, match="out of range"):
        percentile_stretch(np.ones((2, 2)), low=-1)
