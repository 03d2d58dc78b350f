"""CLAHE against scikit-image's equalize_adapthist, slice by slice, and in 3D."""

from __future__ import annotations

import numpy as np
import pytest
from skimage.exposure import equalize_adapthist

from napari_vessel.errors import InputError
from napari_vessel.preprocess import equalize_clahe
from napari_vessel.preprocess.clahe import clahe_kernel, fit_clahe


def _stack(n_z=3, shape=(96, 80), seed=0):
    """Smooth structures plus noise; every slice spans exactly [0, 1]."""
    rng = np.random.default_rng(seed)
    yy, xx = np.mgrid[: shape[0], : shape[1]]
    slices = []
    for z in range(n_z):
        image = np.sin(yy / (7 + z)) * np.cos(xx / 11) + 0.3 * rng.random(shape) + yy / 60
        slices.append((image - image.min()) / np.ptp(image))
    return np.stack(slices).astype(np.float32)  # float32, as the pipeline computes


def _stretch(image):
    return (image - image.min()) / np.ptp(image)


@pytest.mark.parametrize(("kernel_size", "clip_limit"), [(None, 0.01), (24, 0.03), (17, 0.0),
                                                         (40, 0.002)])
def test_close_to_skimage_per_slice(kernel_size, clip_limit):
    stack = _stack()
    before = stack.copy()
    out = equalize_clahe(stack, kernel_size=kernel_size, clip_limit=clip_limit)
    np.testing.assert_array_equal(stack, before)
    assert out.dtype == np.float32 and out.min() >= 0 and out.max() <= 1
    for mine, image in zip(out, stack, strict=True):
        reference = equalize_adapthist(image, kernel_size=kernel_size, clip_limit=clip_limit)
        assert np.abs(_stretch(mine) - reference).max() < 1e-3


def test_single_slice_2d():
    image = _stack(1)[0]
    reference = equalize_adapthist(image, kernel_size=20, clip_limit=0.02)
    assert np.abs(_stretch(equalize_clahe(image, kernel_size=20, clip_limit=0.02)) - reference).max() < 1e-3


def test_3d_matches_skimage_nd_with_same_kernel():
    stack = _stack(n_z=8, shape=(48, 40))
    ours = equalize_clahe(stack, kernel_size=(4, 12, 10), mode="3d", clip_limit=0.02)
    reference = equalize_adapthist(stack, kernel_size=(4, 12, 10), clip_limit=0.02)
    assert np.abs(_stretch(ours) - reference).max() < 1e-3


def test_3d_kernel_respects_anisotropic_spacing():
    assert clahe_kernel((40, 256, 256), 64, "3d", (5.0, 1.0, 1.0)) == (13, 64, 64)
    assert clahe_kernel((40, 256, 256), 64, "3d", (1.0, 0.5, 1.0)) == (40, 128, 64)  # z capped
    assert clahe_kernel((40, 256, 256), None, "3d", (4.0, 1.0, 1.0)) == (8, 32, 32)
    assert clahe_kernel((40, 256, 256), None, "2d") == (32, 32)
    model = fit_clahe(_stack(10, (64, 64)), kernel_size=16, mode="3d", spacing_zyx=(4, 1, 1))
    assert model.kernel == (4, 16, 16) and model.luts.shape == (3, 4, 4, 256)


def test_clahe_bad_input():
    stack = _stack()
    with pytest.raises(InputError, match="larger than the image"):
        equalize_clahe(stack, kernel_size=500)
    with pytest.raises(InputError, match="larger than the image"):
        equalize_clahe(stack, kernel_size=(9, 8, 8), mode="3d")
    with pytest.raises(InputError, match="constant"):
        equalize_clahe(np.full((2, 16, 16), 3.0))
    with pytest.raises(InputError, match="3D stack"):
        equalize_clahe(stack[0], mode="3d")
    with pytest.raises(InputError, match="mode"):
        equalize_clahe(stack, mode="4d")
    with pytest.raises(InputError, match="clip limit"):
        equalize_clahe(stack, clip_limit=-1)
    with pytest.raises(InputError, match="NaN"):
        equalize_clahe(np.where(stack > 0.5, np.nan, stack))
