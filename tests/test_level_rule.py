"""The level rule: a threshold that follows the volume's predicted vessel fraction."""

from __future__ import annotations

import numpy as np
import pytest

from napari_vessel.errors import InputError
from napari_vessel.postprocess.labels import Postprocessing
from napari_vessel.postprocess.level import LevelRule, fraction_above
from napari_vessel.training.calibrate import MIN_RULE_VOLUMES, fit_level_rule

RULE = LevelRule(intercept=1.0, slope=-3.0, fraction_range=(0.05, 0.3))


def _volume(core: float, rim_is_vessel: bool, seed: int) -> tuple[np.ndarray, np.ndarray]:
    """A map with confident cores (p 0.9), faint rims (p 0.3) and background (p 0.05); the rims
    are labelled vessel in 'dense' volumes (wide hand labels) and background in sparse ones."""
    rng = np.random.default_rng(seed)
    kind = rng.choice(3, size=(4, 40, 40), p=[core, 0.1, 0.9 - core])
    prob = np.choose(kind, [0.9, 0.3, 0.05]).astype(np.float32)
    labels = (kind == 0) | ((kind == 1) & rim_is_vessel)
    return prob, labels.astype(np.uint8)


def test_level_follows_the_fraction_within_its_ranges():
    assert RULE.level_for(0.1) == pytest.approx(0.7)
    assert RULE.level_for(0.0) == RULE.level_for(0.05)  # no extrapolation below the range
    assert RULE.level_for(0.9) == RULE.level_for(0.3) == pytest.approx(0.1)
    steep = LevelRule(2.0, -10.0, (0.0, 1.0), level_range=(0.2, 0.8))
    assert steep.level_for(0.0) == 0.8 and steep.level_for(1.0) == 0.2
    assert RULE.held(0.0) and RULE.held(0.9) and not RULE.held(0.05) and not RULE.held(0.2)
    levels = [RULE.level_for(f) for f in np.linspace(0, 1, 21)]
    assert all(a >= b for a, b in zip(levels, levels[1:], strict=False))  # monotone


@pytest.mark.parametrize("bad", [
    {"intercept": float("nan"), "slope": 0, "fraction_range": [0, 1]},
    {"intercept": 1, "slope": "x", "fraction_range": [0, 1]},
    {"intercept": 1, "slope": 0, "fraction_range": [0.5, 0.1]},
    {"intercept": 1, "slope": 0, "fraction_range": [0, 1], "level_range": [0, 2]},
    {"intercept": 1, "slope": 0, "fraction_range": [0, 1], "probe": 1.0},
    {"intercept": 1, "slope": 0, "fraction_range": [0, 1, 2]},
    {"intercept": 1, "slope": 0},
    {"intercept": 1, "slope": 0, "fraction_range": [0, 1], "slop": 2},
    [1, 2, 3],
])
def test_a_bad_rule_is_refused_with_a_clear_error(bad):
    with pytest.raises(InputError, match="level rule"):
        LevelRule.from_dict(bad)


def test_rule_json_round_trip_and_fraction_of_lazy_arrays():
    assert LevelRule.from_dict(RULE.to_dict()) == RULE
    da = pytest.importorskip("dask.array")
    prob = np.random.default_rng(0).random((9, 20, 20)).astype(np.float32)
    expected = float((prob > 0.5).mean())
    assert fraction_above(prob) == pytest.approx(expected)
    assert fraction_above(da.from_array(prob, chunks=(2, 7, 20))) == pytest.approx(expected)
    zarr = pytest.importorskip("zarr")
    store = zarr.create_array(store={}, shape=prob.shape, chunks=(4, 8, 8), dtype="f4")
    store[:] = prob
    assert fraction_above(store) == pytest.approx(expected)
    bad = prob.copy()
    bad[3, 4, 5] = np.nan
    for array in (bad, da.from_array(bad, chunks=(2, 20, 20))):
        with pytest.raises(InputError, match="NaN"):
            fraction_above(array)
    from napari_vessel.errors import Cancelled
    from napari_vessel.progress import CancelToken

    token = CancelToken()
    token.cancel()
    with pytest.raises(Cancelled):
        fraction_above(store, cancel=token)


