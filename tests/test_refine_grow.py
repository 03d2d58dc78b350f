"""A click on a missed vessel adds it: the bright region grown from the click (refine_grow)."""

from __future__ import annotations

import numpy as np
import pytest
from scipy.ndimage import binary_dilation

from napari_vessel.errors import InputError
from napari_vessel.refine.edits import apply_edit
from napari_vessel.refine.grow import add_vessel_at

SHAPE = (12, 40, 40)


def _tubes(shape=SHAPE, seed=0) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Two parallel tubes along x (radius 1.5 voxels) at y = 20 and y = 28, on noise.

    Returns the image and the two tubes' masks.
    """
    z, y, _x = np.indices(shape)
    first = (z - 6) ** 2 + (y - 20) ** 2 <= 2.25
    second = (z - 6) ** 2 + (y - 28) ** 2 <= 2.25
    rng = np.random.default_rng(seed)
    image = 0.2 + 0.8 * (first | second) + rng.normal(0, 0.05, shape)
    return image.astype(np.float32), first, second


def _added(edit, shape) -> np.ndarray:
    mask = np.zeros(shape, bool)
    mask[edit.index] = True
    return mask


def test_a_click_adds_the_tube_near_it_and_nothing_beyond_the_radius_or_the_gap():
    image, first, second = _tubes()
    labels = np.zeros(SHAPE, np.uint8)
    edit = add_vessel_at(labels, image, (6, 20, 20), radius_um=8.0)
    added = _added(edit, SHAPE)
    assert np.all(edit.old == 0) and np.all(edit.new == 1)
    x = np.arange(SHAPE[2])
    near = first & (np.abs(x - 20) <= 5)  # tube voxels well inside the ball
    assert added[near].mean() > 0.95
    assert not added[second].any()  # the other tube is in the ball but not connected
    assert not added[..., np.abs(x - 20) > 8 + 1.5].any()  # beyond radius (+ the snap)
    assert not added[~binary_dilation(first)].any()  # no leak into the noise around the tube


def test_a_click_beside_a_thin_vessel_snaps_onto_it():
    image, first, _second = _tubes()
    labels = np.zeros(SHAPE, np.uint8)
    on = _added(add_vessel_at(labels, image, (6, 20, 20), radius_um=8.0), SHAPE)
    beside = _added(add_vessel_at(labels, image, (6, 22.2, 20), radius_um=8.0), SHAPE)
    assert beside[first].sum() > 0.9 * on[first].sum()


def test_the_radius_is_measured_in_micrometres_along_each_axis():
    shape = (30, 24, 24)
    z, y, x = np.indices(shape)
    tube = (y - 12) ** 2 + (x - 12) ** 2 <= 2.25  # a penetrating vessel along z
    image = (0.2 + 0.8 * tube + np.random.default_rng(1).normal(0, 0.05, shape)).astype(np.float32)
    labels = np.zeros(shape, np.uint8)
    iso = _added(add_vessel_at(labels, image, (15, 12, 12), (1.0, 1.0, 1.0), radius_um=8.0), shape)
    aniso = _added(add_vessel_at(labels, image, (15, 12, 12), (2.0, 1.0, 1.0), radius_um=8.0), shape)
    iso_z = np.nonzero(iso.any(axis=(1, 2)))[0]
    aniso_z = np.nonzero(aniso.any(axis=(1, 2)))[0]
    # 8 µm either side of the (snapped) click: 8 slices of 1 µm, or 4 slices of 2 µm
    assert iso_z.max() - iso_z.min() == 16 and abs(iso_z.mean() - 15) <= 1.5
    assert aniso_z.min() == 11 and aniso_z.max() == 19  # a 2 µm step is beyond the 1.5 µm snap
    assert iso[15].sum() == aniso[15].sum() == tube[15].sum()  # the same cross-section in y, x


def test_labelled_voxels_stay_and_the_label_value_is_used_and_inputs_are_unchanged():
    image, first, _second = _tubes()
    labels = np.zeros(SHAPE, np.int32)
    labels[:, :, :20] = 7 * first[:, :, :20]  # half of the tube is labelled already
    image_before, labels_before = image.copy(), labels.copy()
    edit = add_vessel_at(labels, image, (6, 20, 20), radius_um=8.0, value=3)
    np.testing.assert_array_equal(image, image_before)
    np.testing.assert_array_equal(labels, labels_before)
    assert edit.size > 0 and np.all(edit.old == 0) and np.all(edit.new == 3)
    result = apply_edit(labels, edit)
    assert np.all(result[first & (np.arange(SHAPE[2]) < 20)] == 7)
    assert np.all(result[6, 20, 20:27] == 3)
    again = add_vessel_at(result, image, (6, 20, 20), radius_um=8.0, value=3)
    assert again.size == 0  # already labelled: nothing to add


def test_bool_labels_and_a_lazy_image_give_the_same_region():
    da = pytest.importorskip("dask.array")
    image, _first, _second = _tubes()
    plain = add_vessel_at(np.zeros(SHAPE, np.uint8), image, (6, 20, 20), radius_um=8.0)
    lazy = add_vessel_at(np.zeros(SHAPE, bool), da.from_array(image, chunks=(4, 16, 16)),
                         (6, 20, 20), radius_um=8.0)
    np.testing.assert_array_equal(_added(plain, SHAPE), _added(lazy, SHAPE))
    assert lazy.new.dtype == bool and lazy.new.all()


@pytest.mark.parametrize("point", [(6, 5, 5), (6, 12, 20), (2, 34, 30)])
def test_a_click_on_the_background_is_refused(point):
    image, _first, _second = _tubes()
    with pytest.raises(InputError, match="no vessel at"):
        add_vessel_at(np.zeros(SHAPE, np.uint8), image, point, radius_um=8.0)


def test_a_masked_wall_stops_the_growth_and_a_click_on_it_is_refused():
    image, first, _second = _tubes()
    image[:, :, 24] = np.nan  # a masked plane across the tube
    added = _added(add_vessel_at(np.zeros(SHAPE, np.uint8), image, (6, 20, 20), radius_um=8.0),
                   SHAPE)
    assert added[first].any() and not added[:, :, 24:].any()
    with pytest.raises(InputError, match="masked"):
        add_vessel_at(np.zeros(SHAPE, np.uint8), image, (6, 20, 24))


def test_a_flat_image_is_refused():
    with pytest.raises(InputError, match="not clearly brighter"):
        add_vessel_at(np.zeros(SHAPE, np.uint8), np.ones(SHAPE, np.float32), (6, 20, 20))


@pytest.mark.parametrize("kwargs, message", [
    ({"point": (6, 20, 40)}, "outside the volume"),
    ({"point": (-1, 20, 20)}, "outside the volume"),
    ({"point": (6, 20)}, "not a \\(z, y, x\\) position"),
    ({"image": np.zeros((12, 40, 39), np.float32)}, "differs from image shape"),
    ({"radius_um": 0.0}, "radius"),
    ({"radius_um": float("nan")}, "radius"),
    ({"spacing_zyx": (1.0, 0.0, 1.0)}, "voxel size"),
    ({"value": 0}, "label value 0"),
    ({"connectivity": 4}, "connectivity"),
])
def test_bad_input_is_refused_with_a_clear_message(kwargs, message):
    image, _first, _second = _tubes()
    args = {"labels": np.zeros(SHAPE, np.uint8), "image": image, "point": (6, 20, 20), **kwargs}
    with pytest.raises(InputError, match=message):
        add_vessel_at(**args)


def test_cancel_stops_before_anything_is_returned():
    from napari_vessel.progress import Cancelled, CancelToken

    image, _first, _second = _tubes()
    token = CancelToken()
    token.cancel()
    with pytest.raises(Cancelled):
        add_vessel_at(np.zeros(SHAPE, np.uint8), image, (6, 20, 20), cancel=token)
