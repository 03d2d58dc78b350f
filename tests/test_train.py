"""Tests of the supervised training loop, its losses, data handling and the train command."""

from __future__ import annotations

import json
import os

import numpy as np
import pytest
import torch
from pairs import bar_pair

from napari_vessel.errors import Cancelled, InputError
from napari_vessel.models.tvnet import build_tvnet
from napari_vessel.progress import CancelToken
from napari_vessel.training import train as train_module
from napari_vessel.training.data import LabelledPatchSampler, augment, load_pairs, normalise
from napari_vessel.training.train import (
    TrainConfig,
    balanced_bce,
    choose_threshold,
    save_checkpoint,
    soft_cldice_loss,
    soft_dice_loss,
    train,
    tv_loss_3d,
)

TINY = {"widths": [2, 4, 4, 4], "norm": "batch"}


@pytest.fixture(autouse=True)
def _one_thread():
    """Tiny tensors: one thread avoids thread hand-off costs on a busy machine."""
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)


def _cfg(**kw) -> TrainConfig:
    base = dict(steps=4, batch_size=2, patch_size=(4, 16, 16), lr=1e-2, checkpoint_every=0)
    base.update(kw)
    return TrainConfig(**base)


def test_balanced_bce_by_hand():
    logits = torch.zeros(1, 1, 1, 1, 4)
    target = torch.tensor([1.0, 0, 0, 0]).view(1, 1, 1, 1, 4)
    # beta = 3/4 on the positive voxel, 1/4 on each negative; BCE of logit 0 is log 2
    expected = (0.75 + 3 * 0.25) / 4 * np.log(2)
    assert balanced_bce(logits, target).item() == pytest.approx(expected, rel=1e-5)
    # the recipe doubles it (plain BCE when the classes are balanced)
    assert train_module.BCE_SCALE == 2.0


def test_recipe_loss_plain_or_balanced_cross_entropy():
    torch.manual_seed(0)
    logits = torch.randn(2, 1, 4, 8, 8)
    target = (torch.rand(2, 1, 4, 8, 8) > 0.8).float()
    model = build_tvnet(**TINY)
    plain = TrainConfig(balance=False, tv_weight=0.0, dice_weight=0.0)
    expected = torch.nn.functional.binary_cross_entropy(torch.sigmoid(logits), target)
    assert train_module._loss(logits, target, plain, model).item() == pytest.approx(
        expected.item(), rel=1e-5)
    balanced = TrainConfig(tv_weight=0.0, dice_weight=0.0)  # default: twice eq. 1 of paper 001
    assert train_module._loss(logits, target, balanced, model).item() == pytest.approx(
        2 * balanced_bce(logits, target, clip=1e-3).item(), rel=1e-5)


def test_tv_dice_cldice_on_known_cases():
    flat = torch.full((1, 1, 4, 8, 8), 0.7)
    assert tv_loss_3d(flat).item() == pytest.approx(0.0, abs=1e-6)
    step = torch.zeros(1, 1, 4, 8, 8)
    step[..., 4:] = 1.0
    assert tv_loss_3d(step).item() > 0
    target = torch.zeros(1, 1, 5, 9, 9)
    target[:, :, 2, 4, 1:8] = 1.0
    assert soft_dice_loss(target, target).item() == pytest.approx(0.0, abs=1e-6)
    assert soft_cldice_loss(target, target).item() == pytest.approx(0.0, abs=1e-6)
    assert soft_cldice_loss(torch.zeros_like(target), target).item() > 0.5


def test_choose_threshold_picks_the_separating_value():
    labels = np.array([[0, 0, 1, 1]], bool)
    prob = np.array([[0.1, 0.3, 0.6, 0.9]])
    threshold, scores = choose_threshold([prob], [labels], np.array([0.2, 0.5, 0.8]))
    assert threshold == 0.5 and scores == [1.0]


