"""Post-processing: thresholds, hysteresis, small-object removal and hole filling."""

from __future__ import annotations

import numpy as np
import pytest
from scipy import ndimage as ndi
from skimage.filters import apply_hysteresis_threshold
from skimage.morphology import remove_small_objects

from napari_vessel.errors import InputError
from napari_vessel.postprocess.labels import (
    fill_holes,
    hysteresis,
    probability_to_labels,
    remove_small,
    threshold,
)


@pytest.fixture(scope="module")
def prob() -> np.ndarray:
    rng = np.random.default_rng(0)
    return ndi.gaussian_filter(rng.random((12, 40, 40)), 1.5).astype(np.float32)


def test_threshold_is_strict_and_returns_uint8():
    out = threshold(np.array([[0.1, 0.5, 0.50001, 1.0]]), 0.5)
    np.testing.assert_array_equal(out, [[0, 0, 1, 1]])
    assert out.dtype == np.uint8


def test_hysteresis_equals_skimage_with_face_connectivity(prob):
    low, high = np.percentile(prob, [60, 95])
    expected = apply_hysteresis_threshold(prob, low, high)
    np.testing.assert_array_equal(hysteresis(prob, low, high, connectivity=1), expected)


def test_hysteresis_keeps_faint_parts_connected_through_a_corner():
    p = np.zeros((3, 5, 5), dtype=np.float32)
    p[0, 0, 0] = 0.9  # confident seed
    p[1, 1, 1] = 0.4  # faint, touching the seed only at a corner
    p[2, 4, 4] = 0.4  # faint and isolated
    np.testing.assert_array_equal(np.argwhere(hysteresis(p, 0.3, 0.8)), [[0, 0, 0], [1, 1, 1]])
    np.testing.assert_array_equal(np.argwhere(hysteresis(p, 0.3, 0.8, connectivity=1)), [[0, 0, 0]])
    assert hysteresis(np.zeros((2, 3, 3)), 0.3, 0.8).sum() == 0


@pytest.mark.parametrize("connectivity", [1, 2, 3])
def test_remove_small_equals_skimage(prob, connectivity):
    mask = prob > np.percentile(prob, 80)
    try:
        expected = remove_small_objects(mask, max_size=19, connectivity=connectivity)
    except TypeError:  # scikit-image < 0.26
        expected = remove_small_objects(mask, min_size=20, connectivity=connectivity)
    out = remove_small(mask.astype(np.uint8) * 255, 20, connectivity=connectivity)
    np.testing.assert_array_equal(out > 0, expected)
    assert out.dtype == np.uint8 and set(np.unique(out)) <= {0, 255}


def test_remove_small_on_a_hand_built_array():
    labels = np.zeros((4, 8, 8), dtype=np.uint8)
    labels[0, 0, 0:3] = 1  # 3 voxels
    labels[2, 2:4, 2:7] = 1  # 10 voxels
    labels[3, 7, 7] = 1  # 1 voxel ...
    labels[2, 6, 7] = 1  # ... touching the next slice's voxel at a corner only
    out = remove_small(labels, 5)
    assert out.sum() == 10 and out[0].sum() == 0
    out = remove_small(labels, 2, connectivity=3)
    assert out[3, 7, 7] == 1 and out[2, 6, 7] == 1
    out = remove_small(labels, 2, connectivity=1)
    assert out[3, 7, 7] == 0 and out[2, 6, 7] == 0
    np.testing.assert_array_equal(remove_small(labels, 0), labels)


def test_fill_holes_3d_per_slice_and_max_size():
    hollow_cube = np.zeros((7, 7, 7), dtype=np.uint8)
    hollow_cube[1:6, 1:6, 1:6] = 1
    hollow_cube[2:5, 2:5, 2:5] = 0
    assert fill_holes(hollow_cube)[3, 3, 3] == 1
    assert fill_holes(hollow_cube).sum() == 125

    # A vessel along z with a dark lumen: open at both ends, so only per-slice filling closes it.
    tube = np.zeros((5, 9, 9), dtype=np.uint8)
    tube[:, 2:7, 2:7] = 255
    tube[:, 4, 4] = 0
    np.testing.assert_array_equal(fill_holes(tube), tube)
    filled = fill_holes(tube, per_slice=True)
    assert np.all(filled[:, 4, 4] == 255) and filled.dtype == np.uint8

    ring = np.zeros((1, 12, 12), dtype=bool)
    ring[0, 1:11, 1:11] = True
    ring[0, 2:10, 2:10] = False  # 64 enclosed pixels
    assert fill_holes(ring, per_slice=True, max_size=63).sum() == ring.sum()
    assert fill_holes(ring, per_slice=True, max_size=64).sum() == 100
    assert fill_holes(ring[0], max_size=64).sum() == 100  # 2D works too


