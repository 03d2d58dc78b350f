"""The model card's post-processing in ``segment``: paper 003's hysteresis for the cascades."""

from __future__ import annotations

import numpy as np
import pytest
from skimage.filters import apply_hysteresis_threshold

from napari_vessel.errors import InputError
from napari_vessel.inference.run import segment
from napari_vessel.models import registry
from napari_vessel.models.cascades import HYSTERESIS, paper_labels
from napari_vessel.postprocess.labels import Postprocessing


def postprocessing_recipe(spec, threshold=None, min_size=0) -> dict:
    """The JSON form of :meth:`Postprocessing.for_model` (as the run manifest holds it)."""
    return Postprocessing.for_model(spec, threshold, min_size).to_dict()


def apply_postprocessing(prob, recipe=None):
    return Postprocessing.from_dict(recipe).apply(prob)


def _hand_made_map() -> np.ndarray:
    """Background 0.05 with pieces whose fate under hysteresis 0.45/0.95 + clean-up is known."""
    prob = np.full((4, 24, 24), 0.05, dtype=np.float32)
    prob[0:2, 2:4, 2:22] = 0.6  # A: 80 faint voxels ...
    prob[1, 3, 10] = 0.99  # ... with one confident voxel: kept whole
    prob[0:2, 6:8, 2:22] = 0.9  # B: never above 0.95: dropped
    prob[3, 2:5, 2:5] = 0.99  # C: confident but 9 voxels < min_size 64: removed
    prob[2:4, 10:24, 10:24] = 0.7  # D: two rings with one confident voxel
    prob[3, 10, 10] = 0.97
    prob[2, 12:22, 12:22] = 0.1  # a 100-voxel hole (> max_hole 64): stays open
    prob[3, 13:21, 13:21] = 0.1  # a 64-voxel hole: filled
    return prob


@pytest.fixture
def fixed_map_model():
    """A classical model that returns the hand-made map and has the cascades' post-processing."""
    prob = _hand_made_map()
    spec = registry.ModelSpec(name="test-fixed-map", kind="classical", description="test",
                              predict=lambda volume, spacing, **_: prob.copy(),
                              patch_size_zyx=(1, 1, 1), postprocessing=HYSTERESIS)
    registry.register(spec, replace_existing=True)
    yield spec.name, prob
    registry.unregister(spec.name)


def test_segment_applies_card_hysteresis(fixed_map_model):
    name, prob = fixed_map_model
    image = np.random.default_rng(0).random(prob.shape).astype(np.float32)
    _, labels, manifest = segment(image, name)

    expected = apply_hysteresis_threshold(prob, 0.45, 0.95)
    assert expected[0:2, 2:4, 2:22].all() and not expected[0:2, 6:8].any()
    expected[3, 2:5, 2:5] = False  # C: removed as a small piece
    expected[3, 13:21, 13:21] = True  # the small hole: filled
    np.testing.assert_array_equal(labels, expected.astype(np.uint8))
    assert not labels[2, 12:22, 12:22].any()
    np.testing.assert_array_equal(labels, paper_labels(prob))
    recipe = manifest.parameters.postprocessing
    assert recipe["method"] == "hysteresis" and "function" not in recipe
    assert manifest.parameters.threshold == 0.45 and manifest.parameters.min_size == 64

    _, plain, manifest = segment(image, name, threshold=0.5)  # the user's threshold wins
    np.testing.assert_array_equal(plain, (prob > 0.5).astype(np.uint8))
    assert manifest.parameters.postprocessing["method"] == "threshold"

    _, bigger, _ = segment(image, name, min_size=100)  # only the two rings are that large
    assert bigger[2:4, 10:24, 10:24].any() and not bigger[0:2].any()


@pytest.mark.parametrize("name", ["dbac", "ddmac", "cascade-ensemble", "dbac-full"])
def test_cascades_default_to_hysteresis(name):
    spec = registry.get(name)
    recipe = postprocessing_recipe(spec)
    assert recipe["method"] == "hysteresis"
    expected = spec.card.postprocessing if spec.has_weights else HYSTERESIS  # fitted levels
    assert recipe["low"] == expected["low"] and recipe["high"] == expected["high"]
    assert recipe["min_size"] == HYSTERESIS["min_size"]
    assert postprocessing_recipe(registry.get(name), 0.3)["method"] == "threshold"


def test_other_models_keep_card_threshold():
    assert postprocessing_recipe(registry.get("frangi")) == {"method": "threshold", "level": 0.5,
                                                             "min_size": 0}
    spec = registry.get("tvnet")
    if spec.card is not None and spec.card.threshold is not None:
        assert postprocessing_recipe(spec)["level"] == pytest.approx(spec.card.threshold)
    with pytest.raises(InputError, match="between 0 and 1"):
        postprocessing_recipe(spec, 1.5)
    with pytest.raises(InputError, match="min_size"):
        postprocessing_recipe(spec, None, -1)


def test_apply_postprocessing_recipes():
    prob = np.random.default_rng(1).random((5, 20, 20)).astype(np.float32)
    np.testing.assert_array_equal(apply_postprocessing(prob, HYSTERESIS), paper_labels(prob))
    np.testing.assert_array_equal(apply_postprocessing(prob), (prob > 0.5).astype(np.uint8))
    with pytest.raises(InputError, match="unknown post-processing"):
        apply_postprocessing(prob, {"method": "watershed"})


def test_postprocessing_round_trips_the_card_json_and_validates():
    card = {"method": "hysteresis", "low": 0.25, "high": 0.35, "min_size": 64,
            "fill_holes": True, "max_hole": 64, "chosen_on": "training volumes"}
    recipe = Postprocessing.from_dict(card)
    assert recipe.to_dict() == card and list(recipe.to_dict()) == list(card)
    assert Postprocessing.from_dict(recipe.to_dict()) == recipe
    plain = {"method": "threshold", "level": 0.0, "min_size": 0}
    assert Postprocessing.from_dict(plain).to_dict() == plain
    spec = registry.get("frangi")
    assert Postprocessing.for_model(spec, 0.0).threshold == 0.0  # 0.0 is a threshold, not "none"
    for bad, message in [({"method": "hysteresis", "low": 0.9, "high": 0.5}, "low threshold"),
                         ({"level": 1.5}, "between 0 and 1"), ({"min_size": -1}, "min_size"),
                         ({"level": 0.5, "high": 0.9}, "hysteresis"),
                         ({"connectivity": 4}, "connectivity"),
                         ({"fill_holes": "yes"}, "fill_holes")]:
        with pytest.raises(InputError, match=message):
            Postprocessing(**{**Postprocessing.from_dict(
                {k: v for k, v in bad.items() if k != "fill_holes"}).__dict__,
                **({"fill_holes": bad["fill_holes"]} if "fill_holes" in bad else {})})


def test_rethreshold_keeps_the_method():
    recipe = Postprocessing.from_dict(HYSTERESIS)
    moved = recipe.rethreshold(0.5, 10)
    assert moved.method == "hysteresis" and moved.threshold == 0.5 and moved.min_size == 10
    assert moved.high == 0.95
    assert recipe.rethreshold(0.97).high == 0.97  # low == high: a plain threshold
