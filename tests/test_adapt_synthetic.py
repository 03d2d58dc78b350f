"""Adaptation on synthetic vessels matched to the volume: histogram matching and the run."""

from __future__ import annotations

import numpy as np
import pytest

from napari_vessel.errors import InputError
from napari_vessel.progress import CancelToken
from napari_vessel.training.adapt_synthetic import (
    SyntheticBatches,
    match_quantiles,
    matched_volumes,
    reference_quantiles,
)
from napari_vessel.training.data import normalise
from napari_vessel.training.finetune import FinetuneConfig, finetune


def prepare(raw, spacing):
    return normalise(raw)


def test_matching_gives_the_reference_histogram_and_keeps_the_order():
    rng = np.random.default_rng(0)
    source = rng.gamma(2.0, 1.0, (6, 40, 40)).astype(np.float32)
    reference = rng.uniform(0, 1, 50_000).astype(np.float32) ** 3
    q = reference_quantiles(reference)
    out = match_quantiles(source, q)
    levels = [0.05, 0.25, 0.5, 0.75, 0.95]
    assert np.allclose(np.quantile(out, levels), np.quantile(reference, levels), atol=0.01)
    order = np.argsort(source.ravel(), kind="stable")
    assert np.all(np.diff(out.ravel()[order]) >= -1e-7)  # rank-preserving
    assert out.shape == source.shape and out.dtype == np.float32


def test_a_flat_background_stays_flat_and_zeros_map_to_the_reference_zeros():
    source = np.zeros((2, 10, 10), np.float32)
    source[:, :2] = np.linspace(0.5, 1.0, 10)  # 20 % bright voxels
    reference = np.concatenate([np.zeros(600), np.linspace(0.2, 1.0, 400)]).astype(np.float32)
    out = match_quantiles(source, reference_quantiles(reference))
    assert np.unique(out[:, 2:]).size == 1 and float(out[0, 5, 5]) == 0.0
    assert out[:, :2].min() > 0.2


def test_reference_quantiles_sample_big_volumes_and_refuse_empty_ones():
    big = np.random.default_rng(1).uniform(0, 1, 3_000_000).astype(np.float32)
    q = reference_quantiles(big)
    assert q.shape == (1001,) and abs(float(q[500]) - 0.5) < 0.01
    with pytest.raises(InputError, match="empty"):
        reference_quantiles(np.zeros((0, 4, 4)))


def test_matched_volumes_have_exact_labels_and_the_volume_s_grey_levels():
    rng = np.random.default_rng(2)
    image = np.clip(rng.normal(0.1, 0.05, (8, 48, 48)), 0, 1).astype(np.float32)
    pairs = matched_volumes(image, (2.0, 1.0, 1.0), prepare, count=3, seed=5)
    assert len(pairs) == 3
    for pair in pairs:
        assert pair.labels.dtype == bool and pair.labels.shape == pair.image.shape
        assert pair.image.shape[0] == 8  # as deep as the volume (8 to 24 slices)
        # the bright part has the volume's grey levels (ties, e.g. the zeros left by the median
        # subtraction, share one level)
        for level in (0.95, 0.99):
            assert abs(float(np.quantile(pair.image, level) - np.quantile(image, level))) < 0.02
        assert image.min() <= pair.image.min() and pair.image.max() <= image.max()
    again = matched_volumes(image, (2.0, 1.0, 1.0), prepare, count=1, seed=5)
    assert np.array_equal(again[0].image, pairs[0].image)  # seeded
    with pytest.raises(InputError, match="whole number"):
        matched_volumes(image, None, prepare, count=0)


def test_batches_are_exact_labels_with_full_masks():
    image = np.random.default_rng(3).uniform(0, 1, (8, 48, 48)).astype(np.float32)
    pairs = matched_volumes(image, None, prepare, count=2)
    x, valid, target, mask = SyntheticBatches(pairs, (8, 32, 32)).batch(
        np.random.default_rng(0), 4)
    assert x.shape == target.shape == (4, 1, 8, 32, 32)
    assert set(np.unique(target)) <= {0.0, 1.0} and target.any()
    assert valid.all() and mask.all()


@pytest.fixture
def bars_volume():
    rng = np.random.default_rng(1)
    labels = np.zeros((8, 32, 32), bool)
    for y in (8, 16, 24):
        labels[:, y - 1:y + 2, :] = True
    return np.clip(labels * 180 + 30 + rng.normal(0, 12, labels.shape), 0, 255).astype(np.uint8)


