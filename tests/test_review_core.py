"""Pure helpers of the Review & refine widget, against direct NumPy references."""

from __future__ import annotations

from collections import namedtuple

import numpy as np
import pytest
from scipy import ndimage as ndi

from napari_vessel.errors import InputError
from napari_vessel.refine.edits import apply_edit
from napari_vessel.refine.review import (
    depth_range,
    erase_columns,
    paint_on_projection,
    project,
    projected_geometry,
    projection_summary,
    region_from_update,
    slab_at,
    sliding_geometry,
    still_valid,
    stroke_pixels,
)


def _stack() -> np.ndarray:
    return np.random.default_rng(1).random((6, 8, 9)).astype(np.float32)


def test_project_modes_match_numpy():
    data = _stack()
    np.testing.assert_array_equal(project(data, "full", axis=1), data.max(axis=1))
    np.testing.assert_array_equal(project(data, "slab", slab=(2, 5)), data[2:5].max(axis=0))
    sliding = project(data, "sliding", s=3, t=2)
    assert sliding.shape == (2, 8, 9)
    np.testing.assert_array_equal(sliding[1], data[2:5].max(axis=0))
    assert project(data, "depth-coded").shape == (8, 9, 3)
    with pytest.raises(InputError, match="unknown"):
        project(data, "mean")
    with pytest.raises(InputError, match="3D stack"):
        project(data[0], "full")


def test_geometry_and_slab():
    assert projected_geometry((2, 1, 0.5), (10, 20, 30), axis=1) == ((2.0, 0.5), (10.0, 30.0))
    assert sliding_geometry((2, 1, 1), (10, 0, 0), s=5, t=2) == ((4.0, 1.0, 1.0), (14.0, 0.0, 0.0))
    assert slab_at(0.4, 3, 6) == (0, 2) and slab_at(9, 3, 6) == (4, 6)
    with pytest.raises(InputError, match="slab thickness 0"):
        slab_at(2, 0, 6)
    assert region_from_update([2, 3], (4, 5, 4), [1, 2]) == (slice(None), slice(2, 6), slice(3, 8))


def test_stroke_pixels_from_mask_and_index_atoms():
    Atom = namedtuple("Atom", "slice_key mask old_values new_value")
    mask = np.array([[True, False], [True, True]])
    atoms = [Atom((slice(1, 3), slice(4, 6)), mask, None, 3),
             ((np.array([0]), np.array([0])), np.array([0]), np.array([3]))]
    coords, value = stroke_pixels(atoms, (8, 9))
    assert value == 3
    assert {tuple(c) for c in coords} == {(0, 0), (1, 4), (2, 4), (2, 5)}


@pytest.mark.parametrize("axis", [0, 1, 2])
def test_paint_on_projection_uses_the_brightest_voxel(axis):
    image = _stack()
    labels = np.zeros(image.shape, np.uint8)
    plane = [d for d in range(3) if d != axis]
    coords = np.array([[1, 2], [3, 4]])
    edit = paint_on_projection(labels, image, coords, axis=axis, label_value=2)
    painted = apply_edit(labels, edit)
    depth = image.argmax(axis=axis)
    for a, b in coords:
        index = [0, 0, 0]
        index[plane[0]], index[plane[1]], index[axis] = a, b, depth[a, b]
        assert painted[tuple(index)] == 2
    assert (painted != 0).sum() == 2


def test_erase_columns_and_still_valid():
    labels = np.ones((4, 3, 3), np.int32)
    edit = erase_columns(labels, [[1, 1], [5, 5]], slab=(1, 3))
    erased = apply_edit(labels, edit)
    assert erased[:, 1, 1].tolist() == [1, 0, 0, 1] and erased.sum() == labels.sum() - 2
    labels[1, 1, 1] = 7  # changed by the user meanwhile: kept
    kept = apply_edit(labels, still_valid(edit, labels))
    assert kept[1, 1, 1] == 7 and kept[2, 1, 1] == 0


