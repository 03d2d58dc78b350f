"""Tests of fine-tuning on the open volume (unsupervised and from corrections) and of saving it."""

from __future__ import annotations

import errno
import json
import os
import threading

import numpy as np
import pytest
import torch
from torch import nn

from napari_vessel.errors import InputError
from napari_vessel.models import registry
from napari_vessel.models.tvnet import build_tvnet
from napari_vessel.models.umis import build_umis
from napari_vessel.models.weights import SHIPPED_DIR, file_sha256, save_weights
from napari_vessel.progress import CancelToken
from napari_vessel.training import finetune as ft
from napari_vessel.training.finetune import (
    FinetuneConfig,
    check_new_name,
    edited_mask_from,
    finetune,
    save_finetuned,
)
from napari_vessel.training.finetune_loss import make_loss

UMIS_CFG = {"width": 4, "blocks": [1, 1], "strides": [[1, 2, 2], [2, 2, 2]], "norm": "batch"}
TV_CFG = {"widths": [2, 4], "strides": [[1, 2, 2]], "convs": [1, 1], "norm": "batch"}


@pytest.fixture(scope="module")
def tiny_models(tmp_path_factory):
    """Two tiny networks with weights: a UMIS (probabilities, decoder) and a TV-Net (logits)."""
    folder = tmp_path_factory.mktemp("weights")
    torch.manual_seed(0)
    specs = []
    for name, builder, config, output, multiple in (
            ("ft-tiny-umis", build_umis, UMIS_CFG, "probability", (2, 4, 4)),
            ("ft-tiny-tvnet", build_tvnet, TV_CFG, "logits", (1, 2, 2))):
        arch = "umis" if builder is build_umis else "tvnet"
        weights = save_weights(builder(**config), folder / name,
                               {"architecture": arch, "config": config, "kind": "supervised"})
        specs.append(registry.register(registry.ModelSpec(
            name=name, kind="supervised", description="tiny test network", builder=builder,
            config=config, weights=weights, patch_size_zyx=(8, 32, 32),
            input_multiple_zyx=multiple, architecture=arch, output=output),
            replace_existing=True))
    yield {s.name: s for s in specs}
    for spec in specs:
        registry.unregister(spec.name)


@pytest.fixture(autouse=True)
def user_models(tmp_path, monkeypatch):
    folder = tmp_path / "user-models"
    monkeypatch.setenv("NAPARI_VESSEL_MODELS", str(folder))
    return folder


def bars(seed: int = 0, shape=(8, 32, 32)) -> tuple[np.ndarray, np.ndarray]:
    """An easy volume: bright bars on dim noise (uint8), and the bars as labels."""
    rng = np.random.default_rng(seed)
    labels = np.zeros(shape, bool)
    for _ in range(3):
        y = rng.integers(3, shape[1] - 3)
        labels[:, y - 1:y + 2, :] = True
    image = np.clip(labels * 180 + 30 + rng.normal(0, 12, shape), 0, 255).astype(np.uint8)
    return image, labels


def cfg(**changes) -> FinetuneConfig:
    base = dict(minutes=None, max_steps=4, patch_size_zyx=(8, 32, 32), batch_size=2, lr=1e-2,
                threads=1, preview=False, probe_patches=2, method="umis", max_drift=None)
    return FinetuneConfig(**{**base, **changes})


def same_state(a: dict, b: dict) -> bool:
    return a.keys() == b.keys() and all(torch.equal(a[k].cpu(), b[k].cpu()) for k in a)


# -- configuration ------------------------------------------------------------------------------

def test_config_round_trip_and_checks():
    config = FinetuneConfig(mode="supervised", max_steps=7, cldice_weight=0.5)
    again = FinetuneConfig.from_dict(json.loads(json.dumps(config.to_dict())))
    assert again == config and again.learning_rate == 3e-4
    assert config.trained_parameters == "all" and FinetuneConfig().trained_parameters == "norm"
    assert FinetuneConfig().learning_rate == 1e-3 and FinetuneConfig().minutes == 2.0
    assert FinetuneConfig(method="umis").learning_rate == 1e-4  # the paper's
    assert FinetuneConfig().min_uncertainty == 0 and FinetuneConfig().max_drift == 0.25
    for bad in ({"mode": "semi"}, {"minutes": None}, {"minutes": -1}, {"batch_size": 0},
                {"lambdas": {"xyz": 1}}, {"max_steps": 0}, {"train_only": "head"},
                {"method": "magic"}, {"max_drift": 0}, {"ema": 1.0}, {"anchor": -1},
                {"guard_every": 0}):
        with pytest.raises(InputError):
            FinetuneConfig(**bad)
    with pytest.raises(InputError, match="unknown"):
        FinetuneConfig.from_dict({"epochs": 3})


