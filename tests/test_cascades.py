"""DBAC, DDMAC and their ensemble: attention (eq. 1-2, 6-8), fusion (eq. 9-10), slice-by-slice use."""

from __future__ import annotations

import dataclasses

import numpy as np
import pytest
import torch

from napari_vessel.errors import InputError
from napari_vessel.inference import run as inference
from napari_vessel.models import registry
from napari_vessel.models.cascades import (
    HYSTERESIS,
    build_dbac,
    build_ddmac,
    build_ensemble,
    paper_labels,
)
from napari_vessel.models.weights import save_weights
from napari_vessel.preprocess import Pipeline

TINY = [2, 2, 4, 4]  # four levels, like the slim default: inputs multiples of 8


@pytest.fixture(autouse=True)
def one_thread(monkeypatch):
    """One thread: tiny tensors gain nothing from more, and a busy machine makes them slow."""
    monkeypatch.setattr(inference, "cpu_count", lambda: 1)  # the engine would use every core
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)


def tiny_spec(name: str, tmp_path, **config):
    """A registered cascade with tiny widths and saved (random) weights, in eval mode."""
    spec = registry.get(name)
    config = {**spec.config, "widths": TINY, **config}
    torch.manual_seed(0)
    model = spec.builder(**config).eval()
    path = save_weights(model, tmp_path / f"{name}-tiny",
                        {"architecture": spec.architecture, "config": config})
    spec = dataclasses.replace(spec, name=f"{name}-tiny", config=config, weights=path, card={},
                               input_multiple_zyx=(1, 8, 8))
    return spec, model


def test_outputs_of_all_three_models():
    x = torch.rand(2, 1, 16, 8)
    dbac, ddmac = build_dbac(widths=TINY), build_ddmac(widths=TINY)
    out = dbac(x)
    assert out.seg.shape == out.attention.shape == x.shape
    out = ddmac(x)
    assert out.seg.shape == out.distance.shape == x.shape
    assert 0 <= float(out.distance.min()) and float(out.distance.max()) <= 1
    for scale in (1, 2):
        ensemble = build_ensemble(widths=TINY, dbac_scale=scale)
        out = ensemble(x)
        assert out.seg.shape == out.dbac.seg.shape == out.ddmac.distance.shape == x.shape
        assert out.dbac.attention.shape == x.shape  # brought back from the up-sampled size


def test_binary_attention_gates_the_image():
    """P = max(0, W) (eq. 1), M = I x P (eq. 2): a negative W blanks the U-Net++ input."""
    model = build_dbac(widths=TINY).eval()
    seen = []
    model.second.register_forward_pre_hook(lambda module, args: seen.append(args[0]))
    x = torch.rand(1, 1, 8, 8)
    with torch.no_grad():
        model.attention_head.weight.zero_()
        model.attention_head.bias.fill_(-2.0)
        model(x)
        model.attention_head.bias.fill_(0.5)
        model(x)
    assert not seen[0].any()
    assert torch.allclose(seen[1], 0.5 * x)


def test_distance_attention_splits_the_image_and_adds_q():
    """Eq. 6-8: softmax over 3 channels times I, concatenated with Q."""
    model = build_ddmac(widths=TINY).eval()
    seen = []
    model.second.register_forward_pre_hook(lambda module, args: seen.append(args[0]))
    x = torch.rand(1, 1, 8, 8)
    with torch.no_grad():
        out = model(x)
    m = seen[0]
    assert m.shape == (1, 4, 8, 8)
    assert torch.allclose(m[:, :3].sum(dim=1, keepdim=True), x, atol=1e-6)
    assert torch.equal(m[:, 3:], out.distance)


@pytest.mark.parametrize("fusion", ["average", "maximum"])
def test_late_fusion(fusion):
    model = build_ensemble(widths=TINY, fusion=fusion).eval()
    with torch.no_grad():
        out = model(torch.rand(1, 1, 8, 8))
    first, second = torch.sigmoid(out.dbac.seg), torch.sigmoid(out.ddmac.seg)
    expected = (first + second) / 2 if fusion == "average" else torch.maximum(first, second)
    assert torch.allclose(out.seg, expected)  # eq. 9 / eq. 10
    with pytest.raises(ValueError, match="fusion"):
        build_ensemble(widths=TINY, fusion="vote")