def _tube(shape, depth, row=16, radius=1.5):
    """A bright tube along x at z = ``depth(x)``, y = ``row`` (Gaussian profile, peak 1)."""
    z, y, x = np.mgrid[: shape[0], : shape[1], : shape[2]].astype(np.float32)
    return np.exp(-((z - depth(x)) ** 2 + (y - row) ** 2) / (2 * radius**2)).astype(np.float32)


def _disk(center, radius=2):
    cy, cx = center
    return np.array([(cy + dy, cx + dx) for dy in range(-radius, radius + 1)
                     for dx in range(-radius, radius + 1) if dy * dy + dx * dx <= radius * radius])


def _pieces(labels):
    return ndi.label(labels != 0, structure=np.ones((3, 3, 3)))[1]


@pytest.mark.parametrize("axis", [0, 2])
def test_a_dab_lands_as_one_piece_at_the_vessel_depth(axis):
    """A 5-pixel dab over an erased vessel: one 26-connected piece within 1 slice of the tube."""
    shape = (24, 32, 40)
    clean = _tube(shape, lambda x: 10.0 + 0 * x)
    dab = _disk((16, 20))  # 13 pixels, wider than the vessel
    scattered = 0
    for seed, noise in enumerate([0.0, 0.4, 0.8, 1.0, 1.0, 1.0]):
        image = clean + noise * np.random.default_rng(seed).random(shape, dtype=np.float32)
        labels = np.zeros(shape, np.uint8)  # the vessel's labels were erased
        # along x, the stack is (y, x, z) and the projected plane is still (y, x)
        moved_image, moved_labels = np.moveaxis(image, 0, axis), np.moveaxis(labels, 0, axis)
        edit = paint_on_projection(moved_labels, moved_image, dab, axis=axis, label_value=3)
        painted = np.moveaxis(apply_edit(moved_labels, edit), axis, 0)
        z, y, x = np.nonzero(painted)
        assert len(z) == len(dab) and np.all(painted[z, y, x] == 3)  # each pixel once
        assert _pieces(painted) == 1, (noise, sorted(set(z)))
        assert np.all(np.abs(z - 10) <= 1), (noise, sorted(set(z)))
        per_pixel = apply_edit(labels, paint_on_projection(labels, image, dab, connected=False))
        scattered += _pieces(per_pixel) > 1
    assert scattered  # each pixel at its own brightest voxel: the noisy dabs scatter


def test_a_drag_follows_a_vessel_that_changes_depth_as_one_piece():
    shape = (24, 32, 40)
    depth = lambda x: 4.0 + 0.4 * x  # noqa: E731 - from z = 6 to z = 18 along the stroke
    for noise in (0.0, 0.2):
        image = _tube(shape, depth) + noise * np.random.default_rng(1).random(shape, np.float32)
        labels = np.zeros(shape, np.int32)
        stroke = np.unique(np.concatenate([_disk((16, x)) for x in range(5, 36)]), axis=0)
        painted = apply_edit(labels, paint_on_projection(labels, image, stroke, label_value=2))
        z, y, x = np.nonzero(painted)
        assert _pieces(painted) == 1
        centre = y == 16
        assert np.all(np.abs(z[centre] - depth(x[centre])) <= 1.0)
        assert np.ptp(z) >= 10  # it did follow the vessel down


def test_status_and_legend_texts():
    assert projection_summary("full", 25) == "MIP of 25 slices along z"
    assert projection_summary("depth-coded", 61, axis_name="y", spacing=2.0) == (
        "depth MIP of 61 slices along y, depth coded 0-120 µm (red = slice 0, violet = slice 60)")
    assert projection_summary("slab", 48, slab=(8, 17)) == "slab MIP of slices 8-16 (9 of 48) along z"
    assert projection_summary("sliding", 10, s=5, t=2).startswith("3 sliding MIPs of 5 slices")
    assert depth_range(48, 0.5) == ("0 µm (slice 0)", "23.5 µm (slice 47)")
    with pytest.raises(InputError, match="unknown"):
        projection_summary("mean", 4)