# -- unsupervised -------------------------------------------------------------------------------

def test_unsupervised_loss_decreases_and_result_is_complete(tiny_models):
    image, _ = bars()
    result = finetune("ft-tiny-umis", image, config=cfg(max_steps=30, keep_parent=False))
    assert result.steps == 30 and not result.stopped_early and not result.kept_parent
    assert np.mean(result.losses[-5:]) < np.mean(result.losses[:5])
    assert not result.model.training
    assert same_state(result.model.state_dict(), result.state_dict)
    assert result.best_step == int(np.argmin(result.smoothed)) + 1
    assert result.volume["shape"] == [8, 32, 32] and len(result.volume["sha256"]) == 64
    prob, labels = ft.segment_result(result, image)
    assert prob.shape == labels.shape == image.shape and labels.max() <= 1


def test_network_without_decoder_drops_reconstruction(tiny_models):
    image, _ = bars()
    seen = []
    finetune("ft-tiny-tvnet", image, config=cfg(max_steps=1, preview_every_s=1e-3),
             on_update=seen.append)
    assert "rec" not in seen[-1].terms and {"ac", "rank", "tight"} <= set(seen[-1].terms)
    finetune("ft-tiny-umis", image, config=cfg(max_steps=1, preview_every_s=1e-3),
             on_update=seen.append)
    assert "rec" in seen[-1].terms


def test_step_budget_and_time_budget(tiny_models, monkeypatch):
    image, _ = bars()
    assert finetune("ft-tiny-tvnet", image, config=cfg(max_steps=3)).steps == 3
    clock = {"now": 0.0}

    def fake_clock() -> float:  # every look at the clock costs one second
        clock["now"] += 1.0
        return clock["now"]

    monkeypatch.setattr(ft.time, "monotonic", fake_clock)
    result = finetune("ft-tiny-tvnet", image, config=cfg(max_steps=None, minutes=0.5))
    assert 1 <= result.steps < 30 and result.seconds <= 30 + 5


def test_live_updates_with_preview(tiny_models):
    image, _ = bars(shape=(8, 48, 40))
    seen = []
    finetune("ft-tiny-umis", image, config=cfg(max_steps=3, preview=True, preview_size=16,
                                               preview_every_s=1e-3),
             on_update=seen.append, preview_z=lambda: 5)
    assert seen[0].step == 0 and seen[-1].done and seen[-1].step == 3
    assert len(seen[-1].losses) == 3 and len(seen[-1].smoothed) == 3
    assert seen[-1].preview.shape == (16, 16) and seen[-1].preview_z == 5
    assert seen[-1].preview_origin_yx == (16, 12)
    assert 0 <= seen[-1].preview.min() and seen[-1].preview.max() <= 1


def test_unsupervised_adapts_only_norm_layers_by_default(tiny_models):
    image, _ = bars()
    parent, _ = registry.load_model("ft-tiny-umis", "cpu")
    before = {k: v.clone() for k, v in parent.state_dict().items()}
    result = finetune("ft-tiny-umis", image, config=cfg(max_steps=3, keep_parent=False))
    norms = {n for n, m in result.model.named_modules() if isinstance(m, nn.BatchNorm3d)}
    changed = {k for k, v in result.state_dict.items() if not torch.equal(v, before[k])}
    assert changed and all(k.rsplit(".", 1)[0] in norms for k in changed)
    assert not any(k.endswith(("running_mean", "running_var")) for k in changed)  # frozen
    result = finetune("ft-tiny-umis", image, config=cfg(max_steps=3, keep_parent=False,
                                                        train_only="all", freeze_norm=False))
    changed = {k for k, v in result.state_dict.items() if not torch.equal(v, before[k])}
    assert any(k.endswith("conv1.weight") for k in changed)
    assert any(k.endswith("running_mean") for k in changed)


