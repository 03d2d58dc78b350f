"""Label edits against direct NumPy / scikit-image references on small hand-built stacks."""

from __future__ import annotations

import numpy as np
import pytest
from scipy import ndimage as ndi
from skimage.measure import label as sk_label
from skimage.morphology import remove_small_objects

from napari_vessel.errors import InputError
from napari_vessel.refine.edits import (
    Edit,
    apply_edit,
    check_same_grid,
    erase_component_at,
    erase_small_components,
    fill_holes_with_nearest_label,
    keep_components_at,
)
from napari_vessel.refine.paths import bridge_gap, min_cost_path, paint_on_mip


@pytest.fixture
def blobs() -> np.ndarray:
    """Three components: a 3x3x3 cube (27), a line of 4 voxels, one voxel of label 2."""
    labels = np.zeros((8, 10, 10), dtype=np.uint16)
    labels[1:4, 1:4, 1:4] = 1
    labels[6, 6, 2:6] = 1
    labels[6, 1, 8] = 2
    return labels


def _count(labels: np.ndarray) -> int:
    return int(ndi.label(labels != 0)[1])


def test_edit_apply_and_inverse(blobs):
    edit = erase_component_at(blobs, (6, 6, 3))
    assert isinstance(edit, Edit) and edit.size == 4
    assert set(edit.old.tolist()) == {1} and set(edit.new.tolist()) == {0}
    result = apply_edit(blobs, edit)
    assert result is not blobs and blobs[6, 6, 3] == 1  # input untouched
    assert result[6, 6, 2:6].sum() == 0
    np.testing.assert_array_equal(apply_edit(result, edit.inverse()), blobs)
    in_place = blobs.copy()
    assert apply_edit(in_place, edit, copy=False) is in_place


def test_erase_small_components_matches_skimage(blobs):
    edit = erase_small_components(blobs, 5)
    expected = remove_small_objects(sk_label(blobs, connectivity=1), max_size=4) > 0
    np.testing.assert_array_equal(apply_edit(blobs, edit) != 0, expected)
    assert edit.size == 5  # the 4-voxel line and the single voxel
    # bool labels, one value: the fast path
    binary = blobs != 0
    np.testing.assert_array_equal(apply_edit(binary, erase_small_components(binary, 5)), expected)


def test_components_of_different_values_are_separate():
    labels = np.zeros((3, 3, 6), dtype=np.uint8)
    labels[1, 1, 0:3] = 1
    labels[1, 1, 3:5] = 2  # touching, different value: its own component of 2 voxels
    result = apply_edit(labels, erase_small_components(labels, 3))
    assert result[1, 1].tolist() == [1, 1, 1, 0, 0, 0]
    diagonal = np.zeros((3, 3, 3), dtype=np.uint8)
    diagonal[0, 0, 0] = diagonal[1, 1, 1] = 1
    assert erase_small_components(diagonal, 2, connectivity=3).size == 0
    assert erase_small_components(diagonal, 2, connectivity=1).size == 2


def test_keep_components_at(blobs):
    result = apply_edit(blobs, keep_components_at(blobs, [(2, 2, 2), (6, 1, 8)]))
    expected = blobs.copy()
    expected[6, 6, 2:6] = 0
    np.testing.assert_array_equal(result, expected)
    with pytest.raises(InputError, match="background"):
        keep_components_at(blobs, [(0, 0, 0)])


def test_erase_component_at_only_touches_one_component(blobs):
    result = apply_edit(blobs, erase_component_at(blobs, (2.2, 1.9, 3.1)))  # rounds to (2, 2, 3)
    assert result[1:4, 1:4, 1:4].sum() == 0 and result[6, 6, 2:6].all() and result[6, 1, 8] == 2
    with pytest.raises(InputError, match="background"):
        erase_component_at(blobs, (0, 0, 0))


@pytest.mark.parametrize("point", [(8, 0, 0), (-1, 2, 2), (0, 0, 10.6)])
def test_points_outside_the_volume(blobs, point):
    with pytest.raises(InputError, match="outside the volume"):
        erase_component_at(blobs, point)
    with pytest.raises(InputError, match="outside the volume"):
        keep_components_at(blobs, [point])


