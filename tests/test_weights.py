"""Weights on disk: safetensors + JSON card, atomic writes, every way loading can fail."""

from __future__ import annotations

import json

import pytest
import torch
from torch import nn

from napari_vessel.errors import InputError
from napari_vessel.models.weights import (
    CARD_FIELDS,
    FORMAT_VERSION,
    file_sha256,
    load_weights,
    read_card,
    save_weights,
)


def _net(channels: int = 3) -> nn.Module:
    torch.manual_seed(0)
    return nn.Sequential(nn.Conv3d(1, channels, 3, padding=1), nn.BatchNorm3d(channels))


CARD = {"architecture": "toy", "config": {"channels": 3}, "kind": "supervised",
        "trained_on": ["phantom"], "training": {"command": "napari-vessel train", "seed": 1,
                                                "steps": 10, "minutes": 0.1, "loss": 0.5},
        "scores": {"f1_mean": 0.9}, "parent": None}


def test_round_trip(tmp_path):
    model = _net()
    path = save_weights(model, tmp_path / "toy", CARD)
    assert path == tmp_path / "toy.safetensors"
    card_path = tmp_path / "toy.json"
    card = json.loads(card_path.read_text())
    assert set(CARD_FIELDS) <= set(card)
    assert card["format_version"] == FORMAT_VERSION and card["name"] == "toy"
    assert card["sha256"] == file_sha256(path) and card["weights_file"] == "toy.safetensors"
    assert card["created"] and card["training"]["seed"] == 1
    for spelling in (tmp_path / "toy", path, card_path):
        state, loaded_card = load_weights(spelling)
        assert loaded_card.to_dict() == card
        for key, value in model.state_dict().items():
            assert torch.equal(state[key], value)
    fresh = _net()
    with torch.no_grad():
        fresh[0].weight.zero_()
    load_weights(path, model=fresh)
    assert torch.equal(fresh[0].weight, model[0].weight)
    assert not list(tmp_path.glob("*.tmp")) and not list(tmp_path.glob(".*"))


def test_accepts_suffix_and_state_dict(tmp_path):
    path = save_weights(_net().state_dict(), tmp_path / "sd.safetensors", {"name": "custom"})
    assert path.name == "sd.safetensors"
    assert read_card(path).name == "custom"


def test_newer_card_version_asks_to_upgrade(tmp_path):
    save_weights(_net(), tmp_path / "toy", CARD)
    card = json.loads((tmp_path / "toy.json").read_text())
    card["format_version"] = FORMAT_VERSION + 1
    (tmp_path / "toy.json").write_text(json.dumps(card))
    with pytest.raises(InputError, match="upgrade napari-vessel"):
        load_weights(tmp_path / "toy")


def test_missing_card_and_missing_weights(tmp_path):
    with pytest.raises(InputError, match="not found"):
        load_weights(tmp_path / "nothing")
    save_weights(_net(), tmp_path / "toy", CARD)
    (tmp_path / "toy.safetensors").unlink()
    with pytest.raises(InputError, match="toy.safetensors, which does not exist"):
        load_weights(tmp_path / "toy")


def test_hash_mismatch(tmp_path):
    path = save_weights(_net(), tmp_path / "toy", CARD)
    data = bytearray(path.read_bytes())
    data[-1] ^= 0xFF
    path.write_bytes(bytes(data))
    with pytest.raises(InputError, match="SHA-256"):
        load_weights(path)


def test_corrupt_file(tmp_path):
    path = save_weights(_net(), tmp_path / "toy", CARD)
    path.write_bytes(b"this is not a safetensors file at all")
    card = json.loads((tmp_path / "toy.json").read_text())
    card["sha256"] = None  # only the parse can notice now
    (tmp_path / "toy.json").write_text(json.dumps(card))
    with pytest.raises(InputError, match="corrupt"):
        load_weights(path)
    (tmp_path / "toy.json").write_text("{broken")
    with pytest.raises(InputError, match="not JSON"):
        load_weights(path)


def test_mismatch_with_architecture_names_tensors(tmp_path):
    path = save_weights(_net(3), tmp_path / "toy", CARD)
    with pytest.raises(InputError, match=r"0\.weight \(3, 1, 3, 3, 3\) != \(4, 1, 3, 3, 3\)"):
        load_weights(path, model=_net(4))
    with pytest.raises(InputError, match=r"missing: 2\.bias, 2\.weight"):
        load_weights(path, model=nn.Sequential(*_net(3), nn.Conv3d(3, 1, 1)))


def test_unwritable_folder_leaves_nothing(tmp_path):
    blocker = tmp_path / "file"
    blocker.write_text("x")
    with pytest.raises(InputError, match="could not save"):
        save_weights(_net(), blocker / "sub" / "toy", CARD)
    with pytest.raises(InputError, match="JSON"):
        save_weights(_net(), tmp_path / "toy", {"config": {"bad": object()}})
    assert sorted(p.name for p in tmp_path.iterdir()) == ["file"]


def test_saved_files_follow_the_umask(tmp_path):
    import os

    old = os.umask(0o022)
    try:
        path = save_weights(_net(), tmp_path / "shared", CARD)
    finally:
        os.umask(old)
    assert path.stat().st_mode & 0o777 == 0o644
    assert (tmp_path / "shared.json").stat().st_mode & 0o777 == 0o644