def test_volume_smaller_than_a_patch(tiny_models):
    image = bars(shape=(3, 10, 10))[0]
    seen = []
    result = finetune("ft-tiny-umis", image, config=cfg(max_steps=2, preview=True,
                                                        preview_every_s=1e-3),
                      on_update=seen.append)
    assert result.steps == 2 and np.isfinite(result.losses).all()
    assert seen[-1].preview.shape == (10, 10)


# -- cancel and the best state ------------------------------------------------------------------

def test_cancel_returns_best_state_so_far(tiny_models):
    image, _ = bars()
    token = CancelToken()

    def progress(fraction: float, message: str) -> None:
        if message.startswith("step 5,"):
            token.cancel()

    result = finetune("ft-tiny-umis", image, config=cfg(max_steps=50, keep_parent=False),
                      progress=progress, cancel=token)
    assert result.stopped_early and result.steps == 5 and "stopped by the user" in result.message
    assert result.best_step == int(np.argmin(result.smoothed)) + 1
    assert same_state(result.model.state_dict(), result.state_dict)
    parent, _ = registry.load_model("ft-tiny-umis", "cpu")
    assert not same_state(parent.state_dict(), result.state_dict)


def test_cancel_before_first_step_keeps_parent(tiny_models):
    image, _ = bars()
    token = CancelToken()
    token.cancel()
    result = finetune("ft-tiny-umis", image, config=cfg(), cancel=token)
    assert result.stopped_early and result.kept_parent and result.steps == 0
    parent, _ = registry.load_model("ft-tiny-umis", "cpu")
    assert same_state(parent.state_dict(), result.state_dict)
    with pytest.raises(InputError, match="before its first step"):
        save_finetuned(result, "never-saved")


def test_safeguard_keeps_parent_when_probe_loss_does_not_improve(tiny_models, monkeypatch):
    image, _ = bars()
    values = iter([1.0, 2.0])  # parent, then fine-tuned: worse
    from napari_vessel.training import finetune_loop

    monkeypatch.setattr(finetune_loop, "probe_loss", lambda loss, model, probes: next(values))
    result = finetune("ft-tiny-tvnet", image, config=cfg(max_steps=3))
    assert result.kept_parent and result.best_step == 0 and "parent" in result.message
    parent, _ = registry.load_model("ft-tiny-tvnet", "cpu")
    assert same_state(parent.state_dict(), result.model.state_dict())


# -- supervised ---------------------------------------------------------------------------------

class FixedLogits(nn.Module):
    """A 'network' whose output is a learnable tensor: gradients land on single voxels."""

    def __init__(self, shape) -> None:
        super().__init__()
        self.logits = nn.Parameter(torch.randn(shape))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.logits + 0 * x


@pytest.mark.parametrize("cldice", [0.0, 0.5])
def test_supervised_loss_sees_only_edited_voxels(tiny_models, cldice):
    torch.manual_seed(0)
    shape = (1, 1, 6, 16, 16)
    model, x = FixedLogits(shape), torch.rand(shape)
    mask = torch.zeros(shape)
    mask[..., 2:4, 5:9, 5:9] = 1
    target = (torch.rand(shape) > 0.5).float()
    other = torch.where(mask > 0, target, 1 - target)  # differs everywhere outside the mask
    loss = make_loss(cfg(mode="supervised", cldice_weight=cldice), tiny_models["ft-tiny-tvnet"])
    a, _ = loss(model, x, torch.ones(shape), target, mask)
    b, _ = loss(model, x, torch.ones(shape), other, mask)
    assert float(a.detach()) == pytest.approx(float(b.detach()), abs=1e-7)
    if cldice == 0:
        a.backward()
        near = torch.nn.functional.max_pool3d(mask, 3, 1, 1) > 0  # TV reaches one voxel out
        assert torch.count_nonzero(model.logits.grad[~near]) == 0
        assert torch.count_nonzero(model.logits.grad[mask > 0]) > 0


