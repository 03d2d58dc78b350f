"""The model registry: lookup with suggestions, registration, user models folder, loading."""

from __future__ import annotations

import json

import pytest
import torch

from napari_vessel.errors import InputError
from napari_vessel.models import registry
from napari_vessel.models.registry import ModelSpec
from napari_vessel.models.umis import build_umis
from napari_vessel.models.weights import save_weights

TINY = {"width": 2, "blocks": [1, 1], "strides": [[1, 2, 2], [2, 2, 2]],
        "stem_kernel": [3, 3, 3], "stem_stride": [1, 1, 1], "morph_iterations": 1}


@pytest.fixture
def user_dir(tmp_path, monkeypatch):
    folder = tmp_path / "models"
    folder.mkdir()
    monkeypatch.setenv(registry.MODELS_ENV, str(folder))
    return folder


@pytest.fixture
def scratch_name():
    name = "test-scratch-model"
    yield name
    registry.unregister(name)


def _classical(name: str) -> ModelSpec:
    return ModelSpec(name=name, kind="classical", description="test",
                     predict=lambda v, s: v, trainable=False)


def test_builtin_models_are_listed():
    names = {s.name: s for s in registry.list_models()}
    assert {"umis", "umis-full", "frangi", "morph-acwe"} <= set(names)
    assert names["umis"].kind == "unsupervised" and names["umis"].trainable
    assert names["frangi"].kind == "classical" and not names["frangi"].trainable
    assert all(s.kind == "classical" for s in registry.list_models(kind="classical"))
    with pytest.raises(InputError, match="kind"):
        registry.list_models(kind="magic")


def test_unknown_name_suggests_closest():
    with pytest.raises(InputError, match="did you mean 'umis'") as info:
        registry.get("umsi")
    assert "available models" in str(info.value)
    with pytest.raises(InputError, match="unknown model 'zzzzzzzz'"):
        registry.get("zzzzzzzz")
    assert registry.get("UMIS").name == "umis"  # case does not matter


def test_register_rejects_duplicates_and_bad_specs(scratch_name):
    registry.register(_classical(scratch_name))
    with pytest.raises(ValueError, match="already registered"):
        registry.register(_classical(scratch_name))
    registry.register(_classical(scratch_name), replace_existing=True)
    assert registry.get(scratch_name).kind == "classical"
    with pytest.raises(ValueError, match="kind"):
        ModelSpec(name="x", kind="magic", description="", predict=lambda v, s: v)
    with pytest.raises(ValueError, match="predict"):
        ModelSpec(name="x", kind="classical", description="")
    with pytest.raises(ValueError, match="builder"):
        ModelSpec(name="x", kind="supervised", description="")
    with pytest.raises(ValueError, match="output"):
        ModelSpec(name="x", kind="supervised", description="", builder=build_umis, output="odds")


def test_default_model_is_usable(monkeypatch):
    monkeypatch.setattr(registry, "DEFAULT_ORDER", ("umis", "frangi"))
    expected = "umis" if registry.get("umis").usable else "frangi"
    assert registry.default_model_name() == expected


def test_parameter_counts_use_no_memory():
    assert registry.count_parameters("frangi") is None
    slim = registry.count_parameters("umis")
    full = registry.count_parameters("umis-full")
    assert 1e5 < slim < 1e6
    assert 60e6 < full < 90e6


def test_load_model_needs_weights_or_permission():
    if not registry.get("umis").has_weights:
        with pytest.raises(InputError, match="no trained weights"):
            registry.load_model("umis")
    model, spec = registry.load_model("umis", "cpu", allow_untrained=True)
    assert not model.training and spec.name == "umis"
    with pytest.raises(InputError, match="classical"):
        registry.load_model("frangi")


def test_user_model_appears_and_loads(user_dir):
    torch.manual_seed(0)
    model = build_umis(**TINY)
    save_weights(model, user_dir / "my-finetune",
                 {"architecture": "umis", "config": TINY, "kind": "unsupervised",
                  "parent": "umis", "scores": {"f1_mean": 0.8}})
    spec = registry.get("my-finetune")
    assert spec.source == "user" and spec.kind == "unsupervised" and spec.usable
    assert spec.card.parent == "umis"
    assert "my-finetune" in [s.name for s in registry.list_models()]
    loaded, spec = registry.load_model("my-finetune", "cpu")
    assert not loaded.training
    for key, value in model.state_dict().items():
        assert torch.equal(value, loaded.state_dict()[key])


def test_a_killed_save_leftover_does_not_hide_the_model(user_dir):
    """A save killed between writing the card's temporary file and moving it into place leaves
    ``.NAME.json.<id>.partial.json``: it is no model, and the real card still registers."""
    torch.manual_seed(0)
    save_weights(build_umis(**TINY), user_dir / "mine",
                 {"architecture": "umis", "config": TINY, "kind": "unsupervised"})
    card = (user_dir / "mine.json").read_text()
    (user_dir / ".mine.json.0a1b2c3d.partial.json").write_text(card)  # sorts first
    spec = registry.get("mine")
    assert spec.weights == user_dir / "mine.safetensors" and spec.usable
    assert not any(s.name.startswith(".") for s in registry.list_models())


def test_bad_user_cards_are_skipped_with_a_warning(user_dir):
    (user_dir / "broken.json").write_text("{not json")
    (user_dir / "alien.json").write_text(json.dumps({"name": "alien", "architecture": "nope",
                                                     "format_version": 1}))
    (user_dir / "umis.json").write_text(json.dumps({"name": "umis", "architecture": "umis",
                                                    "format_version": 1}))
    with pytest.warns(UserWarning) as record:
        names = [s.name for s in registry.list_models()]
    text = " ".join(str(w.message) for w in record)
    assert "unreadable" in text and "not registered" in text and "like another model" in text
    assert "alien" not in names and names.count("umis") == 1


def test_user_card_naming_missing_weights_fails_on_load(user_dir):
    (user_dir / "ghost.json").write_text(json.dumps(
        {"name": "ghost", "architecture": "umis", "config": TINY, "format_version": 1,
         "kind": "unsupervised", "weights_file": "ghost.safetensors"}))
    assert not registry.get("ghost").usable
    with pytest.raises(InputError, match="does not exist"):
        registry.load_model("ghost")


def test_renamed_user_card_loads_the_weights_it_names(user_dir):
    torch.manual_seed(0)
    model = build_umis(**TINY)
    save_weights(model, user_dir / "run-7", {"architecture": "umis", "config": TINY,
                                             "kind": "unsupervised"})
    card = json.loads((user_dir / "run-7.json").read_text())
    card["name"] = "best-run"
    (user_dir / "run-7.json").unlink()
    (user_dir / "best-run.json").write_text(json.dumps(card))  # renamed card, same weights file
    loaded, spec = registry.load_model("best-run", "cpu")
    assert spec.card.name == "best-run"
    for key, value in model.state_dict().items():
        assert torch.equal(value, loaded.state_dict()[key])


def test_card_threshold_has_one_rule():
    from dataclasses import replace

    base = registry.get("tvnet")
    assert replace(base, card={}).threshold == 0.5
    assert replace(base, card={"threshold": 0.0}).threshold == 0.0  # not "or 0.5"
    assert replace(base, card={"threshold": 0.65}).threshold == 0.65
    for bad in (1.5, -0.1, "0.6", True):
        with pytest.raises(InputError, match="threshold"):
            replace(base, card={"threshold": bad}).threshold  # noqa: B018