def test_fill_holes_3d_and_per_slice():
    tube = np.zeros((5, 7, 7), dtype=np.uint8)  # a vessel along z with an open lumen
    tube[:, 1:6, 1:6] = 1
    tube[:, 3, 3] = 0
    assert fill_holes_with_nearest_label(tube).size == 0  # open at both ends in 3D
    per_slice = apply_edit(tube, fill_holes_with_nearest_label(tube, per_slice=True))
    assert per_slice[:, 3, 3].tolist() == [1] * 5
    ball = np.zeros((7, 7, 7), dtype=np.uint8)
    ball[1:6, 1:6, 1:6] = 3
    ball[3, 3, 3] = 0
    np.testing.assert_array_equal(
        apply_edit(ball, fill_holes_with_nearest_label(ball)), np.where(ndi.binary_fill_holes(ball), 3, 0)
    )


def test_fill_holes_takes_nearest_label_value():
    labels = np.zeros((5, 5, 9), dtype=np.uint8)
    labels[1:4, 1:4, 0:3] = 1  # cube of 1 with a hole at (2, 2, 1)
    labels[2, 2, 1] = 0
    labels[1:4, 1:4, 5:8] = 7  # cube of 7 with a hole at (2, 2, 6)
    labels[2, 2, 6] = 0
    result = apply_edit(labels, fill_holes_with_nearest_label(labels))
    assert result[2, 2, 1] == 1 and result[2, 2, 6] == 7


def test_min_cost_path_follows_bright_curve():
    image = np.full((3, 30, 30), 0.1)
    image[1, 5, 5:25] = 1.0  # bright L-shaped detour
    image[1, 5:25, 24] = 1.0
    path = min_cost_path(image, (1, 5, 5), (1, 24, 24))
    assert tuple(path[0]) == (1, 5, 5) and tuple(path[-1]) == (1, 24, 24)
    assert np.mean(image[tuple(path.T)] == 1.0) > 0.9  # not the dark diagonal


def _two_segments():
    """A bright vessel along x (radius ~2) with a dim gap; labels cover both ends only."""
    zz, yy, xx = np.mgrid[0:12, 0:24, 0:60]
    vessel = (zz - 6) ** 2 + (yy - 12) ** 2 <= 4
    image = np.where(vessel, 1.0, 0.05) + 0.02 * np.random.default_rng(3).random(vessel.shape)
    image[vessel & (xx >= 20) & (xx < 40)] = 0.5  # the gap is dimmer but still a vessel
    labels = (vessel & ((xx < 20) | (xx >= 40))).astype(np.uint8)
    return labels, image, vessel


def test_bridge_gap_connects_two_components():
    labels, image, vessel = _two_segments()
    assert _count(labels) == 2
    edit = bridge_gap(labels, image, (6, 12, 18), (6, 12, 41))
    result = apply_edit(labels, edit)
    assert _count(result) == 1
    assert np.all(result[tuple(np.asarray(edit.index))] == 1)
    added = np.zeros(labels.shape, bool)
    added[edit.index] = True
    gap = vessel & (labels == 0)
    overlap = (added & gap).sum()
    assert overlap / gap.sum() > 0.7  # the tube has about the vessel's radius ...
    assert overlap / added.sum() > 0.7  # ... and stays inside it
    assert np.all(labels[edit.index] == 0)  # only background is painted


def test_bridge_gap_fixed_radius_and_anisotropy():
    labels, image, _ = _two_segments()
    thin = bridge_gap(labels, image, (6, 12, 18), (6, 12, 41), radius=0.5)
    assert _count(apply_edit(labels, thin)) == 1
    assert thin.size <= 22  # just the centre line through the 20-voxel gap
    aniso = bridge_gap(labels, image, (6, 12, 18), (6, 12, 41), spacing_zyx=(3, 1, 1), radius=1.0)
    zs = np.asarray(aniso.index[0])
    assert zs.min() == 6 and zs.max() == 6  # 1 µm does not reach the next slice 3 µm away


def test_bridge_gap_bad_input():
    labels, image, _ = _two_segments()
    with pytest.raises(InputError, match="outside the volume"):
        bridge_gap(labels, image, (6, 12, 18), (6, 12, 60))
    with pytest.raises(InputError, match="differs from image shape"):
        bridge_gap(labels, image[:, :, :50], (6, 12, 18), (6, 12, 41))
    wall = image.copy()
    wall[:, :, 30] = np.nan  # a masked plane splits the volume
    with pytest.raises(InputError, match="no path"):
        bridge_gap(labels, wall, (6, 12, 18), (6, 12, 41))
    with pytest.raises(InputError, match="masked"):
        bridge_gap(labels, wall, (6, 12, 30), (6, 12, 41))
    with pytest.raises(InputError, match="1 to 255"):
        bridge_gap(labels, image, (6, 12, 18), (6, 12, 41), label_value=300)
    with pytest.raises(InputError, match="radius"):
        bridge_gap(labels, image, (6, 12, 18), (6, 12, 41), radius=0)