def test_edited_mask_from_differences_and_checked_slices():
    original = np.zeros((3, 4, 4), np.uint8)
    labels = original.copy()
    labels[1, 2, 2] = 1
    mask = edited_mask_from(labels, original, checked_slices=[-1])
    assert mask[1, 2, 2] and mask[2].all() and mask.sum() == 17
    with pytest.raises(InputError, match="outside"):
        edited_mask_from(labels, original, checked_slices=[3])


def test_supervised_default_mask_is_what_differs_from_the_prediction(tiny_models):
    from napari_vessel.inference.run import segment

    image, _ = bars()
    _, own, _ = segment(image, "ft-tiny-tvnet", threshold=0.5)
    with pytest.raises(InputError, match="no edits"):
        finetune("ft-tiny-tvnet", image, labels=own, config=cfg(mode="supervised"))
    corrected = own.copy()
    corrected[3, 10:12, 4:9] ^= 1
    result = finetune("ft-tiny-tvnet", image, labels=corrected,
                      config=cfg(mode="supervised", max_steps=3))
    assert result.edited_voxels == 10 and result.steps == 3
    result = finetune("ft-tiny-tvnet", image, labels=corrected, checked_slices=[0],
                      config=cfg(mode="supervised", max_steps=1))
    assert result.edited_voxels == 10 + 32 * 32


def test_supervised_learns_the_edits(tiny_models):
    image, labels = bars()
    mask = np.zeros(labels.shape, bool)
    mask[2:6] = True
    result = finetune("ft-tiny-umis", image, labels=labels, edited_mask=mask,
                      config=cfg(mode="supervised", max_steps=25, keep_parent=False))
    assert np.mean(result.losses[-5:]) < np.mean(result.losses[:5])
    assert result.edited_voxels == int(mask.sum())


# -- bad input ----------------------------------------------------------------------------------

def test_bad_inputs(tiny_models):
    image, labels = bars()
    with pytest.raises(InputError, match="classical.*can be fine-tuned: .*ft-tiny-umis"):
        finetune("frangi", image, config=cfg())
    with pytest.raises(InputError, match="unknown model"):
        finetune("no-such-model", image, config=cfg())
    for volume, match in ((np.zeros((8, 32, 32), np.uint8), "all zero"),
                          (np.full((8, 32, 32), 7.0), "constant"),
                          (np.full((8, 32, 32), np.nan), "NaN"),
                          (np.zeros((32, 32)), "2D")):
        with pytest.raises(InputError, match=match):
            finetune("ft-tiny-umis", volume, config=cfg())
    sup = cfg(mode="supervised")
    with pytest.raises(InputError, match="shape"):
        finetune("ft-tiny-umis", image, labels=labels[:4], config=sup)
    with pytest.raises(InputError, match="edited mask have shape"):
        finetune("ft-tiny-umis", image, labels=labels, edited_mask=labels[:, :8], config=sup)
    with pytest.raises(InputError, match="no edits"):
        finetune("ft-tiny-umis", image, labels=labels, edited_mask=np.zeros_like(labels),
                 config=sup)
    with pytest.raises(InputError, match="needs the corrected labels"):
        finetune("ft-tiny-umis", image, config=sup)
    with pytest.raises(InputError, match="mode is unsupervised"):
        finetune("ft-tiny-umis", image, labels=labels, config=cfg())


def test_untrained_network_cannot_be_fine_tuned(tiny_models, monkeypatch):
    spec = registry.get("ft-tiny-umis")
    registry.register(registry.ModelSpec(
        name="ft-untrained", kind="unsupervised", description="no weights", builder=build_umis,
        config=UMIS_CFG, weights=None, architecture="umis"), replace_existing=True)
    try:
        with pytest.raises(InputError, match="no trained weights.*ft-tiny-umis"):
            finetune("ft-untrained", bars()[0], config=cfg())
    finally:
        registry.unregister("ft-untrained")
    assert spec.name in ft.trainable_models()


