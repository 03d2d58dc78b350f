"""Projections against direct NumPy references, on small hand-built stacks."""

from __future__ import annotations

import dask.array as da
import numpy as np
import pytest

from napari_vessel.errors import InputError
from napari_vessel.projection import (
    LabelMIP,
    depth_coded_mip,
    mip,
    mip_with_depth,
    regions_from_paint_event,
    slab_bounds,
    slab_mip,
    sliding_mips,
)


@pytest.fixture
def stack() -> np.ndarray:
    return np.random.default_rng(0).integers(0, 1000, size=(12, 20, 24)).astype(np.uint16)


class ChunkOnly:
    """An array-like that refuses any read larger than one chunk (proves chunk-wise work)."""

    def __init__(self, data: np.ndarray, limit: int) -> None:
        self.data, self.limit = data, limit
        self.shape, self.dtype, self.ndim = data.shape, data.dtype, data.ndim

    def __getitem__(self, key):
        out = self.data[key]
        assert out.size <= self.limit, f"read {out.shape} is more than one chunk"
        return out


@pytest.mark.parametrize("axis", [0, 1, 2])
def test_mip_numpy_and_dask_equal_reference(stack, axis):
    expected = stack.max(axis=axis)
    np.testing.assert_array_equal(mip(stack, axis=axis), expected)
    lazy = da.from_array(ChunkOnly(stack, 4 * 10 * 12), chunks=(4, 10, 12))
    result = mip(lazy, axis=axis)
    assert isinstance(result, np.ndarray)
    np.testing.assert_array_equal(result, expected)


@pytest.mark.parametrize("axis", [0, 2])
def test_mip_with_depth_matches_argmax(stack, axis):
    top, depth = mip_with_depth(stack, axis=axis)
    np.testing.assert_array_equal(top, stack.max(axis=axis))
    np.testing.assert_array_equal(depth, stack.argmax(axis=axis))
    top_l, depth_l = mip_with_depth(da.from_array(stack, chunks=(5, 7, 8)), axis=axis)
    np.testing.assert_array_equal(top_l, top)
    np.testing.assert_array_equal(depth_l, depth)


def test_slab_bounds_and_slab_mip(stack):
    assert slab_bounds(5, 3, 12) == (4, 7)
    assert slab_bounds(0, 5, 12) == (0, 3)  # cut at the start
    assert slab_bounds(11, 4, 12) == (9, 12)  # cut at the end
    assert slab_bounds(3, 12, 12) == (0, 9)
    np.testing.assert_array_equal(slab_mip(stack, 5, 3), stack[4:7].max(0))
    np.testing.assert_array_equal(slab_mip(stack, 10, 5, axis=2), stack[:, :, 8:13].max(2))
    lazy = da.from_array(stack, chunks=4)
    np.testing.assert_array_equal(slab_mip(lazy, 5, 3), stack[4:7].max(0))


@pytest.mark.parametrize("thickness", [0, 13, -1, 2.5])
def test_slab_thickness_out_of_range(stack, thickness):
    with pytest.raises(InputError, match="from 1 to 12"):
        slab_mip(stack, 5, thickness)


def test_slab_centre_outside(stack):
    with pytest.raises(InputError, match="from 0 to 11"):
        slab_mip(stack, 12, 3)


def test_mip_of_2d_image_is_refused():
    with pytest.raises(InputError, match="2D"):
        mip(np.zeros((10, 10)))
    with pytest.raises(InputError, match="axis"):
        mip(np.zeros((3, 10, 10)), axis=3)


