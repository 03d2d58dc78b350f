"""Training the model zoo: every trainable registry model through ``train()`` and the CLI."""

from __future__ import annotations

import json

import numpy as np
import pytest
import torch
import torch.nn.functional as F

from napari_vessel.cli import main
from napari_vessel.errors import InputError
from napari_vessel.inference import run as inference
from napari_vessel.models import registry
from napari_vessel.models.tvnet import build_tvnet
from napari_vessel.training import train as train_module
from napari_vessel.training.data import Pair, normalise
from napari_vessel.training.train import TrainConfig, train
from napari_vessel.training.zoo_train import trainable_names, zoo_training_spec

#: The CPU variants of the zoo (the -full ones share their code and are checked by name only).
ZOO = ("vcnet", "dbac", "ddmac", "cascade-ensemble", "deepvess", "vesselnn")
SHAPE = (8, 32, 32)


@pytest.fixture(autouse=True)
def _one_thread(monkeypatch):
    """Tiny tensors: one thread, also in the inference engine (it would use every core)."""
    monkeypatch.setattr(inference, "cpu_count", lambda: 1)
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)


def _phantom(seed: int) -> tuple[np.ndarray, np.ndarray]:
    from napari_vessel.data.phantom import make_phantom

    ph = make_phantom(SHAPE, seed=seed, n_trees=1, pial_shadow=False)
    return ph.image, ph.labels > 0


@pytest.fixture(scope="module")
def pairs() -> list[Pair]:
    out = []
    for i in range(2):
        image, labels = _phantom(i)
        out.append(Pair(f"v{i}", normalise(image), labels))
    return out


@pytest.fixture(scope="module")
def data_dir(tmp_path_factory) -> str:
    import tifffile

    root = tmp_path_factory.mktemp("zoo_data")
    for sub in ("images", "labels"):
        (root / sub).mkdir()
    for i in range(2):
        image, labels = _phantom(i)
        tifffile.imwrite(root / "images" / f"v{i}.tif", image)
        tifffile.imwrite(root / "labels" / f"v{i}.tif", labels.astype(np.uint8))
    return str(root)


def _tiny_cfg(spec) -> TrainConfig:
    patch = (2, 16, 16) if spec.dims == 2 else (8, 16, 16)
    return TrainConfig(steps=2, batch_size=1, patch_size=patch, checkpoint_every=0)


@pytest.mark.parametrize("name", ZOO)
def test_every_zoo_model_trains_with_train(name, pairs):
    spec = registry.get(name)
    torch.manual_seed(0)
    model = spec.builder(**spec.config)
    before = {k: v.clone() for k, v in model.state_dict().items()}
    result = train(model, pairs, _tiny_cfg(spec), spec=spec)
    assert result.steps == 2 and all(np.isfinite(result.losses))
    assert 0.0 < result.threshold < 1.0
    assert set(result.probs) == {"v0", "v1"} and result.probs["v0"].shape == SHAPE
    assert 0.0 <= result.probs["v0"].min() and result.probs["v0"].max() <= 1.0
    changed = [k for k, v in model.state_dict().items() if not torch.equal(v, before[k])]
    assert changed  # the optimiser moved the weights


@pytest.mark.parametrize("name", ZOO)
def test_every_zoo_model_trains_with_the_cli_and_reloads(name, data_dir, tmp_path, monkeypatch,
                                                         capsys):
    spec = registry.get(name)
    patch = ["2", "16", "16"] if spec.dims == 2 else ["8", "16", "16"]
    assert main(["train", "--model", name, "--data", data_dir, "--out", str(tmp_path),
                 "--steps", "2", "--batch-size", "1", "--patch-size", *patch, "--quiet"]) == 0
    card = json.loads((tmp_path / f"{name}.json").read_text())
    assert card["architecture"] == spec.architecture and card["config"] == spec.config
    assert card["training"]["steps"] == 2 and 0 < card["threshold"] < 1
    assert (tmp_path / f"{name}.safetensors").stat().st_size < 5_000_000
    post = card.get("postprocessing") or {}
    if post.get("method") == "hysteresis":  # levels fitted on the training volumes
        assert post["low"] == card["threshold"] and post["low"] <= post["high"] <= 0.95
        assert "training volumes" in post["chosen_on"]
        assert 0 <= card["training"]["train_f1_postprocessing"] <= 1
    # the card loads back through the registry: as a user model named like the architecture
    # would clash with the built-in, so copy it under another name
    user = tmp_path / "user"
    user.mkdir()
    card["name"] = f"my-{name}"
    card["weights_file"] = f"my-{name}.safetensors"
    (user / f"my-{name}.json").write_text(json.dumps(card))
    (user / f"my-{name}.safetensors").write_bytes((tmp_path / f"{name}.safetensors").read_bytes())
    monkeypatch.setenv(registry.MODELS_ENV, str(user))
    model, loaded = registry.load_model(f"my-{name}", "cpu")
    assert loaded.dims == spec.dims and loaded.card.threshold == card["threshold"]
    prob = inference.predict(f"my-{name}", np.random.default_rng(0).random(SHAPE, np.float32),
                             device="cpu")
    assert prob.shape == SHAPE and 0.0 <= prob.min() and prob.max() <= 1.0