def test_two_fine_tunes_at_once(tiny_models):
    image, _ = bars()
    started, release = threading.Event(), threading.Event()

    def progress(fraction: float, message: str) -> None:
        started.set()
        release.wait(20)

    worker = threading.Thread(target=lambda: finetune(
        "ft-tiny-tvnet", image, config=cfg(max_steps=1), progress=progress))
    worker.start()
    try:
        assert started.wait(20) and ft.is_running()
        with pytest.raises(InputError, match="already running"):
            finetune("ft-tiny-tvnet", image, config=cfg(max_steps=1))
    finally:
        release.set()
        worker.join(30)
    assert not ft.is_running()


# -- saving -------------------------------------------------------------------------------------

def _shipped_files() -> dict:
    return {p.name: file_sha256(p) for p in SHIPPED_DIR.glob("*") if p.is_file()}


def test_saved_model_appears_in_the_registry_and_loads(tiny_models, user_models):
    image, _ = bars()
    shipped = _shipped_files()
    result = finetune("ft-tiny-umis", image, config=cfg(max_steps=3, keep_parent=False))
    path = save_finetuned(result, "my-scope", parent="ft-tiny-umis", volume_source="a/stack.tif")
    assert path == user_models / "my-scope.safetensors"
    assert (user_models / "my-scope.json").is_file()
    assert (user_models / "my-scope.manifest.json").is_file()
    assert "my-scope" in [s.name for s in registry.list_models()]
    model, spec = registry.load_model("my-scope", "cpu")
    assert same_state(model.state_dict(), result.state_dict)
    card = spec.card
    assert card.parent == "ft-tiny-umis" and card.training["mode"] == "unsupervised"
    assert card.extra["finetuned_on"]["source"] == "a/stack.tif"
    assert card.extra["finetuned_on"]["sha256"] == result.volume["sha256"]
    assert card.training["steps"] == 3 and card.training["config"]["max_steps"] == 3
    manifest = json.loads((user_models / "my-scope.manifest.json").read_text())
    assert len(manifest["losses"]) == 3 and manifest["mode"] == "unsupervised"
    assert _shipped_files() == shipped
    with pytest.raises(InputError, match="already exists.*'my-scope-2'"):
        save_finetuned(result, "my-scope")
    with pytest.raises(InputError, match="already exists"):
        check_new_name("ft-tiny-tvnet")
    with pytest.raises(InputError, match="cannot name a model"):
        check_new_name("../evil")
    with pytest.raises(InputError, match="shipped weights"):
        save_finetuned(result, "other", folder=SHIPPED_DIR)
    with pytest.raises(InputError, match="architecture"):
        save_finetuned(result, "other", parent="ft-tiny-tvnet")


@pytest.fixture(scope="module")
def small_result(tiny_models):
    return finetune("ft-tiny-tvnet", bars()[0], config=cfg(max_steps=1))


def test_full_disk_leaves_nothing_behind(small_result, user_models, monkeypatch):
    import safetensors.torch

    def full(*args, **kwargs):
        raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC))

    monkeypatch.setattr(safetensors.torch, "save_file", full)
    with pytest.raises(InputError, match="No space left.*free some disk space"):
        save_finetuned(small_result, "full-disk")
    assert list(user_models.glob("*")) == []
    monkeypatch.undo()
    monkeypatch.setenv("NAPARI_VESSEL_MODELS", str(user_models))
    monkeypatch.setattr("napari_vessel.training.finetune_save._atomic_text", full)
    with pytest.raises(InputError, match="No space left"):
        save_finetuned(small_result, "full-disk")
    assert list(user_models.glob("*")) == []


def test_read_only_folder(small_result, tmp_path, monkeypatch):
    import safetensors.torch

    def read_only(*args, **kwargs):
        raise OSError(errno.EROFS, os.strerror(errno.EROFS))

    folder = tmp_path / "ro"
    folder.mkdir()
    monkeypatch.setattr(safetensors.torch, "save_file", read_only)
    with pytest.raises(InputError, match="Read-only file system"):
        save_finetuned(small_result, "ro-model", folder=folder)
    monkeypatch.undo()
    assert list(folder.glob("*")) == []
    if getattr(os, "geteuid", lambda: 1)() == 0:  # root writes into read-only folders anyway
        return
    folder.chmod(0o555)
    try:
        with pytest.raises(InputError, match="could not save"):
            save_finetuned(small_result, "ro-model", folder=folder)
        assert list(folder.glob("*")) == []
    finally:
        folder.chmod(0o755)


