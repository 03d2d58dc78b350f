"""Pure helpers of the Review & refine widget, against direct NumPy references."""

from __future__ import annotations

from collections import namedtuple

import numpy as np
import pytest

from napari_vessel.errors import InputError
from napari_vessel.refine import apply_edit
from napari_vessel.review_core import (
    erase_columns,
    paint_on_projection,
    project,
    projected_geometry,
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
