"""Tests of the unsupervised adaptation methods and of their drift guard."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from torch import nn

from napari_vessel.errors import InputError
from napari_vessel.models import registry
from napari_vessel.models.tvnet import build_tvnet
from napari_vessel.models.weights import save_weights
from napari_vessel.progress import CancelToken
from napari_vessel.training import METHODS
from napari_vessel.training.adapt import (
    DriftGuard,
    Leash,
    SelfTrainingLoss,
    jitter,
    reestimate_batchnorm,
)
from napari_vessel.training.finetune import FinetuneConfig, finetune

TV_CFG = {"widths": [2, 4], "strides": [[1, 2, 2]], "convs": [1, 1], "norm": "batch"}


@pytest.fixture(scope="module")
def bar_model(tmp_path_factory, fit_to_bars):
    """A tiny TV-Net that finds bright bars (threshold 0.5), registered as 'ad-tiny'."""
    torch.manual_seed(0)
    weights = save_weights(fit_to_bars(build_tvnet(**TV_CFG)),
                           tmp_path_factory.mktemp("w") / "ad-tiny",
                           {"architecture": "tvnet", "config": TV_CFG, "kind": "supervised",
                            "threshold": 0.5})
    spec = registry.register(registry.ModelSpec(
        name="ad-tiny", kind="supervised", description="tiny test network", builder=build_tvnet,
        config=TV_CFG, weights=weights, patch_size_zyx=(8, 32, 32), input_multiple_zyx=(1, 2, 2),
        architecture="tvnet", output="logits", card={"threshold": 0.5}), replace_existing=True)
    yield spec
    registry.unregister(spec.name)


def bars(shape=(8, 32, 32), seed: int = 1) -> np.ndarray:
    rng = np.random.default_rng(seed)
    labels = np.zeros(shape, bool)
    for _ in range(3):
        y = rng.integers(3, shape[1] - 3)
        labels[:, y - 1:y + 2, :] = True
    return np.clip(labels * 180 + 30 + rng.normal(0, 12, shape), 0, 255).astype(np.uint8)


def cfg(**changes) -> FinetuneConfig:
    base = dict(minutes=None, max_steps=6, patch_size_zyx=(8, 32, 32), batch_size=2, threads=1,
                preview=False, probe_patches=2, guard_every=2, method="selftrain")
    return FinetuneConfig(**{**base, **changes})


def same_state(a: dict, b: dict) -> bool:
    return a.keys() == b.keys() and all(torch.equal(a[k].cpu(), b[k].cpu()) for k in a)


def parent_state() -> dict:
    model, _ = registry.load_model("ad-tiny", "cpu")
    return model.state_dict()


def test_adabn_running_statistics_are_those_of_the_batches():
    torch.manual_seed(0)
    model = nn.Sequential(nn.Conv3d(1, 3, 3, padding=1), nn.BatchNorm3d(3), nn.ReLU(),
                          nn.Conv3d(3, 1, 1))
    batches = [torch.rand(2, 1, 4, 8, 8) * (i + 1) for i in range(3)]
    assert reestimate_batchnorm(model, batches) == 1
    bn = model[1]
    features = [model[0](b).detach() for b in batches]
    mean = torch.stack([f.mean(dim=(0, 2, 3, 4)) for f in features]).mean(0)
    var = torch.stack([f.var(dim=(0, 2, 3, 4), unbiased=True) for f in features]).mean(0)
    assert torch.allclose(bn.running_mean, mean, atol=1e-5)
    assert torch.allclose(bn.running_var, var, atol=1e-5)
    assert not model.training and bn.momentum == 0.1  # restored
    with pytest.raises(InputError, match="no batch normalisation"):
        reestimate_batchnorm(nn.Conv3d(1, 1, 1), batches)


def test_teacher_follows_the_student_by_ema(bar_model):
    model, spec = registry.load_model("ad-tiny", "cpu")
    loss = SelfTrainingLoss(model, spec, 0.5, 1.0, 0.9, Leash(model, spec, 0.5, 0, 0, 1), 0)
    before = [p.clone() for p in loss.teacher.parameters()]
    with torch.no_grad():
        for p in model.parameters():
            p.add_(1.0)
    loss.after_step(model)
    for t, b, s in zip(loss.teacher.parameters(), before, model.parameters(), strict=True):
        assert torch.allclose(t, 0.9 * b + 0.1 * s)


def test_pseudo_labels_leave_out_unsure_voxels(bar_model):
    model, spec = registry.load_model("ad-tiny", "cpu")
    loss = SelfTrainingLoss(model, spec, 0.5, 1.0, 0.99, Leash(model, spec, 0.5, 0, 0, 1), 0)
    image = bars().astype(np.float32) / 255
    x = torch.from_numpy(image)[None, None]
    vessel, background = loss.pseudo_labels(x)
    with torch.no_grad():
        p = (torch.sigmoid(model(x)) + torch.sigmoid(model(x.flip(-1))).flip(-1)) / 2
    logit = torch.log(p / (1 - p))
    assert torch.equal(vessel > 0, logit >= 1.0) and torch.equal(background > 0, logit <= -1.0)
    assert vessel.sum() > 0 and background.sum() > 0


def test_jitter_is_seeded_and_keeps_the_shape():
    x = torch.rand(2, 1, 4, 8, 8)
    a = jitter(x, np.random.default_rng(3))
    torch.manual_seed(0)
    b = jitter(x, np.random.default_rng(3))
    assert a.shape == x.shape and not torch.equal(a, x)
    assert torch.allclose(a.mean(), b.mean(), atol=0.05)


def test_size_leash_is_zero_at_the_parent_and_grows_with_the_change(bar_model):
    model, spec = registry.load_model("ad-tiny", "cpu")
    leash = Leash(model, spec, 0.5, anchor=0.0, keep_size=1.0, margin=1.0)
    x = torch.from_numpy(bars().astype(np.float32) / 255)[None, None]
    valid = torch.ones_like(x)
    with torch.no_grad():
        prob = torch.sigmoid(model(x))
    terms: dict = {}
    assert float(leash(prob, x, valid, terms)) == pytest.approx(0.0, abs=1e-10)
    assert float(leash(prob * 0.5, x, valid, terms)) == pytest.approx(0.25, rel=1e-4)


def test_drift_guard_measures_relative_changes(bar_model):
    model, spec = registry.load_model("ad-tiny", "cpu")
    x = torch.from_numpy(bars().astype(np.float32) / 255)[None, None]
    guard = DriftGuard(model, spec, x, torch.ones_like(x), 0.5, 0.25)
    assert not guard.empty and guard.measure(model).worst() == 0.0
    with torch.no_grad():
        model.head.bias.add_(-50.0)  # nothing above the threshold any more
    drift = guard.measure(model)
    assert drift.fraction == -1.0 and drift.skeleton == -1.0 and not guard.within(drift)
    assert "vessel fraction -100 %" in drift.describe()


@pytest.mark.parametrize("method", METHODS)
def test_every_method_adapts_within_the_guard(bar_model, method):
    result = finetune("ad-tiny", bars(), config=cfg(method=method))
    assert not result.declined and not result.kept_parent, result.message
    assert result.drift and all(abs(f) <= 0.25 and abs(s) <= 0.25 for _, f, s in result.drift)
    assert not same_state(result.state_dict, parent_state())
    assert result.summary()["drift"] == [list(d) for d in result.drift]
    if method == "adabn":
        changed = {k for k, v in result.state_dict.items()
                   if not torch.equal(v, parent_state()[k])}
        assert changed and all("running" in k or "num_batches" in k for k in changed)


def test_guard_stops_a_run_that_drifts_and_keeps_the_last_safe_state(bar_model):
    result = finetune("ad-tiny", bars(), config=cfg(method="tent", lr=5.0, anchor=0.0,
                                                    keep_size=0.0, max_steps=20))
    assert result.kept_parent and "guard" in result.message, result.message
    assert result.steps < 20 and abs(result.drift[-1][1]) > 0.25 or \
        abs(result.drift[-1][2]) > 0.25
    assert same_state(result.state_dict, parent_state())


def test_declines_a_volume_without_vessels(bar_model):
    dark = np.full((8, 32, 32), 30, np.uint8)
    dark[0, 0, 0] = 40  # one hot pixel: not constant, no vessel
    result = finetune("ad-tiny", dark, config=cfg())
    assert result.declined and result.kept_parent and result.steps == 0
    assert "finds no vessel" in result.message


def test_declines_a_mostly_saturated_volume(bar_model):
    image = bars()
    image[:, :20] = 255
    result = finetune("ad-tiny", image, config=cfg())
    assert result.declined and result.steps == 0 and "saturated" in result.message


def test_three_slices_adapt(bar_model):
    result = finetune("ad-tiny", bars((3, 32, 32)), config=cfg())
    assert result.steps == 6 and np.isfinite(result.losses).all()


def test_stop_keeps_a_checked_state_or_the_parent(bar_model):
    token = CancelToken()
    result = finetune("ad-tiny", bars(), config=cfg(max_steps=50),
                      progress=lambda f, m: token.cancel() if m.startswith("step 3,") else None,
                      cancel=token)
    assert result.stopped_early and result.steps == 3 and "stopped by the user" in result.message
    assert result.drift and result.drift[-1][0] in (0, 2, 3)  # the kept state was measured
    with torch.no_grad():
        out = result.model(torch.rand(1, 1, 8, 32, 32))
    assert torch.isfinite(out).all()
    token = CancelToken()
    token.cancel()
    result = finetune("ad-tiny", bars(), config=cfg(), cancel=token)
    assert result.kept_parent and same_state(result.state_dict, parent_state())


def test_a_volume_larger_than_the_sample_adapts_on_blocks(bar_model):
    import dask.array as da

    from napari_vessel.io.volume import Volume
    from napari_vessel.training.finetune_data import sample_blocks

    image = np.concatenate([bars(seed=s) for s in range(48)], axis=2)  # 8 x 32 x 1536
    lazy = Volume(da.from_array(image, chunks=(8, 32, 32)), (1.0, 1.0, 1.0))
    mosaic, note = sample_blocks(lazy, 2 * 8 * 32 * 512, seed=0)
    assert mosaic.shape == (8, 64, 512) and not mosaic.is_lazy
    assert "2 random blocks of 8 x 32 x 512" in note
    assert sample_blocks(lazy, image.size)[1] is None  # fits: used whole
    small, _ = sample_blocks(lazy, 8 * 32 * 40)  # even one block is too big: smaller blocks
    assert small.shape == (8, 32, 32)
    result = finetune("ad-tiny", lazy, config=cfg(max_voxels=2 * 8 * 32 * 512))
    assert "larger than the adaptation sample" in result.message and result.steps == 6
    assert result.volume["shape"] == [8, 64, 512] and result.summary()["sample"] == note


def test_the_shipped_network_adapts_on_three_slices_and_declines_a_saturated_stack(one_thread):
    from napari_vessel.data.phantom import make_phantom

    image = make_phantom((3, 96, 96), seed=2).image
    config = FinetuneConfig(minutes=None, max_steps=2, guard_every=1, preview=False, threads=1,
                            method="selftrain")
    result = finetune("tvnet", image, config=config)  # the network needs an even depth: padded
    assert result.steps == 2 and result.drift and not result.kept_parent
    saturated = image.copy()
    saturated[:, :60] = saturated.max()
    result = finetune("tvnet", saturated, config=config)
    assert result.declined and result.steps == 0 and "saturated" in result.message


def test_adabn_blends_with_the_parent_and_declines_past_the_guard(bar_model):
    from napari_vessel.training.adapt import batchnorm_statistics, blend_batchnorm

    model, _ = registry.load_model("ad-tiny", "cpu")
    parent = batchnorm_statistics(model)
    volume = {k: v + 2.0 for k, v in parent.items()}
    blend_batchnorm(model, parent, volume, 0.25)
    for key, value in batchnorm_statistics(model).items():
        assert torch.allclose(value, parent[key] + 0.5)
    # a guard nothing passes: every blend is tried, then the parent is kept
    image = bars()
    image[:, ::2] //= 2  # a shift the statistics see
    result = finetune("ad-tiny", image, config=cfg(method="adabn", max_drift=1e-9))
    from napari_vessel.training.adapt import ADABN_BLENDS

    assert result.declined and result.kept_parent and len(result.drift) == len(ADABN_BLENDS)
    assert "vessel fraction" in result.message and "guard" in result.message
    assert same_state(result.state_dict, parent_state())


def test_guard_stops_corrections_that_change_the_whole_volume(bar_model):
    image = bars()
    erased = np.zeros(image.shape, np.uint8)  # one slice "corrected" to no vessel at all
    mask = np.zeros(image.shape, bool)
    mask[4] = True
    result = finetune("ad-tiny", image, labels=erased, edited_mask=mask, config=cfg(
        mode="supervised", lr=0.5, max_steps=30, anchor=0.0, keep_parent=False))
    assert "guard" in result.message, result.message
    assert result.drift and abs(result.drift[-1][1]) > 0.25  # the crossing was recorded
    assert result.steps < 30


def test_guard_probes_of_corrections_are_uniform_not_centred_on_the_edits():
    from napari_vessel.training.finetune_data import PatchSampler

    image = np.arange(40 * 64 * 64, dtype=np.float32).reshape(40, 64, 64)
    mask = np.zeros(image.shape, bool)
    mask[2, 2, 2] = True  # one edit in a corner
    sampler = PatchSampler(image, (8, 16, 16), mask=mask)
    rng = np.random.default_rng(0)
    centred = [sampler._start(rng) for _ in range(20)]
    uniform = [sampler._start(rng, uniform=True) for _ in range(20)]
    assert all(s == [0, 0, 0] for s in centred)
    assert len({tuple(s) for s in uniform}) > 10


def test_the_kept_state_reports_its_own_drift_not_the_crossing():
    """After the guard stops a run, the message gives the drift of the step kept, not of the step
    that crossed the guard."""
    from types import SimpleNamespace

    from napari_vessel.training.finetune_loop import FinetuneLoop

    loop = SimpleNamespace(unsupervised=True, method="synthetic", best_step=20,
                           drift=[(10, 0.05, 0.02), (20, 0.12, 0.08), (30, 0.26, 0.11)])
    text = FinetuneLoop._kept_message(loop, 30, None, None)
    assert "kept step 20 of 30" in text and "vessel fraction +12 %" in text
    assert "+26 %" not in text


def test_volume_guard_measures_the_whole_volume_as_segmentation_does(bar_model):
    from skimage.morphology import skeletonize

    from napari_vessel.inference.run import predict
    from napari_vessel.training.adapt import VolumeGuard
    from napari_vessel.training.finetune_loss import ProbabilityNet

    model, spec = registry.load_model("ad-tiny", "cpu")
    image = bars(shape=(8, 48, 48)).astype(np.float32) / 255
    guard = VolumeGuard(model, spec, image, 0.5, 0.25, torch.device("cpu"))
    labels = predict(ProbabilityNet(model, spec), image, patch_size=spec.patch_size_zyx) > 0.5
    assert guard.vessel0 == int(labels.sum()) > 0  # an independent sliding-window run
    assert guard.skeleton0 == int(skeletonize(labels).sum())
    prob = predict(ProbabilityNet(model, spec), image, patch_size=spec.patch_size_zyx)
    given = VolumeGuard(None, spec, image, 0.5, 0.25, torch.device("cpu"), parent_prob=prob)
    assert (given.vessel0, given.skeleton0) == (guard.vessel0, guard.skeleton0)  # no rerun
    with torch.no_grad():
        model.head.bias.add_(-50.0)
    assert guard.measure(model).fraction == -1.0


def test_an_adapted_state_that_moves_the_whole_volume_is_declined(bar_model, monkeypatch):
    from napari_vessel.training import adapt

    monkeypatch.setattr(adapt.VolumeGuard, "measure",  # the probes saw nothing, the volume does
                        lambda self, model: adapt.Drift(0.85, 0.1))
    for method in ("tent", "adabn"):
        result = finetune("ad-tiny", bars(), config=cfg(method=method))
        assert result.kept_parent and result.declined, result.message
        assert same_state(result.state_dict, parent_state())
        assert "vessel fraction +85 %" in result.message
        if method == "tent":
            assert "on the whole volume" in result.message
    unguarded = finetune("ad-tiny", bars(), config=cfg(method="tent", max_drift=None))
    assert not unguarded.kept_parent  # no guard asked for: no whole-volume check either
