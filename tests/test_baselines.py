"""DeepVess and VesselNN as dense networks; untrained models and missing weights files."""

from __future__ import annotations

import dataclasses
import json

import numpy as np
import pytest
import torch

from napari_vessel.errors import InputError
from napari_vessel.inference import run as inference
from napari_vessel.models import registry
from napari_vessel.models.deepvess import MaxFilter3d, SameConv3d, build_deepvess
from napari_vessel.models.vesselnn import build_vesselnn
from napari_vessel.models.weights import save_weights

ZOO = ("vcnet", "dbac", "ddmac", "cascade-ensemble", "deepvess", "vesselnn")


@pytest.fixture(autouse=True)
def one_thread(monkeypatch):
    """One thread: tiny tensors gain nothing from more, and a busy machine makes them slow."""
    monkeypatch.setattr(inference, "cpu_count", lambda: 1)  # the engine would use every core
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)


def receptive_field(model: torch.nn.Module) -> tuple[int, ...]:
    """Window (z, y, x) one output voxel sees: 1 + sum of (kernel - 1) x dilation over layers."""
    field = np.ones(3, dtype=int)
    for layer in model.modules():
        if isinstance(layer, SameConv3d):
            field += (np.array(layer.conv.kernel_size) - 1) * np.array(layer.conv.dilation)
        elif isinstance(layer, MaxFilter3d):
            field += (np.array(layer.kernel) - 1) * np.array(layer.dilation)
    return tuple(int(v) for v in field)


def test_same_convolution_and_max_filter_keep_the_size():
    x = torch.rand(1, 2, 3, 7, 6)
    for kernel, dilation in (((1, 2, 2), (1, 1, 1)), ((2, 3, 3), (1, 4, 4)), ((3, 3, 3), (1, 1, 1))):
        assert SameConv3d(2, 3, kernel, dilation)(x).shape == (1, 3, 3, 7, 6)
        assert MaxFilter3d(kernel, dilation)(x).shape == x.shape
    impulse = torch.zeros(1, 1, 1, 5, 5)
    impulse[0, 0, 0, 2, 2] = 1.0
    spread = MaxFilter3d((1, 2, 2), (1, 2, 2))(impulse)[0, 0, 0]
    assert spread.sum() == 4 and spread[1, 1] == spread[1, 3] == spread[3, 1] == spread[3, 3] == 1


def test_deepvess_is_dense_with_the_published_field_of_view():
    torch.manual_seed(0)
    model = build_deepvess(widths=[2, 2, 4])
    x = torch.rand(2, 1, 5, 19, 23)
    assert model.eval()(x).shape == x.shape  # any size, even fewer than 7 slices
    assert receptive_field(model) == (7, 34, 34)  # the 7 x 33 x 33 window, made dense
    x = torch.rand(1, 1, 9, 40, 40)
    far = torch.ones_like(x, dtype=torch.bool)
    far[..., 1:8, 3:38, 3:38] = False  # everything beyond 3 slices and 17 pixels of (4, 20, 20)
    with torch.no_grad():
        near, changed = model(x), model(torch.where(far, torch.rand_like(x), x))
    assert near[0, 0, 4, 20, 20] == changed[0, 0, 4, 20, 20]
    assert not torch.equal(near, changed)


def test_vesselnn_is_dense_with_the_vd2d3d_field_of_view():
    torch.manual_seed(0)
    model = build_vesselnn(widths=[2, 2, 2, 2, 2, 2])
    x = torch.rand(1, 1, 3, 11, 9)
    assert model.eval()(x).shape == x.shape
    assert receptive_field(model) == (5, 85, 85)


def test_published_parameter_counts():
    # DeepVess: 3x3x3 x (1->32, 32->32, 32->32), 1x3x3 x (32->64, 64->64), fc1 1600->1024, fc2
    deepvess = (27 * 32 + 32) + 2 * (27 * 32 * 32 + 32) + (9 * 32 * 64 + 64) + (9 * 64 * 64 + 64)
    deepvess += 25 * 64 * 1024 + 1024 + 1024 + 1  # fc2: one logit per voxel instead of 50 outputs
    assert registry.count_parameters("deepvess-full") == deepvess
    # VD2D3D: 1x3x3 24, 1x3x3 24, 1x2x2 24, 1x3x3 36 (x2), 1x3x3 48 (x2), 2x3x3 60, 60, 100, out
    layers = [(9, 1, 24), (9, 24, 24), (4, 24, 24), (9, 24, 36), (9, 36, 36), (9, 36, 48),
              (9, 48, 48), (18, 48, 60), (18, 60, 60), (18, 60, 100), (1, 100, 1)]
    assert registry.count_parameters("vesselnn-full") == sum(k * a * b + b for k, a, b in layers)
    for name in ("deepvess", "vesselnn"):
        assert registry.count_parameters(name) < registry.count_parameters(f"{name}-full")


@pytest.mark.parametrize("name", ["deepvess", "vesselnn"])
def test_baselines_run_in_the_sliding_window(name, tmp_path):
    spec = registry.get(name)
    config = {**spec.config, "widths": [2] * len(spec.config["widths"])}
    model = spec.builder(**config)
    path = save_weights(model, tmp_path / name, {"architecture": name, "config": config})
    spec = dataclasses.replace(spec, config=config, weights=path, card={})
    stack = np.random.default_rng(0).random((3, 20, 17)).astype(np.float32)
    prob = inference.predict(spec, stack, patch_size=(4, 16, 16), device="cpu")
    assert prob.shape == stack.shape and 0 <= prob.min() and prob.max() <= 1
    with pytest.raises(InputError, match="2D"):
        inference.predict(spec, stack[0], device="cpu")
    with pytest.raises(InputError, match="3D stack"):
        model(torch.rand(1, 1, 16, 16))


@pytest.mark.parametrize("name", ZOO)
def test_zoo_models_are_listed_as_not_trained_yet(name):
    spec = registry.get(name)
    assert spec in registry.list_models(kind="supervised")
    assert spec.trainable and spec.is_network
    if spec.has_weights:  # the slim variant ships weights: its -full variant never does
        name = f"{name}-full"
        spec = registry.get(name)
        assert spec.trainable and spec.is_network
    assert not spec.has_weights and not spec.usable
    with pytest.raises(InputError, match=f"model '{name}' has no trained weights yet"):
        registry.load_model(name, "cpu")
    with pytest.raises(InputError, match="no trained weights"):
        inference.predict(name, np.random.default_rng(0).random((6, 16, 16)), device="cpu")
    assert registry.default_model_name() not in ZOO


@pytest.mark.parametrize("architecture", ["vcnet", "cascade-ensemble", "deepvess"])
def test_a_card_naming_a_missing_weights_file(architecture, tmp_path, monkeypatch):
    monkeypatch.setenv(registry.MODELS_ENV, str(tmp_path))
    card = {"format_version": 1, "name": "my-model", "architecture": architecture,
            "kind": "supervised", "config": {}, "weights_file": "my-model.safetensors"}
    (tmp_path / "my-model.json").write_text(json.dumps(card))
    spec = registry.get("my-model")
    assert spec.source == "user" and not spec.usable
    with pytest.raises(InputError, match="my-model.safetensors, which does not exist"):
        registry.load_model("my-model", "cpu")
    with pytest.raises(InputError, match="does not exist"):
        inference.predict("my-model", np.random.default_rng(0).random((6, 16, 16)), device="cpu")