def test_2d_models_refuse_3d_tensors_and_odd_sizes():
    model = build_dbac(widths=TINY)
    with pytest.raises(InputError, match="slice by slice"):
        model(torch.rand(1, 1, 3, 8, 8))
    with pytest.raises(InputError, match="multiples of 8"):
        model(torch.rand(1, 1, 12, 8))


@pytest.mark.parametrize("name", ["dbac", "ddmac", "cascade-ensemble"])
def test_inference_runs_them_slice_by_slice(name, tmp_path):
    spec, model = tiny_spec(name, tmp_path)
    stack = np.random.default_rng(0).random((3, 16, 16)).astype(np.float32)
    prob = inference.predict(spec, stack, patch_size=(8, 16, 16), device="cpu")
    with torch.no_grad():
        out = model(torch.from_numpy(stack)[:, None]).seg[:, 0]  # the slices as a batch
    expected = out if spec.output == "probability" else torch.sigmoid(out)
    np.testing.assert_allclose(prob, expected.numpy(), atol=1e-5)


def test_slice_by_slice_on_sizes_that_need_padding(tmp_path):
    spec, _ = tiny_spec("ddmac", tmp_path)
    stack = np.random.default_rng(1).random((2, 10, 13)).astype(np.float32)
    prob = inference.predict(spec, stack, device="cpu", tta=True)
    assert prob.shape == stack.shape and 0 <= prob.min() and prob.max() <= 1
    with pytest.raises(InputError, match="2D"):  # one image: add a slice axis first
        inference.predict(spec, stack[0], device="cpu")


def test_registered_variants_and_widths():
    for name in ("dbac", "ddmac", "cascade-ensemble"):
        slim, full = registry.get(name), registry.get(f"{name}-full")
        for spec in (slim, full):
            assert spec.dims == 2 and spec.patch_size_zyx[0] == 1
            assert spec.kind == "supervised" and spec.trainable
            post = spec.card.postprocessing
            if spec.has_weights:  # levels fitted on the training volumes, clean-up as the paper
                assert spec.postprocessing == post  # segment uses the card's, not the paper's
                assert post["method"] == "hysteresis" and "chosen_on" in post
                assert post["low"] == pytest.approx(spec.card.threshold)
                assert post["low"] <= post["high"] <= HYSTERESIS["high"]
                assert {k: post[k] for k in ("min_size", "fill_holes", "max_hole")} == {
                    k: HYSTERESIS[k] for k in ("min_size", "fill_holes", "max_hole")}
            else:
                assert post == HYSTERESIS and spec.postprocessing == HYSTERESIS
        assert full.config["widths"] == [32, 64, 128, 256, 512]
        assert full.input_multiple_zyx == (1, 16, 16) and slim.input_multiple_zyx == (1, 8, 8)
        assert registry.count_parameters(slim) * 30 < registry.count_parameters(full)
    assert registry.get("cascade-ensemble").output == "probability"
    assert registry.get("dbac").output == "logits"
    pipeline = Pipeline.from_dict(registry.get("dbac").card.extra["recommended_preprocessing"])
    assert [step.name for step in pipeline.steps] == ["focus_stack", "clahe"]


def test_paper_postprocessing():
    prob = np.zeros((2, 12, 12), dtype=np.float32)
    prob[0, 2, 1:11] = 0.6  # a faint vessel ...
    prob[0, 2, 5] = 0.99  # ... with one confident pixel: kept whole
    prob[1, 8, 1:11] = 0.9  # never above the high threshold: dropped
    labels = paper_labels(prob, min_size=3)
    assert labels.dtype == np.uint8
    assert labels[0, 2, 1:11].all() and labels.sum() == 10