# -- the uncertainty gate ------------------------------------------------------------------------

def test_mean_binary_entropy_matches_scipy():
    from scipy.stats import entropy

    from napari_vessel.stats import mean_binary_entropy

    p = np.random.default_rng(0).random((3, 5, 7))
    expected = np.mean([entropy([v, 1 - v], base=2) for v in p.ravel()])
    assert mean_binary_entropy(p) == pytest.approx(expected, rel=1e-6)
    assert mean_binary_entropy(np.full(4, 0.5)) == pytest.approx(1.0)
    assert mean_binary_entropy(np.array([0.0, 1.0])) == pytest.approx(0.0, abs=1e-4)


def test_a_confident_model_is_kept_as_it_is(tiny_models):
    from napari_vessel.inference.run import predict
    from napari_vessel.stats import mean_binary_entropy
    from napari_vessel.training.finetune_data import prepare_image
    from napari_vessel.training.finetune_loss import ProbabilityNet

    image, _ = bars()
    result = finetune("ft-tiny-tvnet", image, config=cfg(min_uncertainty=1.0))
    assert result.steps == 0 and result.kept_parent and not result.stopped_early
    assert "confident" in result.message and "0 to adapt anyway" in result.message
    model, spec = registry.load_model("ft-tiny-tvnet", "cpu")
    assert same_state(model.state_dict(), result.state_dict)
    pre, _ = prepare_image(spec, ft.as_volume(image))
    prob = predict(ProbabilityNet(model, spec), pre, patch_size=spec.patch_size_zyx, device="cpu")
    assert result.parent_uncertainty == pytest.approx(mean_binary_entropy(prob), abs=1e-6)
    assert result.summary()["parent_uncertainty"] == result.parent_uncertainty
    adapted = finetune("ft-tiny-tvnet", image, config=cfg(min_uncertainty=0.0))
    assert adapted.steps == 4 and adapted.parent_uncertainty is None
    with pytest.raises(InputError, match="bits"):
        cfg(min_uncertainty=1.5)


def test_a_level_rule_parent_fine_tunes_and_saves_at_the_level_it_chose(tiny_models, user_models):
    from dataclasses import replace

    from napari_vessel.inference.run import segment
    from napari_vessel.postprocess.labels import Postprocessing

    rule = {"intercept": 0.9, "slope": -1.0, "fraction_range": [0.0, 1.0],
            "level_range": [0.05, 0.95]}
    base = tiny_models["ft-tiny-tvnet"]
    registry.register(replace(base, name="ft-tiny-ruled", postprocessing={
        "method": "threshold", "level": 0.5, "level_rule": rule}), replace_existing=True)
    try:
        image, _ = bars()
        prob, own, manifest = segment(image, "ft-tiny-ruled")
        level = manifest.parameters.threshold
        from napari_vessel.postprocess.level import LevelRule

        expected = LevelRule.from_dict(rule).level_for(float((prob > 0.5).mean()))
        assert level == pytest.approx(expected, abs=1e-6)
        assert abs(level - 0.5) > 0.01  # the rule moved it from the fallback
        corrected = own.copy()
        corrected[3, 10:12, 4:9] ^= 1
        result = finetune("ft-tiny-ruled", image, labels=corrected,
                          config=cfg(mode="supervised", max_steps=2))
        # the parent's labels at the rule's level are what the user edited: 10 voxels differ
        assert result.level == pytest.approx(level, abs=1e-6) and result.edited_voxels == 10
        assert result.summary()["level"] == result.level
        from napari_vessel.training.finetune import segment_result

        child_prob, child_labels = segment_result(result, image)  # as the saved child labels
        np.testing.assert_array_equal(child_labels, child_prob > result.level)
        save_finetuned(result, "ruled-child", parent="ft-tiny-ruled")
        child = registry.get("ruled-child")
        assert child.card.threshold == pytest.approx(level, abs=1e-6)
        assert child.postprocessing is None  # a fixed level, the rule is not re-applied
        assert Postprocessing.for_model(child).rule is None
    finally:
        registry.unregister("ft-tiny-ruled")