def test_normalise_and_load_pairs(tmp_path):
    tifffile = pytest.importorskip("tifffile")
    (tmp_path / "images").mkdir()
    (tmp_path / "labels").mkdir()
    pair = bar_pair()
    tifffile.imwrite(tmp_path / "images" / "a.tif", (pair.image * 100 + 50).astype(np.uint8))
    tifffile.imwrite(tmp_path / "labels" / "a.tif", pair.labels.astype(np.uint8) * 255)
    [loaded] = load_pairs(tmp_path)
    assert loaded.name == "a" and loaded.labels.dtype == bool
    assert -0.5 <= loaded.image.min() and loaded.image.max() <= 2.0
    assert np.array_equal(loaded.labels, pair.labels)
    with pytest.raises(InputError, match="images"):
        load_pairs(tmp_path / "images")
    assert np.all(normalise(np.zeros((2, 3, 3))) == 0)
    with pytest.raises(InputError, match="3D"):
        normalise(np.zeros((3, 3)))


def test_sampler_and_augment_shapes():
    pair = bar_pair(shape=(3, 20, 20))  # thinner than the patch: padded
    sampler = LabelledPatchSampler([pair], (4, 16, 16), foreground_fraction=1.0)
    rng = np.random.default_rng(0)
    image, labels = sampler.sample(rng)
    assert image.shape == labels.shape == (4, 16, 16)
    assert labels.mean() > 0
    gen = torch.Generator().manual_seed(0)
    x, y = augment(torch.from_numpy(image)[None, None], torch.from_numpy(labels)[None, None], gen)
    assert x.shape == y.shape == (1, 1, 4, 16, 16)
    assert set(torch.unique(y).tolist()) <= {0.0, 1.0}


def test_loss_decreases_on_a_learnable_case():
    torch.manual_seed(0)
    result = train(build_tvnet(**TINY), [bar_pair(0), bar_pair(1)],
                   _cfg(steps=30, augment_strength=0.0))
    assert np.mean(result.losses[-8:]) < 0.7 * np.mean(result.losses[:8])
    assert result.train_f1["bars0"] > 0.8
    assert 0.0 < result.threshold < 1.0


def test_seeded_runs_are_identical():
    def run():
        torch.manual_seed(3)
        return train(build_tvnet(**TINY), [bar_pair(0)], _cfg(seed=3))

    a, b = run(), run()
    assert a.losses == b.losses
    for (name, p), q in zip(a.model.state_dict().items(), b.model.state_dict().values(),
                            strict=True):
        assert torch.equal(p, q), name


def test_checkpoint_is_atomic(tmp_path, monkeypatch):
    from safetensors.torch import load_file

    model = build_tvnet(**TINY)
    path = tmp_path / "ck.safetensors"
    train(model, [bar_pair(0)], _cfg(steps=4, checkpoint_every=2), checkpoint=path)
    assert json.loads(path.with_suffix(".json").read_text())["step"] == 4
    before = path.read_bytes()

    def broken_replace(src, dst):
        raise OSError("disk full")

    monkeypatch.setattr(os, "replace", broken_replace)
    with pytest.raises(OSError):
        save_checkpoint(build_tvnet(**TINY), path, {"step": 99})
    assert path.read_bytes() == before  # the old checkpoint is untouched
    saved = load_file(str(path))
    assert {k.removeprefix("model.") for k in saved if k.startswith("model.")} == \
        set(model.state_dict())
    assert any(k.startswith("optim.") for k in saved) and "rng.torch" in saved  # resumable


def test_cancel_stops_between_steps():
    token = CancelToken()
    seen = []

    def progress(fraction, message):
        seen.append(fraction)
        if len(seen) == 2:
            token.cancel()

    with pytest.raises(Cancelled):
        train(build_tvnet(**TINY), [bar_pair(0)], _cfg(steps=50), progress=progress, cancel=token)
    assert len(seen) == 2


def test_bad_settings_are_refused():
    with pytest.raises(InputError):
        train(build_tvnet(**TINY), [bar_pair(0)], _cfg(steps=0))
    with pytest.raises(InputError):
        LabelledPatchSampler([], (4, 16, 16))


