"""The typed model card: exact JSON round trips, clear refusals, nothing lost on a rewrite."""

from __future__ import annotations

import dataclasses
import json

import pytest
import torch
from torch import nn

from napari_vessel.errors import InputError
from napari_vessel.models.card import CARD_FIELDS, FORMAT_VERSION, ModelCard
from napari_vessel.models.registry import ModelSpec
from napari_vessel.models.weights import (
    SHIPPED_DIR,
    file_sha256,
    load_weights,
    read_card,
    save_weights,
)

SHIPPED_CARDS = sorted(SHIPPED_DIR.glob("*.json"))

GOOD = {"format_version": 1, "name": "toy", "architecture": "toy", "kind": "supervised",
        "config": {"channels": 3}}


def _net() -> nn.Module:
    torch.manual_seed(0)
    return nn.Sequential(nn.Conv3d(1, 2, 3, padding=1))


def test_there_are_shipped_cards():
    assert len(SHIPPED_CARDS) >= 5


@pytest.mark.parametrize("path", SHIPPED_CARDS, ids=lambda p: p.stem)
def test_every_shipped_card_round_trips_exactly(path):
    data = json.loads(path.read_text(encoding="utf-8"))
    card = ModelCard.from_dict(data)
    assert card.to_dict() == data
    assert ModelCard.read(path) == card and read_card(path) == card
    assert json.loads(card.to_json()) == data
    assert card.name == data["name"] and card.sha256 == data["sha256"]
    assert isinstance(card.trained_on, tuple)
    assert card.threshold is None or 0 <= card.threshold <= 1


def test_typed_fields_and_defaults():
    card = ModelCard.from_dict({**GOOD, "trained_on": ["a.tif", "b.tif"], "threshold": 1,
                                "patch_size_zyx": [8, 64, 64], "calibrated_on": ["a.tif"]})
    assert card.trained_on == ("a.tif", "b.tif") and card.patch_size_zyx == (8, 64, 64)
    assert card.threshold == 1.0 and isinstance(card.threshold, float)
    assert card.calibrated_on == ("a.tif",) and card.parent is None and card.extra == {}
    assert card.training == {} and card.scores == {}
    assert ModelCard.from_dict({**GOOD, "trained_on": "one phantom"}).trained_on == ("one phantom",)
    bare = ModelCard(name="bare")
    assert bare.format_version == FORMAT_VERSION and bare.config is None
    out = bare.to_dict()
    assert set(out) == set(CARD_FIELDS)  # optional fields are left out when not set
    assert out["trained_on"] == [] and out["training"] == {}


def test_the_card_is_frozen_and_its_json_is_a_copy():
    card = ModelCard.from_dict({**GOOD, "trained_on": [{"source": "a.tif"}]})
    with pytest.raises(dataclasses.FrozenInstanceError):
        card.threshold = 0.3  # type: ignore[misc]
    out = card.to_dict()
    out["config"]["channels"] = 99
    out["trained_on"][0]["source"] = "b.tif"
    assert card.config["channels"] == 3 and card.trained_on[0]["source"] == "a.tif"
    assert isinstance(hash(card), int)
    assert dataclasses.replace(card, threshold=0.25).threshold == 0.25


@pytest.mark.parametrize("change, message", [
    ({"threshold": 1.5}, "threshold 1.5 must be a number from 0 to 1"),
    ({"threshold": -0.1}, "threshold"),
    ({"threshold": "0.6"}, "threshold"),
    ({"threshold": True}, "threshold"),
    ({"format_version": FORMAT_VERSION + 1}, "upgrade napari-vessel"),
    ({"format_version": "1"}, "format_version"),
    ({"name": ""}, "name '' must be a non-empty text"),
    ({"name": 5}, "name"),
    ({"config": [3, 4]}, "config must be a JSON object"),
    ({"training": "fast"}, "training must be a JSON object"),
    ({"postprocessing": "hysteresis"}, "postprocessing must be a JSON object"),
    ({"patch_size_zyx": [32, 512]}, "patch_size_zyx"),
    ({"patch_size_zyx": [0, 64, 64]}, "patch_size_zyx"),
    ({"trained_on": [1, 2]}, "trained_on"),
    ({"kind": "magic"}, "kind 'magic' is not one of supervised"),
    ({"parent": 3}, "parent 3 must be a text"),
])
def test_invalid_cards_are_refused_with_a_clear_message(change, message):
    with pytest.raises(InputError, match=message):
        ModelCard.from_dict({**GOOD, **change})