def test_sliding_mips_vcnet_eq1():
    # Slice z holds the value z everywhere except one bright voxel per slice.
    vol = np.tile(np.arange(16, dtype=np.float32)[:, None, None], (1, 4, 4))
    vol[1, 0, 0] = 100.0  # brightest in the first MIP only (slices 0-4)
    vol[6, 2, 3] = 200.0  # in MIPs starting at 2 and 4 and 6 (k = 1, 2, 3)
    mips, depths = sliding_mips(vol, s=5, t=2)
    assert mips.shape == (6, 4, 4)  # m = floor((16 - 5) / 2) + 1 = 6, as in the paper's Fig. 3
    for k in range(6):
        np.testing.assert_array_equal(mips[k], vol[2 * k : 2 * k + 5].max(0))
        np.testing.assert_array_equal(depths[k], vol[2 * k : 2 * k + 5].argmax(0) + 2 * k)
    assert depths[0, 0, 0] == 1 and mips[0, 0, 0] == 100
    assert depths[1, 0, 0] == 6  # plain pixel: the deepest slice of MIP k=1 (slices 2-6)
    assert [depths[k, 2, 3] for k in range(6)] == [4, 6, 6, 6, 12, 14]
    lazy_mips, lazy_depths = sliding_mips(da.from_array(vol, chunks=4), s=5, t=2)
    np.testing.assert_array_equal(lazy_mips, mips)
    np.testing.assert_array_equal(lazy_depths, depths)
    assert sliding_mips(vol, s=16, t=3)[0].shape == (1, 4, 4)


def test_sliding_mips_bad_input():
    vol = np.zeros((4, 5, 5))
    with pytest.raises(InputError, match="1 to 4"):
        sliding_mips(vol, s=5)
    with pytest.raises(InputError, match="stride"):
        sliding_mips(vol, s=2, t=0)


def test_depth_coded_mip_hue_and_value():
    vol = np.zeros((5, 2, 2), dtype=np.uint8)
    vol[0, 0, 0] = 200  # top slice -> red
    vol[4, 1, 1] = 200  # bottom slice -> last hue (violet-blue)
    vol[2, 0, 1] = 100  # half brightness
    rgb = depth_coded_mip(vol, contrast_limits=(0, 200))
    assert rgb.shape == (2, 2, 3) and rgb.dtype == np.float32
    np.testing.assert_allclose(rgb[0, 0], [1, 0, 0], atol=1e-6)
    np.testing.assert_allclose(rgb[1, 0], [0, 0, 0], atol=1e-6)  # empty column is black
    assert rgb[0, 1].max() == pytest.approx(0.5)
    assert rgb[1, 1, 2] == pytest.approx(1.0) and rgb[1, 1, 1] == 0  # blue-violet
    grey = depth_coded_mip(vol, cmap=lambda d: np.stack([d, d, d, np.ones_like(d)], -1))
    assert grey.shape == (2, 2, 3) and grey[1, 1, 0] == pytest.approx(1.0)


def _random_stroke(rng, shape, value):
    """A disk of random radius on one slice, as a (z, y, x) index tuple."""
    z, cy, cx = (int(rng.integers(0, s)) for s in shape)
    radius = int(rng.integers(0, 6))
    yy, xx = np.mgrid[-radius : radius + 1, -radius : radius + 1]
    disk = yy**2 + xx**2 <= radius**2
    ys, xs = yy[disk] + cy, xx[disk] + cx
    ok = (ys >= 0) & (ys < shape[1]) & (xs >= 0) & (xs < shape[2])
    return (np.full(ok.sum(), z), ys[ok], xs[ok]), value


@pytest.mark.parametrize("mode", ["max", "any"])
@pytest.mark.parametrize("axis", [0, 1])
def test_label_mip_incremental_equals_full_recompute(mode, axis):
    rng = np.random.default_rng(1)
    labels = np.zeros((10, 40, 50), dtype=np.int32)
    label_mip = LabelMIP(labels, axis=axis, mode=mode)
    reference = LabelMIP(labels, axis=axis, mode=mode)
    for step in range(150):
        value = int(rng.choice([0, 0, 1, 2, 7]))  # 0 erases
        index, value = _random_stroke(rng, labels.shape, value)
        labels[index] = value
        form = step % 4  # every accepted form of region
        if form == 0:
            region = index
        elif form == 1:
            region = np.stack(index, axis=1)
        elif form == 2:
            region = tuple(slice(int(i.min()), int(i.max()) + 1) for i in index)
        else:
            region = [index, (slice(0, 0), slice(0, 0), slice(0, 0))]
        label_mip.update(labels, region)
        np.testing.assert_array_equal(label_mip.mip, reference.recompute(labels))