def test_train_command_writes_weights_and_card(tmp_path, monkeypatch):
    tifffile = pytest.importorskip("tifffile")
    from napari_vessel.commands import train as command

    for sub in ("images", "labels"):
        (tmp_path / "data" / sub).mkdir(parents=True)
    for i in range(2):
        pair = bar_pair(i)
        tifffile.imwrite(tmp_path / "data" / "images" / f"v{i}.tif",
                         (pair.image * 100 + 50).astype(np.uint8))
        tifffile.imwrite(tmp_path / "data" / "labels" / f"v{i}.tif", pair.labels.astype(np.uint8))
    monkeypatch.setattr(train_module, "TrainConfig",
                        lambda **kw: _cfg(**{k: v for k, v in kw.items() if k != "steps"}))
    import argparse

    parser = argparse.ArgumentParser()
    command.add_arguments(parser)
    args = parser.parse_args(["--data", str(tmp_path / "data"), "--out", str(tmp_path / "out"),
                              "--steps", "3", "--widths", "2,4,4,4", "--leave-out", "v1",
                              "--quiet", "--name", "tiny"])
    assert command.run(args) == 0
    card = json.loads((tmp_path / "out" / "tiny.json").read_text())
    assert card["training"]["command"].startswith("napari-vessel train")
    assert card["trained_on"] == ["v0"] and "v1" in card["scores"]
    assert (tmp_path / "out" / "tiny.safetensors").stat().st_size < 2_000_000
    assert not (tmp_path / "out" / "tiny.checkpoint.safetensors").exists()


def test_train_command_depth_correction_and_plain_bce_go_into_the_card(tmp_path, monkeypatch):
    tifffile = pytest.importorskip("tifffile")
    import argparse

    from napari_vessel.commands import train as command
    from napari_vessel.preprocess import Pipeline

    for sub in ("images", "labels"):
        (tmp_path / "data" / sub).mkdir(parents=True)
    pair = bar_pair(0, shape=(8, 32, 32))
    fading = pair.image * np.linspace(1.0, 0.3, 8)[:, None, None]  # dimmer with depth
    tifffile.imwrite(tmp_path / "data" / "images" / "v0.tif", (fading * 200 + 20).astype(np.uint8))
    tifffile.imwrite(tmp_path / "data" / "labels" / "v0.tif", pair.labels.astype(np.uint8))
    seen = {}

    def config(**kw):
        seen.update(kw)
        return _cfg(**{k: v for k, v in kw.items() if k != "steps"})

    monkeypatch.setattr(train_module, "TrainConfig", config)
    parser = argparse.ArgumentParser()
    command.add_arguments(parser)
    args = parser.parse_args(["--data", str(tmp_path / "data"), "--out", str(tmp_path / "out"),
                              "--steps", "2", "--widths", "2,4,4,4", "--depth-correct",
                              "--plain-bce", "--quiet", "--name", "deep"])
    assert command.run(args) == 0
    card = json.loads((tmp_path / "out" / "deep.json").read_text())
    steps = [step["name"] for step in card["preprocessing"]["steps"]]
    assert steps == ["median_subtract", "depth_correct", "normalize"]
    assert seen["balance"] is False and card["training"]["config"]["balance"] is False
    assert card["training"]["loss"].startswith("plain BCE")
    pipeline = Pipeline.from_dict(card["preprocessing"])  # what segmenting will apply
    assert pipeline.to_dict() == card["preprocessing"]
    raw = tifffile.imread(tmp_path / "data" / "images" / "v0.tif")
    again = np.asarray(pipeline.apply(raw.astype(np.float32)))
    trained_on = load_pairs(tmp_path / "data", pipeline=pipeline)[0].image
    np.testing.assert_allclose(again, trained_on, atol=1e-6)
    # the correction evens out the fading: the last slice's vessels are as bright as the first's
    first, last = again[0][pair.labels[0]].mean(), again[-1][pair.labels[-1]].mean()
    plain = normalise(raw)
    assert abs(first - last) < 0.5 * abs(plain[0][pair.labels[0]].mean()
                                         - plain[-1][pair.labels[-1]].mean())

    args = parser.parse_args(["--model", "umis", "--data", str(tmp_path / "data"),
                              "--depth-correct"])
    with pytest.raises(InputError, match="supervised options"):
        command.run(args)
    args = parser.parse_args(["--model", "vcnet", "--data", str(tmp_path / "data"),
                              "--plain-bce"])
    with pytest.raises(InputError, match="paper's own loss"):
        command.run(args)


def test_z_subsampling_keeps_the_patch_shape():
    pair = bar_pair(shape=(12, 20, 20))
    sampler = LabelledPatchSampler([pair], (4, 16, 16), z_subsample=1.0)
    image, labels = sampler.sample(np.random.default_rng(1))
    assert image.shape == labels.shape == (4, 16, 16)