def test_a_card_needs_a_name_and_a_json_object():
    with pytest.raises(InputError, match="no name"):
        ModelCard.from_dict({"format_version": 1, "architecture": "toy"})
    with pytest.raises(InputError, match="JSON object"):
        ModelCard.from_dict(["not", "a", "card"])  # type: ignore[arg-type]
    with pytest.raises(InputError, match="are card fields"):
        ModelCard(name="x", extra={"threshold": 0.5})


def test_read_names_the_file_and_fills_a_missing_name(tmp_path):
    path = tmp_path / "my-net.json"
    path.write_text(json.dumps({"format_version": 1, "architecture": "toy"}))
    assert ModelCard.read(path).name == "my-net"
    path.write_text(json.dumps({**GOOD, "threshold": 7}))
    with pytest.raises(InputError, match=r"my-net\.json.*threshold 7"):
        ModelCard.read(path)
    path.write_text(json.dumps({**GOOD, "format_version": FORMAT_VERSION + 1}))
    with pytest.raises(InputError, match="upgrade napari-vessel"):
        read_card(tmp_path / "my-net")
    path.write_text(json.dumps({"name": "x"}))
    with pytest.raises(InputError, match="no integer format_version"):
        ModelCard.read(path)


def test_an_unknown_key_survives_read_and_write(tmp_path):
    save_weights(_net(), tmp_path / "toy", GOOD)
    data = json.loads((tmp_path / "toy.json").read_text())
    data["lab_notebook"] = {"page": 12, "by": "someone"}
    data["threshold"] = 0.4
    (tmp_path / "toy.json").write_text(json.dumps(data))
    state, card = load_weights(tmp_path / "toy")
    assert card.extra == {"lab_notebook": {"page": 12, "by": "someone"}}
    assert card.to_dict() == data
    save_weights(state, tmp_path / "copy", card)  # read -> write keeps every key
    again = json.loads((tmp_path / "copy.json").read_text())
    assert again["lab_notebook"] == data["lab_notebook"] and again["threshold"] == 0.4
    assert set(again) == set(data)
    assert again["weights_file"] == "copy.safetensors"
    assert again["sha256"] == file_sha256(tmp_path / "copy.safetensors")


def test_a_bad_card_is_never_written(tmp_path):
    for bad in ({"threshold": 2.0}, {"config": "widths=4"}, {"name": 7}):
        with pytest.raises(InputError):
            save_weights(_net(), tmp_path / "toy", {**GOOD, **bad})
    assert list(tmp_path.iterdir()) == []


def test_model_spec_takes_a_card_or_a_few_notes():
    def spec(card):
        return ModelSpec(name="note-test", kind="classical", description="t",
                         predict=lambda v, s: v, card=card)

    assert spec(None).card is None and spec({}).card is None and spec({}).threshold == 0.5
    noted = spec({"paper": "someone 2020", "threshold": 0.3})
    assert isinstance(noted.card, ModelCard) and noted.card.name == "note-test"
    assert noted.card.extra == {"paper": "someone 2020"} and noted.threshold == 0.3
    card = ModelCard(name="other", threshold=0.0)
    assert spec(card).card is card and spec(card).threshold == 0.0
    with pytest.raises(InputError, match="threshold"):
        spec({"threshold": 3})