def test_label_mip_long_stroke_uses_columns_and_plane_regions():
    labels = np.zeros((6, 300, 300), dtype=np.uint8)
    label_mip = LabelMIP(labels)
    diagonal = np.arange(300)
    index = (np.full(300, 3), diagonal, diagonal)  # bbox 300x300 but only 300 columns
    labels[index] = 4
    assert label_mip.update(labels, index) == (slice(0, 300), slice(0, 300))
    np.testing.assert_array_equal(label_mip.mip, labels.max(0))
    labels[3, 10, 10] = 0  # erase one voxel, reported as a plane bbox (e.g. a napari view update)
    label_mip.update(labels, (slice(10, 11), slice(10, 11)))
    assert label_mip.mip[10, 10] == 0
    labels[2, 5, 7] = 9
    label_mip.update(labels, (np.array([5]), np.array([7])))  # plane index arrays
    assert label_mip.mip[5, 7] == 9
    assert label_mip.update(labels, (slice(400, 500), slice(0, 5), slice(0, 5))) is None


def test_label_mip_slab_follows_slider():
    labels = np.zeros((20, 8, 8), dtype=np.uint8)
    labels[2, 1, 1] = 1
    labels[15, 1, 1] = 2
    label_mip = LabelMIP(labels, slab=slab_bounds(2, 3, 20))
    assert label_mip.mip[1, 1] == 1
    labels[12, 3, 3] = 5  # outside the slab: ignored
    assert label_mip.update(labels, np.array([[12, 3, 3]])) is None
    assert label_mip.mip[3, 3] == 0
    label_mip.set_slab(labels, slab_bounds(14, 5, 20))
    np.testing.assert_array_equal(label_mip.mip, labels[12:17].max(0))
    labels[13, 1, 1] = 3
    label_mip.update(labels, np.array([[13, 1, 1]]))
    np.testing.assert_array_equal(label_mip.mip, labels[12:17].max(0))
    label_mip.set_slab(labels, None)
    np.testing.assert_array_equal(label_mip.mip, labels.max(0))


def test_label_mip_bad_input():
    labels = np.zeros((4, 5, 5), dtype=np.uint8)
    with pytest.raises(InputError, match="mode"):
        LabelMIP(labels, mode="sum")
    with pytest.raises(InputError, match="0 <= start < stop <= 4"):
        LabelMIP(labels, slab=(2, 9))
    label_mip = LabelMIP(labels)
    with pytest.raises(InputError, match="differs"):
        label_mip.update(np.zeros((4, 5, 6), np.uint8), np.array([[0, 0, 0]]))
    with pytest.raises(InputError, match="not understood"):
        label_mip.update(labels, np.zeros((3, 4)))


def test_regions_from_paint_event_atoms():
    from typing import NamedTuple

    class MaskedAtom(NamedTuple):  # the shape of napari 0.9's mask-based history atom
        slice_key: tuple
        mask: np.ndarray | None
        old_values: np.ndarray
        new_value: int

    labels = np.zeros((5, 30, 30), dtype=np.uint8)
    label_mip = LabelMIP(labels)
    key = (slice(2, 3), slice(4, 9), slice(6, 8))
    labels[key] = 3
    index = (np.array([1, 4]), np.array([20, 25]), np.array([21, 3]))
    labels[index] = 6
    atoms = [MaskedAtom(key, None, np.zeros((1, 5, 2)), 3), (index, np.zeros(2), np.uint8(6))]
    label_mip.update(labels, regions_from_paint_event(atoms))
    np.testing.assert_array_equal(label_mip.mip, labels.max(0))
    with pytest.raises(InputError, match="history atom"):
        regions_from_paint_event([object()])
