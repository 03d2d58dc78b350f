"""Tests of ``napari-vessel finetune`` (run through ``cli.main`` once the command is listed)."""

from __future__ import annotations

import json

import numpy as np
import pytest
import torch

from napari_vessel.io.stacks import load_volume, save_volume
from napari_vessel.manifest import read_manifest
from napari_vessel.models import registry
from napari_vessel.models.tvnet import build_tvnet
from napari_vessel.models.weights import save_weights

TV_CFG = {"widths": [2, 4], "strides": [[1, 2, 2]], "convs": [1, 1], "norm": "batch"}
FAST = ["--steps", "2", "--patch-size", "8", "32", "32", "--threads", "1", "--quiet"]


@pytest.fixture(scope="module")
def tiny_tvnet(tmp_path_factory, fit_to_bars):
    torch.manual_seed(0)
    weights = save_weights(fit_to_bars(build_tvnet(**TV_CFG)), tmp_path_factory.mktemp("w") / "cli-tiny",
                           {"architecture": "tvnet", "config": TV_CFG, "kind": "supervised",
                            "threshold": 0.5})
    spec = registry.register(registry.ModelSpec(
        name="cli-tiny", kind="supervised", description="tiny test network", builder=build_tvnet,
        config=TV_CFG, weights=weights, patch_size_zyx=(8, 32, 32), input_multiple_zyx=(1, 2, 2),
        architecture="tvnet", output="logits"), replace_existing=True)
    yield spec
    registry.unregister(spec.name)


@pytest.fixture()
def files(tmp_path, monkeypatch):
    monkeypatch.setenv("NAPARI_VESSEL_MODELS", str(tmp_path / "models"))
    rng = np.random.default_rng(0)
    labels = np.zeros((8, 32, 32), np.uint8)
    labels[:, 10:13, :] = 1
    image = np.clip(labels * 180 + 30 + rng.normal(0, 12, labels.shape), 0, 255).astype(np.uint8)
    mask = np.zeros_like(labels)
    mask[3] = 1
    paths = {"image": tmp_path / "stack.tif", "labels": tmp_path / "fixed.tif",
             "mask": tmp_path / "mask.tif"}
    save_volume(paths["image"], image, (2, 1, 1))
    save_volume(paths["labels"], labels, (2, 1, 1), kind="labels")
    save_volume(paths["mask"], mask, (2, 1, 1), kind="labels")
    return {k: str(v) for k, v in paths.items()} | {"models": tmp_path / "models",
                                                    "tmp": tmp_path}


def call(argv: list[str]) -> int:
    """``napari-vessel finetune ARGV`` through the CLI."""
    from napari_vessel import cli

    return cli.main(["finetune", *argv])


def test_unsupervised_run_saves_model_manifest_and_segmentation(tiny_tvnet, files, capsys):
    out = files["tmp"] / "seg"
    code = call([files["image"], "--model", "cli-tiny", "-o", "cli-new", "--segment", str(out),
                 "--method", "selftrain", *FAST])
    assert code == 0, capsys.readouterr().err
    models = files["models"]
    card = json.loads((models / "cli-new.json").read_text())
    assert card["parent"] == "cli-tiny" and card["finetuned_on"]["source"] == files["image"]
    assert card["finetuned_on"]["shape"] == [8, 32, 32] and card["training"]["steps"] == 2
    manifest = json.loads((models / "cli-new.manifest.json").read_text())
    assert manifest["command"].startswith("napari-vessel finetune")
    assert len(manifest["losses"]) == 2
    assert "cli-new" in [s.name for s in registry.list_models()]
    labels = load_volume(out / "stack.cli-new.labels.tif").to_numpy()
    assert labels.shape == (8, 32, 32) and set(np.unique(labels)) <= {0, 1}
    seg_manifest = read_manifest(out / "stack.cli-new.manifest.json")
    assert seg_manifest.model.name == "cli-new"
    assert "saved model 'cli-new'" in capsys.readouterr().out


def test_supervised_run_with_edited_mask(tiny_tvnet, files):
    code = call([files["image"], "--model", "cli-tiny", "-o", "cli-fixed", "--labels",
                 files["labels"], "--edited-mask", files["mask"], *FAST])
    assert code == 0
    card = json.loads((files["models"] / "cli-fixed.json").read_text())
    assert card["kind"] == "supervised" and card["training"]["mode"] == "supervised"
    manifest = json.loads((files["models"] / "cli-fixed.manifest.json").read_text())
    assert manifest["edited_voxels"] == 32 * 32


@pytest.mark.parametrize("argv, message", [
    (["-o", "cli-tiny"], "already exists"),
    (["-o", "x", "--edited-mask", "m.tif"], "needs --labels"),
    (["-o", "x", "--checked-slices", "2"], "needs --labels"),
])
def test_bad_arguments_fail_before_training(tiny_tvnet, files, capsys, argv, message):
    assert call([files["image"], "--model", "cli-tiny", *argv, *FAST]) == 2
    assert message in capsys.readouterr().err
    assert not files["models"].exists() or not list(files["models"].glob("*"))


def test_classical_model_is_refused(files, capsys):
    assert call([files["image"], "--model", "frangi", "-o", "x", *FAST]) == 2
    assert "can be fine-tuned" in capsys.readouterr().err


def test_a_confident_model_is_not_saved_again(tiny_tvnet, files, capsys):
    code = call([files["image"], "--model", "cli-tiny", "-o", "cli-same", "--min-uncertainty",
                 "1", *FAST])
    out = capsys.readouterr().out
    assert code == 0 and "confident" in out and "no new model was saved" in out
    assert not (files["models"] / "cli-same.safetensors").exists()
    assert call([files["image"], "--model", "cli-tiny", "-o", "cli-bad", "--min-uncertainty",
                 "2", *FAST]) == 2
    assert "bits" in capsys.readouterr().err