def config(**changes) -> FinetuneConfig:
    base = dict(minutes=None, max_steps=4, patch_size_zyx=(8, 32, 32), batch_size=2, threads=1,
                preview=False, probe_patches=2, guard_every=2, method="synthetic")
    return FinetuneConfig(**{**base, **changes})


def test_the_synthetic_method_trains_every_weight_at_its_own_rate():
    cfg = config()
    assert cfg.trained_parameters == "all" and cfg.learning_rate == 3e-4
    assert config(method="tent").trained_parameters == "norm"


def test_stop_while_drawing_the_synthetic_volumes_keeps_the_parent(bars_volume, one_thread):
    token = CancelToken()
    messages = []

    def progress(fraction, message):
        messages.append(message)
        if "synthetic vessels" in message:
            token.cancel()

    result = finetune("tvnet", bars_volume, config=config(patch_size_zyx=(8, 32, 32)),
                      progress=progress, cancel=token)
    assert result.stopped_early and result.kept_parent and result.steps == 0
    assert "stopped by the user" in result.message
    assert any("synthetic vessels like this volume" in m for m in messages)


def test_batches_end_with_unlabelled_patches_of_the_volume():
    from napari_vessel.training.finetune_data import PatchSampler

    image = np.random.default_rng(4).uniform(0, 1, (8, 48, 48)).astype(np.float32)
    pairs = matched_volumes(image, None, prepare, count=2)
    real = PatchSampler(image, (8, 32, 32))
    x, valid, target, mask = SyntheticBatches(pairs, (8, 32, 32), real=real).batch(
        np.random.default_rng(0), 4)
    assert x.shape[0] == 6  # 4 synthetic + 2 of the volume
    assert mask[:4].all() and not mask[4:].any() and not target[4:].any()
    assert any(np.array_equal(x[4, 0], image[:, a:a + 32, b:b + 32])
               for a in range(17) for b in range(17))


def test_the_leash_sees_only_the_volume_s_patches(monkeypatch):
    import torch

    from napari_vessel.training.adapt_synthetic import SyntheticLoss

    seen = []

    def leash(prob, x, valid, terms):
        seen.append(x.shape[0])
        return prob.sum() * 0

    class Net(torch.nn.Module):
        def forward(self, x):
            return x * 2 - 1

    spec = type("Spec", (), {"output": "logits", "name": "n"})()
    monkeypatch.setattr("napari_vessel.training.adapt_synthetic.forward_parts",
                        lambda model, x, spec, reconstruct: (torch.sigmoid(model(x)), None, None,
                                                             model(x)))
    x = torch.rand(6, 1, 4, 8, 8)
    mask = torch.zeros_like(x)
    mask[:4] = 1
    target = (torch.rand_like(x) > 0.5).float() * mask
    total, terms = SyntheticLoss(spec, leash)(Net(), x, torch.ones_like(x), target, mask)
    assert seen == [2] and torch.isfinite(total) and {"bce", "dice", "total"} <= terms.keys()


def test_matched_volumes_can_carry_visible_labels_and_the_config_checks_the_choice():
    from napari_vessel.data.synthetic import synthetic_volume
    from napari_vessel.training.adapt_synthetic import _synthetic_config
    from napari_vessel.training.finetune_config import FinetuneConfig

    image = np.clip(np.random.default_rng(2).normal(0.1, 0.05, (8, 48, 48)), 0, 1).astype(np.float32)
    exact = matched_volumes(image, (2.0, 1.0, 1.0), prepare, count=2, seed=5)
    seen = matched_volumes(image, (2.0, 1.0, 1.0), prepare, count=2, seed=5, labels="visible")
    config = _synthetic_config((2.0, 1.0, 1.0), image.shape, "visible")
    for i, (a, b) in enumerate(zip(exact, seen, strict=True)):
        assert np.array_equal(a.image, b.image)  # the same volumes, other labels
        truth = synthetic_volume(i, seed=5, config=config).labels > 0
        assert np.array_equal(b.labels, truth)
    assert FinetuneConfig(method="synthetic", synthetic_labels="visible").synthetic_labels == "visible"
    with pytest.raises(InputError, match="synthetic_labels"):
        FinetuneConfig(method="synthetic", synthetic_labels="wide")
