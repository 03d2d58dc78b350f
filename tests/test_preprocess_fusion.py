"""Multi-focus fusion: the decision map finds the slice where each region is sharp."""

from __future__ import annotations

import numpy as np
import pytest
from scipy import ndimage as ndi

from napari_vessel.errors import InputError
from napari_vessel.preprocess import focus_measure, focus_stack, fuse_focus


def _focal_stack(n_z: int = 5, size: int = 60, seed: int = 0):
    """Four quadrants of texture; quadrant q is sharp on slice SHARP[q] and blurred elsewhere."""
    rng = np.random.default_rng(seed)
    texture = rng.random((size, size)).astype(np.float32)
    sharp_on = np.zeros((size, size), int)
    half = size // 2
    quadrants = [(slice(0, half), slice(0, half)), (slice(0, half), slice(half, None)),
                 (slice(half, None), slice(0, half)), (slice(half, None), slice(half, None))]
    for q, k in zip(quadrants, (0, 2, 4, 1), strict=True):
        sharp_on[q] = k
    stack = np.empty((n_z, size, size), np.float32)
    for z in range(n_z):
        blur = np.abs(z - sharp_on) * 1.5  # blur grows with distance from the focal slice
        for sigma in np.unique(blur):
            version = ndi.gaussian_filter(texture, sigma) if sigma else texture
            stack[z][blur == sigma] = version[blur == sigma]
    return stack, texture, sharp_on


@pytest.mark.parametrize("measure", ["laplacian", "variance"])
def test_fusion_picks_the_sharp_slice(measure):
    stack, texture, sharp_on = _focal_stack()
    before = stack.copy()
    result = fuse_focus(stack, measure=measure, window=7, smooth=5)
    np.testing.assert_array_equal(stack, before)
    inner = np.zeros_like(sharp_on, bool)  # away from the quadrant borders and image edges
    for y0 in (0, 30):
        for x0 in (0, 30):
            inner[y0 + 6 : y0 + 24, x0 + 6 : x0 + 24] = True
    np.testing.assert_array_equal(result.depth[inner], sharp_on[inner])
    np.testing.assert_array_equal(result.image[inner], texture[inner])
    assert result.depth.dtype == np.int32 and result.image.dtype == np.float32
    assert np.mean(result.depth == sharp_on) > 0.9


def test_fusion_on_confocal_phantom():
    from napari_vessel.data.phantom import make_phantom

    phantom = make_phantom((16, 96, 96), kind="confocal", seed=0, dtype=np.float32)
    result = fuse_focus(phantom.image)
    labels = phantom.labels.astype(bool)
    column = labels.any(axis=0)
    top = np.argmax(labels, axis=0)
    bottom = labels.shape[0] - 1 - np.argmax(labels[::-1], axis=0)
    inside = (result.depth >= top - 1) & (result.depth <= bottom + 1)
    assert inside[column].mean() > 0.85  # on vessels, the chosen slice holds the vessel


def test_focus_measure_is_larger_where_sharp():
    stack, _, sharp_on = _focal_stack()
    focus = focus_measure(stack, window=7)
    assert focus.shape == stack.shape
    assert focus[0, 10, 10] > focus[2, 10, 10]  # quadrant 0 is sharp on slice 0


def test_focus_stack_sharpens_each_window():
    stack, texture, sharp_on = _focal_stack()
    out = focus_stack(stack, depth_window=3, window=7)
    assert out.shape == stack.shape
    # slice 1 fuses slices 0-2: quadrants sharp on 0, 1 and 2 become sharp there
    for y, x in ((10, 10), (10, 45), (45, 45)):
        assert out[1, y, x] == texture[y, x]
    np.testing.assert_array_equal(focus_stack(stack, depth_window=1), stack)


def test_fusion_bad_input():
    stack, _, _ = _focal_stack()
    with pytest.raises(InputError, match="3D stack"):
        fuse_focus(stack[0])
    with pytest.raises(InputError, match="unknown focus measure"):
        fuse_focus(stack, measure="sharpness")
    with pytest.raises(InputError, match="larger than the slices"):
        fuse_focus(stack, window=99)
    with pytest.raises(InputError, match="odd"):
        focus_stack(stack, depth_window=4)


@pytest.mark.parametrize(("levels", "size"), [(2, 3), (5, 5), (9, 7), (64, 5), (300, 3), (5, 4)])
def test_fast_decision_median_equals_scipy(levels, size):
    from napari_vessel.preprocess.fusion import _median_depth

    depth = np.random.default_rng(levels).integers(0, levels, (37, 41)).astype(np.int32)
    np.testing.assert_array_equal(_median_depth(depth, levels, size),
                                  ndi.median_filter(depth, size, mode="nearest"))