def test_paint_on_mip_places_pixels_at_brightest_depth():
    image = np.zeros((10, 8, 8), dtype=np.float32)
    image[3, 2, 2] = 5.0
    image[7, 2, 3] = 5.0
    image[8, 2, 2] = 9.0  # brighter, but outside the slab (0, 6)
    labels = np.zeros(image.shape, dtype=np.int32)
    edit = paint_on_mip(labels, image, [(2, 2), (2.2, 3.4)], slab=(0, 6), label_value=4)
    result = apply_edit(labels, edit)
    assert result[3, 2, 2] == 4 and result[8, 2, 2] == 0
    top, depth = image[0:6].max(0), image[0:6].argmax(0)
    assert top[2, 3] == 0 and result[depth[2, 3], 2, 3] == 4  # ties: first slice, as argmax
    assert edit.size == 2
    full = apply_edit(labels, paint_on_mip(labels, image, [(2, 2)], brush_radius=1, depth_radius=1))
    assert full[7:10, 2, 2].tolist() == [1, 1, 1]  # brightest at z=8 in the whole stack
    assert full[6:9, 2, 3].tolist() == [1, 1, 1]  # brightest at z=7
    assert full[0:2, 3, 2].tolist() == [1, 1]  # a dark column: z=0, and z=-1 is cut off
    assert full.sum() == 3 + 3 + 3 * 2


def test_paint_on_mip_edges_and_bad_input():
    image = np.random.default_rng(0).random((4, 6, 6))
    labels = np.zeros(image.shape, dtype=np.uint8)
    edge = paint_on_mip(labels, image, [(0, 0)], brush_radius=2)
    assert edge.size == 6  # the disk is cut at the image border
    with pytest.raises(InputError, match="outside the image"):
        paint_on_mip(labels, image, [(10, 10)])
    with pytest.raises(InputError, match="not inside the stack"):
        paint_on_mip(labels, image, [(1, 1)], slab=(3, 9))
    with pytest.raises(InputError, match="differs from image shape"):
        paint_on_mip(labels[:2], image, [(1, 1)])
    with pytest.raises(InputError, match="integers"):
        paint_on_mip(image, image, [(1, 1)])
    with pytest.raises(InputError, match=r"\(N, 2\)"):
        paint_on_mip(labels, image, [(1, 1, 1)])


def test_check_same_grid_and_other_bad_input(blobs):
    check_same_grid(blobs, blobs.astype(float), (2, 1, 1), (2.0, 1.0, 1.0))
    with pytest.raises(InputError, match="scale"):
        check_same_grid(blobs, blobs, (2, 1, 1), (1, 1, 1))
    with pytest.raises(InputError, match="2D"):
        erase_small_components(blobs[0], 3)
    with pytest.raises(InputError, match="at least 1"):
        erase_small_components(blobs, 0)
    with pytest.raises(InputError, match="connectivity"):
        erase_small_components(blobs, 3, connectivity=4)


def test_erase_branch_keeps_the_rest_of_the_network():
    from napari_vessel.refine.branch import erase_branch_at

    labels = np.zeros((9, 60, 80), np.uint8)  # a T: a tube along x, a branch along y
    zz, yy, xx = np.indices(labels.shape)
    labels[((zz - 4) ** 2 + (yy - 15) ** 2) <= 9] = 1
    labels[((zz - 4) ** 2 + (xx - 40) ** 2 <= 9) & (yy >= 15)] = 1
    edit = erase_branch_at(labels, (4, 50, 40), (1.0, 1.0, 1.0))
    after = apply_edit(labels, edit)
    assert after[4, 50, 40] == 0 and after[4, 58, 40] == 0  # the clicked branch is gone
    assert after[4, 15, 5] == 1 and after[4, 15, 75] == 1  # both arms of the tube stay
    assert after[4, 15, 40] == 1 and after[4, 18, 40] == 1  # the junction stays
    assert 0.2 < edit.size / labels.sum() < 0.45  # a branch, not the network
    single = np.zeros((5, 20, 40), np.uint8)
    single[2, 8:12, 5:35] = 1  # one branch only: erased whole
    assert erase_branch_at(single, (2, 10, 20), (2.0, 1.0, 1.0)).size == single.sum()
    with pytest.raises(InputError, match="background"):
        erase_branch_at(labels, (0, 0, 0))
