"""Morphological pooling, soft skeleton and gradients of napari_vessel.models.layers."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from scipy import ndimage as ndi
from skimage.morphology import skeletonize

from napari_vessel.errors import InputError
from napari_vessel.models import layers


def paper_elements_3d() -> list[np.ndarray]:
    """The nine planar 3x3 squares through the centre of the 3x3x3 cube (paper 000, Fig. 1)."""
    e = [np.zeros((3, 3, 3), dtype=bool) for _ in range(9)]
    e[0][:, :, 1] = True  # z-y plane
    e[1][:, 1, :] = True  # z-x plane
    e[2][1, :, :] = True  # y-x plane
    e[3][:, [0, 1, 2], [0, 1, 2]] = True  # y = x, all z
    e[4][:, [0, 1, 2], [2, 1, 0]] = True  # y = -x, all z
    e[5][[0, 1, 2], :, [0, 1, 2]] = True  # z = x, all y
    e[6][[0, 1, 2], :, [2, 1, 0]] = True  # z = -x, all y
    e[7][[0, 1, 2], [0, 1, 2], :] = True  # z = y, all x
    e[8][[0, 1, 2], [2, 1, 0], :] = True  # z = -y, all x
    return e


def paper_elements_2d() -> list[np.ndarray]:
    e = [np.zeros((3, 3), dtype=bool) for _ in range(4)]
    e[0][1, :] = True
    e[1][:, 1] = True
    e[2][[0, 1, 2], [0, 1, 2]] = True
    e[3][[0, 1, 2], [2, 1, 0]] = True
    return e


def numpy_si(u: np.ndarray, elements: list[np.ndarray]) -> np.ndarray:
    """Eq. 2: sup over B of inf over x + B; outside the array is ignored (+inf)."""
    out = np.full(u.shape, -np.inf)
    for b in elements:
        out = np.maximum(out, ndi.grey_erosion(u, footprint=b, mode="constant", cval=np.inf))
    return out


def numpy_is(u: np.ndarray, elements: list[np.ndarray]) -> np.ndarray:
    """Eq. 3: inf over B of sup over x + B; outside the array is ignored (-inf)."""
    out = np.full(u.shape, np.inf)
    for b in elements:
        out = np.minimum(out, ndi.grey_dilation(u, footprint=b, mode="constant", cval=-np.inf))
    return out


def as_tensor(a: np.ndarray, dtype=torch.float64) -> torch.Tensor:
    return torch.as_tensor(a, dtype=dtype)[None, None]


def test_structuring_elements_are_the_papers_nine_planes():
    ours = layers.structuring_elements(3)
    assert ours.shape == (9, 3, 3, 3)
    assert ours.sum(axis=(1, 2, 3)).tolist() == [9] * 9
    np.testing.assert_array_equal(ours, np.stack(paper_elements_3d()))
    np.testing.assert_array_equal(layers.structuring_elements(2), np.stack(paper_elements_2d()))


@pytest.mark.parametrize("shape", [(5, 6, 7), (1, 4, 4), (3, 9, 2)])
def test_si_is_match_numpy_equations_2_3(shape):
    rng = np.random.default_rng(sum(shape))
    u = rng.random(shape)
    elements = paper_elements_3d()
    np.testing.assert_array_equal(layers.si_pool(as_tensor(u))[0, 0].numpy(), numpy_si(u, elements))
    np.testing.assert_array_equal(layers.is_pool(as_tensor(u))[0, 0].numpy(), numpy_is(u, elements))


def test_si_is_float32_batched_with_ties():
    rng = np.random.default_rng(1)
    u = rng.integers(0, 3, size=(2, 3, 4, 5, 6)).astype(np.float32)  # many equal values
    x = torch.as_tensor(u)
    si, is_ = layers.si_pool(x).numpy(), layers.is_pool(x).numpy()
    for n in range(2):
        for c in range(3):
            np.testing.assert_array_equal(si[n, c], numpy_si(u[n, c], paper_elements_3d()))
            np.testing.assert_array_equal(is_[n, c], numpy_is(u[n, c], paper_elements_3d()))


def test_si_is_2d_use_the_four_lines():
    u = np.random.default_rng(2).random((7, 8))
    elements = paper_elements_2d()
    x = as_tensor(u)
    np.testing.assert_array_equal(layers.si_pool(x)[0, 0].numpy(), numpy_si(u, elements))
    np.testing.assert_array_equal(layers.is_pool(x)[0, 0].numpy(), numpy_is(u, elements))


def test_erode_dilate_se_match_scipy_for_each_element_and_a_cube():
    u = np.random.default_rng(3).random((4, 5, 6))
    for se in [*paper_elements_3d(), np.ones((3, 3, 3), dtype=bool)]:
        ero = layers.erode_se(as_tensor(u), se)[0, 0].numpy()
        dil = layers.dilate_se(as_tensor(u), se)[0, 0].numpy()
        np.testing.assert_array_equal(ero, ndi.grey_erosion(u, footprint=se, mode="constant", cval=np.inf))
        np.testing.assert_array_equal(dil, ndi.grey_dilation(u, footprint=se, mode="constant", cval=-np.inf))


def test_morph_smooth_is_si_after_is_repeated():
    u = np.random.default_rng(4).random((6, 7, 8))
    elements = paper_elements_3d()
    expected = u
    for _ in range(3):
        expected = numpy_si(numpy_is(expected, elements), elements)  # eq. 12: IS first, then SI
    np.testing.assert_array_equal(layers.morph_smooth(as_tensor(u), 3)[0, 0].numpy(), expected)
    other_order = numpy_is(numpy_si(u, elements), elements)
    assert not np.array_equal(layers.morph_smooth(as_tensor(u), 1)[0, 0].numpy(), other_order)
    np.testing.assert_array_equal(layers.morph_smooth(as_tensor(u), 0)[0, 0].numpy(), u)


def test_pooling_removes_a_speck_and_fills_a_pinhole():
    speck = np.zeros((5, 5, 5))
    speck[2, 2, 2] = 1
    assert layers.si_pool(as_tensor(speck)).max() == 0
    pinhole = 1 - speck
    assert layers.is_pool(as_tensor(pinhole)).min() == 1
    # a thick slab is kept by the smoothing
    slab = np.zeros((7, 7, 7))
    slab[2:5] = 1
    np.testing.assert_array_equal(layers.morph_smooth(as_tensor(slab), 3)[0, 0].numpy(), slab)


@pytest.mark.parametrize(
    "fn",
    [
        layers.si_pool,
        layers.is_pool,
        lambda x: layers.morph_smooth(x, 2),
        lambda x: layers.erode_se(x, paper_elements_3d()[5]),
        lambda x: layers.dilate_se(x, paper_elements_3d()[8]),
    ],
)
def test_morphological_pooling_gradcheck(fn):
    x = torch.rand(2, 1, 3, 4, 5, dtype=torch.float64, requires_grad=True)
    assert torch.autograd.gradcheck(fn, (x,))


def test_gradient_flows_to_the_selected_voxel():
    x = torch.zeros(1, 1, 3, 3, 3, requires_grad=True)
    with torch.no_grad():
        x[0, 0, 1, 1, 1] = 1.0
    y = layers.is_pool(x)  # every element contains the centre, so IS of the centre is 1
    y[0, 0, 1, 1, 1].backward()
    expected = torch.zeros_like(x)
    expected[0, 0, 1, 1, 1] = 1
    torch.testing.assert_close(x.grad, expected)


def test_soft_skeleton_of_a_tube_is_its_centreline():
    volume = np.zeros((9, 15, 30))
    zz, yy = np.mgrid[:9, :15]
    volume[(zz - 4) ** 2 + (yy - 7) ** 2 <= 6, 3:27] = 1  # a tube along x, radius ~2.5
    soft = layers.soft_skeleton(as_tensor(volume), 5)[0, 0].numpy()
    hard = skeletonize(volume.astype(bool))
    centre = np.zeros_like(hard)
    centre[4, 7, :] = True
    assert hard.sum() > 0 and np.all(hard <= centre)  # skimage's skeleton is on the centreline
    assert soft[~centre].max() < 1e-6  # and so is all of the soft skeleton's mass
    assert soft[4, 7, 6:24].min() == pytest.approx(1.0)
    overlap = (soft > 0.5) & hard
    assert overlap.sum() >= 0.8 * hard.sum()


def test_soft_skeleton_2d_and_range():
    image = np.zeros((11, 20))
    image[3:8, 2:18] = 1  # a 5-pixel thick bar
    soft = layers.soft_skeleton(as_tensor(image), 3)[0, 0].numpy()
    assert soft[5, 4:16].min() == pytest.approx(1.0)
    assert soft[[3, 4, 6, 7]].max() < 1e-6
    x = torch.rand(1, 1, 6, 8, 8)
    s = layers.soft_skeleton(x, 3)
    assert float(s.min()) >= 0 and float(s.max()) <= 1 + 1e-6


def test_soft_skeleton_gradcheck():
    x = torch.rand(1, 1, 4, 5, 6, dtype=torch.float64, requires_grad=True)
    assert torch.autograd.gradcheck(lambda v: layers.soft_skeleton(v, 2), (x,))


def test_soft_erode_dilate_open_known_values():
    x = np.zeros((5, 5, 5))
    x[1:4, 1:4, 1:4] = 1
    t = as_tensor(x)
    eroded = layers.soft_erode(t)[0, 0].numpy()
    assert eroded.sum() == 1 and eroded[2, 2, 2] == 1  # the 6-neighbourhood cross
    dilated = layers.soft_dilate(as_tensor(eroded))[0, 0].numpy()
    np.testing.assert_array_equal(dilated, x)  # the 3x3x3 cube
    np.testing.assert_array_equal(layers.soft_open(t)[0, 0].numpy(), x)


def test_central_gradients_and_l1():
    ramp = np.broadcast_to(np.arange(5.0)[None, None, :] * 2, (3, 4, 5)).copy()
    gz, gy, gx = (g[0, 0].numpy() for g in layers.central_gradients(as_tensor(ramp)))
    assert np.all(gz == 0) and np.all(gy == 0)
    np.testing.assert_array_equal(gx[0, 0], [1, 2, 2, 2, 1])  # one-sided half-differences at borders
    l1 = layers.gradient_l1(as_tensor(ramp))[0, 0].numpy()
    np.testing.assert_array_equal(l1, np.abs(gx))


def test_sobel_on_a_ramp_and_a_constant():
    ramp = np.broadcast_to(np.arange(6.0)[None, :, None], (5, 6, 7)).copy()
    gz, gy, gx = (g[0, 0].numpy() for g in layers.sobel_gradients_3d(as_tensor(ramp)))
    # interior: (x[y+1] - x[y-1]) * (1+2+1)^2 = 2 * 16
    assert np.all(gy[:, 1:-1, :] == 32) and np.all(gz == 0) and np.all(gx == 0)
    # same as scipy's sobel on the interior (scipy pads differently at the borders)
    np.testing.assert_allclose(gy[1:-1, 1:-1, 1:-1], ndi.sobel(ramp, axis=1)[1:-1, 1:-1, 1:-1])
    const = layers.sobel_gradients_3d(torch.ones(2, 3, 4, 4, 4))
    assert all(float(g.abs().max()) == 0 for g in const)
    assert const[0].shape == (2, 3, 4, 4, 4)


def test_sobel_matches_scipy_per_channel():
    u = np.random.default_rng(5).random((2, 5, 6, 7))
    grads = layers.sobel_gradients_3d(torch.as_tensor(u)[None])
    for axis, g in enumerate(grads):
        for c in range(2):
            np.testing.assert_allclose(g[0, c].numpy(), ndi.sobel(u[c], axis=axis, mode="nearest"))


def test_bad_shapes_raise_input_error():
    with pytest.raises(InputError, match="expected"):
        layers.si_pool(torch.zeros(4, 4, 4))
    with pytest.raises(InputError):
        layers.sobel_gradients_3d(torch.zeros(1, 1, 4, 4))
    with pytest.raises(InputError, match="structuring element"):
        layers.erode_se(torch.zeros(1, 1, 3, 3, 3), np.ones((3, 3), dtype=bool))
    with pytest.raises(InputError):
        layers.morph_smooth(torch.zeros(1, 1, 3, 3, 3), -1)


def test_pooling_without_gradient_equals_the_autograd_path():
    """Inference takes a direct min/max path; it must equal the rank-selection path."""
    from napari_vessel.models.layers import is_pool, morph_smooth, si_pool

    x = torch.rand(1, 1, 5, 9, 9, dtype=torch.float64, generator=torch.Generator().manual_seed(3))
    grad_x = x.clone().requires_grad_(True)
    for op in (si_pool, is_pool, lambda t: morph_smooth(t, 2)):
        with torch.no_grad():
            fast = op(x)
        slow = op(grad_x).detach()
        torch.testing.assert_close(fast, slow, rtol=0, atol=0)