def test_the_ensemble_composes_from_trained_cascades(data_dir, tmp_path, capsys):
    for name in ("dbac", "ddmac"):
        assert main(["train", "--model", name, "--data", data_dir, "--out", str(tmp_path),
                     "--steps", "1", "--batch-size", "1", "--patch-size", "2", "16", "16",
                     "--quiet"]) == 0
    assert main(["train", "--model", "cascade-ensemble", "--data", data_dir, "--out",
                 str(tmp_path), "--members", str(tmp_path / "dbac"), str(tmp_path / "ddmac"),
                 "--quiet"]) == 0
    card = json.loads((tmp_path / "cascade-ensemble.json").read_text())
    assert set(card["training"]["composed_from"]) == {"dbac", "ddmac"}
    ensemble = registry.get("cascade-ensemble")
    from napari_vessel.models.weights import load_weights

    state, _ = load_weights(tmp_path / "cascade-ensemble", model=ensemble.builder(**ensemble.config))
    dbac_state, _ = load_weights(tmp_path / "dbac")
    assert all(torch.equal(state[f"dbac.{k}"], v) for k, v in dbac_state.items())
    assert main(["train", "--model", "cascade-ensemble", "--data", data_dir, "--out",
                 str(tmp_path), "--members", str(tmp_path / "ddmac"), str(tmp_path / "dbac"),
                 "--quiet", "--overwrite"]) == 2
    assert "DBAC first" in capsys.readouterr().err


def test_untrainable_and_unknown_names_are_refused(capsys):
    names = trainable_names()
    assert {"tvnet", *ZOO, "vcnet-full", "dbac-full", "deepvess-full"} <= set(names)
    assert "umis" not in names and "frangi" not in names
    with pytest.raises(InputError, match="trainable models: .*vcnet"):
        zoo_training_spec("vcnett")
    with pytest.raises(InputError, match="classical.*trainable models"):
        zoo_training_spec("frangi")
    with pytest.raises(InputError, match="without labels.*--model umis"):
        zoo_training_spec("umis")
    for argv, message in ((["--model", "nope"], "trainable"),
                          (["--model", "vcnet", "--widths", "2,2,2,2"], "TV-Net options")):
        assert main(["train", *argv, "--data", "nowhere"]) == 2
        assert message in capsys.readouterr().err


def test_the_recipe_loss_equals_the_former_private_losses():
    """train.py's loss (now built on training.losses) matches the formulas it used to copy."""
    def old_bce(logits, target):
        beta = 1.0 - target.mean().clamp(1e-3, 1 - 1e-3)
        weight = beta * target + (1 - beta) * (1 - target)
        return 2.0 * F.binary_cross_entropy_with_logits(logits, target, weight=weight)

    def old_tv(prob):
        smooth, diff = torch.tensor([1.0, 2.0, 1.0]), torch.tensor([-1.0, 0.0, 1.0])
        kz = diff[:, None, None] * smooth[None, :, None] * smooth[None, None, :]
        ky = smooth[:, None, None] * diff[None, :, None] * smooth[None, None, :]
        kx = smooth[:, None, None] * smooth[None, :, None] * diff[None, None, :]
        kernels = torch.stack([kz, ky, kx])[:, None] / 16.0
        grads = F.conv3d(F.pad(prob, (1,) * 6, mode="replicate"), kernels)
        return grads.abs().sum(dim=1).mean()

    def old_erode(x):
        a = -F.max_pool3d(-x, (3, 1, 1), 1, (1, 0, 0))
        b = -F.max_pool3d(-x, (1, 3, 1), 1, (0, 1, 0))
        c = -F.max_pool3d(-x, (1, 1, 3), 1, (0, 0, 1))
        return torch.minimum(torch.minimum(a, b), c)

    def old_skeleton(x, iterations=3):
        skel = F.relu(x - F.max_pool3d(old_erode(x), 3, 1, 1))
        for _ in range(iterations):
            x = old_erode(x)
            delta = F.relu(x - F.max_pool3d(old_erode(x), 3, 1, 1))
            skel = skel + F.relu(delta - skel * delta)
        return skel

    def old_cldice(prob, target):
        skel_p, skel_t = old_skeleton(prob), old_skeleton(target)
        tprec = ((skel_p * target).sum() + 1) / (skel_p.sum() + 1)
        tsens = ((skel_t * prob).sum() + 1) / (skel_t.sum() + 1)
        return 1 - 2 * tprec * tsens / (tprec + tsens)

    torch.manual_seed(0)
    logits = torch.randn(2, 1, 6, 12, 12) * 3
    target = (torch.rand(2, 1, 6, 12, 12) > 0.8).float()
    prob = torch.sigmoid(logits)
    cfg = TrainConfig(tv_weight=0.05, dice_weight=0.5, cldice_weight=0.3)
    dice = 1 - (2 * (prob * target).sum() + 1) / (prob.sum() + target.sum() + 1)
    expected = (old_bce(logits, target) + 0.05 * old_tv(prob) + 0.5 * dice
                + 0.3 * old_cldice(prob, target))
    got = train_module._loss(logits, target, cfg, build_tvnet())
    assert torch.allclose(got, expected, rtol=1e-5, atol=1e-6)


def test_the_threshold_can_be_chosen_on_central_crops(pairs):
    spec = registry.get("deepvess")
    cfg = TrainConfig(steps=1, batch_size=1, patch_size=(4, 16, 16), checkpoint_every=0,
                      threshold_crop=16)
    result = train(spec.builder(**spec.config), pairs, cfg, spec=spec)
    assert result.probs["v0"].shape == (SHAPE[0], 16, 16)


@pytest.mark.parametrize("name", ZOO)
def test_shipped_zoo_weights_load_and_predict(name):
    spec = registry.get(name)
    if not spec.has_weights:
        pytest.skip(f"no {name} weights are shipped")
    assert spec.weights.stat().st_size < 5_000_000
    assert 0 < spec.card.threshold < 1 and spec.card.scores["mean_f1"] > 0
    model, loaded = registry.load_model(name, "cpu")  # checks the SHA-256 and every tensor
    assert loaded.card.architecture == spec.architecture and not model.training
    prob = inference.predict(name, np.random.default_rng(0).random(SHAPE, np.float32),
                             device="cpu")
    assert prob.shape == SHAPE