def test_probability_to_labels_chains_the_steps():
    p = np.zeros((6, 20, 20), dtype=np.float32)
    p[1:5, 2:9, 2:9] = 0.9  # a block with a cavity
    p[2:4, 4:7, 4:7] = 0.1
    p[0, 15, 15] = 0.8  # speck
    labels = probability_to_labels(p, level=0.5)
    assert labels.dtype == np.uint8 and labels[0, 15, 15] == 1 and labels[3, 5, 5] == 0
    cleaned = probability_to_labels(p, level=0.5, min_size=5, fill=True)
    assert cleaned[0, 15, 15] == 0 and cleaned[3, 5, 5] == 1
    assert cleaned.sum() == 4 * 7 * 7


def test_inputs_are_not_modified(prob):
    before = prob.copy()
    labels = (prob > 0.5).astype(np.uint8)
    labels_before = labels.copy()
    threshold(prob)
    hysteresis(prob, 0.4, 0.6)
    remove_small(labels, 10)
    fill_holes(labels, per_slice=True)
    probability_to_labels(prob, min_size=3, fill=True)
    np.testing.assert_array_equal(prob, before)
    np.testing.assert_array_equal(labels, labels_before)


@pytest.mark.parametrize(
    ("call", "match"),
    [
        (lambda: threshold(np.full((2, 2, 2), np.nan)), "NaN"),
        (lambda: threshold(np.zeros(5)), "2D"),
        (lambda: threshold(np.zeros((1, 2, 2, 2))), "2D"),
        (lambda: threshold(np.array([["a"]])), "numeric"),
        (lambda: threshold(np.zeros((2, 2)), level="high"), "not a number"),
        (lambda: threshold(np.zeros((2, 2)), level=float("inf")), "finite"),
        (lambda: hysteresis(np.zeros((2, 2)), 0.8, 0.2), "must not exceed"),
        (lambda: hysteresis(np.zeros((2, 2)), 0.2, 0.8, connectivity=3), "not valid for 2D"),
        (lambda: remove_small(np.zeros((2, 2, 2)), -1), "whole number"),
        (lambda: remove_small(np.zeros((2, 2, 2)), 2.5), "whole number"),
        (lambda: remove_small(np.zeros((2, 2, 2)), 5, connectivity=0), "choose 1"),
        (lambda: fill_holes(np.zeros((4, 4)), per_slice=True), "3D"),
        (lambda: fill_holes(np.zeros((2, 4, 4)), max_size=-3), "max_size"),
        (lambda: probability_to_labels(np.zeros((2, 4, 4)), min_size=-1), "min_size"),
        (lambda: probability_to_labels(np.zeros((2, 4, 4)), connectivity=4), "connectivity"),
    ],
)
def test_bad_input_names_the_problem(call, match):
    with pytest.raises(InputError, match=match):
        call()


def test_default_connectivity_is_full_for_2d_arrays():
    """connectivity=None (the default) is the full neighbourhood of the array's ndim, so (y, x)
    input works as the docstrings promise (it used to raise with connectivity=3)."""
    from napari_vessel.models.cascades import paper_labels
    from napari_vessel.postprocess.labels import Postprocessing, hysteresis

    prob = np.zeros((6, 6))
    prob[1, 1], prob[2, 2], prob[4, 4] = 0.99, 0.6, 0.6  # diagonal neighbours join in 2D
    np.testing.assert_array_equal(hysteresis(prob, 0.5, 0.9)[2, 2], 1)
    assert hysteresis(prob, 0.5, 0.9)[4, 4] == 0
    assert remove_small(prob > 0.5, 2).sum() == 2
    assert probability_to_labels(prob, min_size=2).sum() == 2
    assert paper_labels(prob, min_size=2).sum() == 2
    recipe = Postprocessing.from_dict({"method": "hysteresis", "low": 0.5, "high": 0.9,
                                       "min_size": 2, "fill_holes": True})
    np.testing.assert_array_equal(recipe.apply(prob), paper_labels(prob, low=0.5, high=0.9,
                                                                   min_size=2, max_hole=None))