def test_postprocessing_resolves_the_rule_on_the_map_and_records_how():
    prob, _ = _volume(0.25, True, 0)
    recipe = Postprocessing.from_dict({"method": "threshold", "level": 0.575, "min_size": 0,
                                       "level_rule": RULE.to_dict()})
    assert recipe.rule == RULE and Postprocessing.from_dict(recipe.to_dict()) == recipe
    fixed = recipe.resolve(prob)
    fraction = float((prob > 0.5).mean())
    assert fixed.rule is None and fixed.threshold == pytest.approx(RULE.level_for(fraction), abs=1e-6)
    assert fixed.threshold < 0.3  # dense: the faint rims are vessel
    note = fixed.to_dict()["level_from"]
    assert note["fraction"] == pytest.approx(fraction) and note["fallback_level"] == 0.575
    np.testing.assert_array_equal(recipe.apply(prob), fixed.apply(prob))
    np.testing.assert_array_equal(recipe.apply(prob), prob > fixed.threshold)
    again = Postprocessing.from_dict(fixed.to_dict())  # a manifest's recipe: the same labels
    assert again.rule is None and again.threshold == fixed.threshold
    moved = fixed.rethreshold(0.6)  # the user's level wins: no rule, no note
    assert moved.threshold == 0.6 and "level_from" not in moved.to_dict()
    assert "vessel fraction" in recipe.describe() and "level rule" in fixed.describe()
    assert recipe.resolve(fraction=0.1).threshold == pytest.approx(0.7)
    assert Postprocessing(threshold=0.4).resolve(prob).threshold == 0.4  # no rule: itself


def test_a_rule_cannot_go_with_hysteresis():
    with pytest.raises(InputError, match="hysteresis"):
        Postprocessing.from_dict({"method": "hysteresis", "low": 0.4, "high": 0.9,
                                  "level_rule": RULE.to_dict()})
    with pytest.raises(InputError, match="needs the probability map"):
        Postprocessing(rule=RULE).resolve()


def test_fit_finds_the_rule_that_one_fixed_level_cannot_match():
    # dense volumes (many cores) label their rims, sparse ones do not: only a level that falls
    # with the fraction gets both right
    pairs = [_volume(core, dense, seed) for seed, (core, dense) in
             enumerate([(0.30, True), (0.26, True), (0.06, False), (0.08, False), (0.10, False)])]
    rule, f1_rule, f1_fixed = fit_level_rule([p for p, _ in pairs], [lab for _, lab in pairs],
                                             fixed=0.5)
    assert f1_rule == pytest.approx(1.0) and f1_fixed < 0.95
    for prob, lab in pairs:
        labels = Postprocessing(threshold=0.5, rule=rule).apply(prob)
        np.testing.assert_array_equal(labels, lab)
    assert rule.slope < 0
    assert rule.fraction_range[0] < 0.07 and rule.fraction_range[1] > 0.29


def test_fit_gives_a_flat_rule_when_every_volume_wants_one_level():
    pairs = [_volume(core, False, seed) for seed, core in enumerate([0.3, 0.2, 0.1, 0.05])]
    rule, f1_rule, f1_fixed = fit_level_rule([p for p, _ in pairs], [lab for _, lab in pairs],
                                             fixed=0.6)
    assert rule.slope == 0 and f1_rule == pytest.approx(1.0) == f1_fixed
    assert rule.intercept == pytest.approx(0.6)


def test_fit_needs_enough_volumes():
    pairs = [_volume(0.2, False, s) for s in range(MIN_RULE_VOLUMES - 1)]
    with pytest.raises(InputError, match=f"at least {MIN_RULE_VOLUMES}"):
        fit_level_rule([p for p, _ in pairs], [lab for _, lab in pairs], fixed=0.5)
