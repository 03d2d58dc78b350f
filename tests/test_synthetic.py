"""The domain-randomised synthetic generator: seeded, varied, exact labels, validated ranges."""

from __future__ import annotations

import json

import numpy as np
import pytest

from napari_vessel.data.synthetic import SyntheticConfig, synthetic_volume
from napari_vessel.errors import InputError

SMALL = SyntheticConfig(shape_zyx=(8, 48, 48), radius_um=(1.0, 8.0))


def test_same_index_and_seed_give_the_same_volume_others_differ():
    a, b = synthetic_volume(3, seed=1, config=SMALL), synthetic_volume(3, seed=1, config=SMALL)
    assert np.array_equal(a.image, b.image) and np.array_equal(a.labels, b.labels)
    assert a.params == b.params
    c = synthetic_volume(4, seed=1, config=SMALL)
    d = synthetic_volume(3, seed=2, config=SMALL)
    assert not np.array_equal(a.image, c.image) and not np.array_equal(a.image, d.image)


def test_volumes_cover_the_ranges_and_stay_in_unit_range():
    vols = [synthetic_volume(i, seed=0, config=SMALL) for i in range(12)]
    spacings_z = [v.spacing_zyx[0] for v in vols]
    assert min(spacings_z) >= 0.5 and max(spacings_z) <= 5.0
    assert max(spacings_z) / min(spacings_z) > 2  # random voxel sizes, not one microscope
    assert {v.params["kind"] for v in vols} <= {"2pm", "confocal"}
    for v in vols:
        assert v.image.dtype == np.float32 and v.labels.dtype == np.uint8
        assert v.image.shape == v.labels.shape == (8, 48, 48)
        assert 0.0 <= float(v.image.min()) and float(v.image.max()) <= 1.0
        r_min, r_max = v.params["radius_range"]
        assert 1.0 <= r_min <= r_max <= 8.0
        json.dumps(v.params)  # recorded for the card
    assert any(v.labels.any() for v in vols)


def test_generator_2_draws_dim_branches_grainy_interiors_and_more_leakage():
    from napari_vessel.data.synthetic import GENERATOR_2

    config = SyntheticConfig(shape_zyx=(8, 48, 48), radius_um=(1.0, 8.0), **GENERATOR_2)
    vols = [synthetic_volume(i, seed=0, config=config) for i in range(12)]
    for v in vols:
        assert 0.15 <= v.params["dimmest"] <= 0.8  # some branches far dimmer than others
        assert 0.1 <= v.params["texture"] <= 0.7 and 2.0 <= v.params["texture_um"] <= 20.0
        assert 0.0 <= v.params["leak"] <= 1.2
    assert sum(v.params["leak"] > 0 for v in vols) >= 3  # dye leakage in about half of them
    plain = synthetic_volume(0, seed=0, config=SMALL)
    assert "dimmest" not in plain.params and "texture" not in plain.params


def test_generator_1_still_draws_the_shipped_pretraining_volumes():
    # recorded from the generator of the commit that made the shipped tvnet's pretraining
    v = synthetic_volume(0, seed=0)
    assert int(v.labels.sum()) == 29937
    assert float(v.image.astype(np.float64).sum()) == pytest.approx(125143.2573, rel=1e-6)


def test_vessels_are_brighter_than_background_on_average():
    """Not a contrast-free mess: on most volumes the labelled voxels are the brighter ones."""
    brighter = 0
    for i in range(10):
        v = synthetic_volume(i, seed=0, config=SMALL)
        if v.labels.any() and (~v.labels.astype(bool)).any():
            brighter += v.image[v.labels > 0].mean() > v.image[v.labels == 0].mean()
    assert brighter >= 7


def test_inversion_flips_the_contrast():
    inverted = SyntheticConfig(shape_zyx=(8, 48, 48), radius_um=(1.0, 8.0), invert_probability=1.0)
    v = synthetic_volume(0, seed=0, config=inverted)
    assert v.params["inverted"]
    plain = synthetic_volume(0, seed=0, config=SMALL)
    assert np.array_equal(v.labels, plain.labels)


@pytest.mark.parametrize("kwargs, match", [
    ({"shape_zyx": (2, 48, 48)}, "shape_zyx"),
    ({"shape_zyx": (8, 48)}, "shape_zyx"),
    ({"radius_um": (5.0, 1.0)}, "radius_um"),
    ({"radius_um": (-1.0, 3.0)}, "radius_um"),
    ({"spacing_z_um": (0.0, 2.0)}, "spacing_z_um"),
    ({"spacing_xy_um": ("a", 2.0)}, "spacing_xy_um"),
    ({"confocal_probability": 1.5}, "probability"),
    ({"background_structures": -1}, "background_structures"),
    ({"dimmest": (0.0, 0.5)}, "dimmest"),
    ({"leak_probability": 2}, "probability"),
    ({"leak_strength": (1.0, 0.5)}, "leak_strength"),
    ({"generator": 3}, "generator"),
    ({"dimmest": (0.2, 0.5)}, "needs generator=2"),
    ({"shape_zyx": (8, 8, 8), "radius_um": (5.0, 6.0)}, "does not fit"),
])
def test_impossible_settings_are_refused_with_the_reason(kwargs, match):
    with pytest.raises(InputError, match=match):
        SyntheticConfig(**kwargs)


def test_bad_index_or_seed_is_refused():
    with pytest.raises(InputError, match="index"):
        synthetic_volume(-1, config=SMALL)
    with pytest.raises(InputError, match="seed"):
        synthetic_volume(0, seed=1.5, config=SMALL)


def test_visible_labels_change_the_labels_only_where_a_person_would_paint_otherwise():
    from napari_vessel.data.synthetic import GENERATOR_2

    exact = SyntheticConfig(shape_zyx=(8, 64, 64), radius_um=(1.0, 8.0), **GENERATOR_2)
    visible = SyntheticConfig(shape_zyx=(8, 64, 64), radius_um=(1.0, 8.0), labels="visible",
                              **GENERATOR_2)
    changed = 0
    for i in range(6):
        a, b = (synthetic_volume(i, seed=3, config=c) for c in (exact, visible))
        assert np.array_equal(a.image, b.image) and a.params == b.params  # same draws
        assert b.labels.dtype == np.uint8 and set(np.unique(b.labels)) <= {0, 1}
        kept = (a.labels > 0) & (b.labels > 0)
        assert kept.sum() >= 0.2 * a.labels.sum()  # most vessels stay visible
        changed += int((a.labels != b.labels).sum())
    assert changed > 0
    with pytest.raises(InputError, match="labels"):
        SyntheticConfig(labels="blurred")
