"""The hysteresis levels of a cascade card are fitted on the training volumes."""

from __future__ import annotations

import numpy as np
import pytest

from napari_vessel.training.calibrate import choose_hysteresis

PAPER = {"method": "hysteresis", "low": 0.45, "high": 0.95, "min_size": 0, "connectivity": 1}


def _case():
    """Two tubes seen at 0.6-0.8 (never 0.95) and a faint noise blob at 0.5."""
    prob = np.zeros((4, 32, 32), np.float32)
    labels = np.zeros(prob.shape, bool)
    prob[:, 5:8, :] = 0.6
    prob[:, 5:8, 10:12] = 0.8
    prob[:, 20:23, :] = 0.62
    prob[:, 20:23, 3] = 0.75
    labels[:, 5:8, :] = labels[:, 20:23, :] = True
    prob[:, 28:31, 28:31] = 0.5  # noise above low, never above 0.7
    return prob, labels


def test_the_paper_levels_find_nothing_and_the_fitted_ones_find_the_tubes():
    from napari_vessel.postprocess.labels import Postprocessing

    def apply_postprocessing(prob, recipe):
        return Postprocessing.from_dict(recipe).apply(prob)

    prob, labels = _case()
    assert not apply_postprocessing(prob, PAPER).any()
    recipe, f1 = choose_hysteresis([prob], [labels], 0.45, PAPER)
    assert recipe["low"] == 0.45 and 0.5 <= recipe["high"] < 0.75
    assert recipe["min_size"] == 0 and "training volumes" in recipe["chosen_on"]
    assert f1 == pytest.approx(1.0)
    assert np.array_equal(apply_postprocessing(prob, recipe) > 0, labels)


def test_the_high_level_never_drops_below_the_low_one():
    prob, labels = _case()
    recipe, _ = choose_hysteresis([prob], [labels], 0.7, PAPER, highs=[0.1, 0.7, 0.9])
    assert recipe["high"] >= recipe["low"] == 0.7
