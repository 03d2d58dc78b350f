"""VC-Net: sliding MIPs, tiling, unprojection with max fusion, the network and its bad inputs."""

from __future__ import annotations

import dataclasses

import numpy as np
import pytest
import torch

from napari_vessel.errors import InputError
from napari_vessel.inference import run as inference
from napari_vessel.models import registry
from napari_vessel.models.vcnet import (
    VCNet,
    build_vcnet,
    sliding_mips,
    tile_mips,
    unproject,
    untile_mips,
)
from napari_vessel.models.weights import save_weights
from napari_vessel.projection import sliding_mips as numpy_sliding_mips

TINY = {"width": 2, "mip_width": 2, "strides": [[1, 2, 2], [2, 2, 2]], "slab": 5, "step": 2,
        "columns": 2, "norm": "batch"}


@pytest.fixture(autouse=True)
def one_thread(monkeypatch):
    """One thread: tiny tensors gain nothing from more, and a busy machine makes them slow."""
    monkeypatch.setattr(inference, "cpu_count", lambda: 1)  # the engine would use every core
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)


@pytest.fixture
def tiny_spec(tmp_path):
    """The registered VC-Net with a tiny config and saved (random) weights."""
    torch.manual_seed(0)
    model = build_vcnet(**TINY)
    path = save_weights(model, tmp_path / "vcnet-tiny", {"architecture": "vcnet", "config": TINY})
    return dataclasses.replace(registry.get("vcnet"), name="vcnet-tiny", config=TINY, weights=path,
                               card={}, input_multiple_zyx=(2, 4, 4))


def bright_voxel_volume(depths: np.ndarray, size: int) -> torch.Tensor:
    """(1, 1, size, H, W) zeros with value 1 + y + x at slice ``depths[y, x]`` of each column."""
    h, w = depths.shape
    volume = torch.zeros(1, 1, size, h, w)
    for y in range(h):
        for x in range(w):
            volume[0, 0, depths[y, x], y, x] = 1.0 + y + x
    return volume


def test_sliding_mips_pick_the_bright_voxel():
    depths = np.array([[0, 4, 6], [7, 3, 5]])
    volume = bright_voxel_volume(depths, 9)  # m = (9 - 5) // 2 + 1 = 3 (eq. 1): slabs 0-4, 2-6, 4-8
    mips, depth = sliding_mips(volume, 5, 2)
    assert mips.shape == depth.shape == (1, 1, 3, 2, 3)
    for k, (lo, hi) in enumerate([(0, 5), (2, 7), (4, 9)]):
        inside = (depths >= lo) & (depths < hi)
        expected = np.where(inside, 1.0 + np.add.outer(np.arange(2), np.arange(3)), 0.0)
        np.testing.assert_allclose(mips[0, 0, k].numpy(), expected)
        # where the bright voxel is in the slab, its slice is recorded; else the first slice
        np.testing.assert_array_equal(depth[0, 0, k].numpy(), np.where(inside, depths, lo))


def test_sliding_mips_match_the_numpy_projection():
    rng = np.random.default_rng(1)
    stack = rng.random((12, 5, 6)).astype(np.float32)
    mips, depth = sliding_mips(torch.from_numpy(stack)[None, None], 5, 2)
    ref_mips, ref_depth = numpy_sliding_mips(stack, s=5, t=2)
    np.testing.assert_allclose(mips[0, 0].numpy(), ref_mips)
    np.testing.assert_array_equal(depth[0, 0].numpy(), ref_depth)


def test_tiles_are_laid_out_in_rows_of_columns_and_come_back():
    mips = torch.arange(3 * 2 * 2, dtype=torch.float32).view(1, 1, 3, 2, 2)  # m = 3, odd
    plane = tile_mips(mips, columns=2)
    assert plane.shape == (1, 1, 4, 4)  # ceil(3 / 2) rows of 2 tiles
    assert torch.equal(plane[0, 0, :2, :2], mips[0, 0, 0])
    assert torch.equal(plane[0, 0, :2, 2:], mips[0, 0, 1])
    assert torch.equal(plane[0, 0, 2:, :2], mips[0, 0, 2])
    assert not plane[0, 0, 2:, 2:].any()  # the missing tile is zeros
    assert torch.equal(untile_mips(plane, 3, columns=2), mips)


def test_unprojection_puts_features_back_at_their_depth():
    depths = np.array([[0, 4, 6], [7, 3, 5]])
    volume = bright_voxel_volume(depths, 9)
    _, depth = sliding_mips(volume, 5, 2)
    features = torch.rand(1, 4, 3, 2, 3) + 1.0  # four channels, all positive
    out = unproject(features, depth, 9)
    assert out.shape == (1, 4, 9, 2, 3)
    for y in range(2):
        for x in range(3):
            d = depths[y, x]
            picked = [k for k in range(3) if int(depth[0, 0, k, y, x]) == d]
            assert picked  # every bright voxel is some MIP's maximum
            expected = features[0, :, picked, y, x].amax(dim=1)  # eq. 2: max over the MIPs
            assert torch.allclose(out[0, :, d, y, x], expected)
            others = [s for s in range(9) if s not in {int(v) for v in depth[0, 0, :, y, x]}]
            assert not out[0, :, others, y, x].any()  # voxels no MIP picked stay 0


def test_max_fusion_over_overlapping_mips():
    depth = torch.tensor([2, 2, 4]).view(1, 1, 3, 1, 1)  # MIPs 0 and 1 both picked slice 2
    features = torch.tensor([3.0, 5.0, -1.0]).view(1, 1, 3, 1, 1)
    out = unproject(features, depth, 9)
    assert out[0, 0, :, 0, 0].tolist() == [0, 0, 5.0, 0, -1.0, 0, 0, 0, 0]


def test_forward_shapes_and_gradient_through_the_unprojection():
    torch.manual_seed(0)
    model = build_vcnet(**TINY)
    assert model.input_multiple == (2, 4, 4)
    x = torch.rand(2, 1, 8, 16, 12)
    out = model(x)
    assert out.seg.shape == x.shape
    assert out.mip.shape == out.depth.shape == (2, 1, 2, 16, 12)  # m = (8 - 5) // 2 + 1
    out.seg.sum().backward()  # the joint head alone reaches the 2D stream through eq. 2
    assert model.mip_stream.down[0][0].weight.grad.abs().sum() > 0
    assert model.mip_head.weight.grad is None  # the MIP head serves the MIP Dice only


def test_fewer_slices_than_the_slab_is_an_input_error(tiny_spec):
    model = build_vcnet(**TINY).eval()
    with pytest.raises(InputError, match="fewer than VC-Net's slab of 5"):
        model(torch.rand(1, 1, 4, 16, 16))
    rng = np.random.default_rng(0)
    with pytest.raises(InputError, match="slab"):  # 4 slices -> one 4-slice patch
        inference.predict(tiny_spec, rng.random((4, 16, 16)).astype(np.float32), device="cpu")
    prob = inference.predict(tiny_spec, rng.random((5, 16, 16)).astype(np.float32), device="cpu")
    assert prob.shape == (5, 16, 16) and 0 <= prob.min() and prob.max() <= 1


def test_a_2d_image_is_an_input_error(tiny_spec):
    model = build_vcnet(**TINY).eval()
    with pytest.raises(InputError, match="3D stack"):
        model(torch.rand(1, 1, 16, 16))
    with pytest.raises(InputError, match="2D"):
        inference.predict(tiny_spec, np.random.default_rng(0).random((16, 16)), device="cpu")
    with pytest.raises(InputError, match="multiples"):
        model(torch.rand(1, 1, 8, 15, 16))


def test_sliding_window_prediction_on_a_small_stack(tiny_spec):
    rng = np.random.default_rng(2)
    prob = inference.predict(tiny_spec, rng.random((7, 20, 18)).astype(np.float32),
                             patch_size=(8, 16, 16), device="cpu")
    assert prob.shape == (7, 20, 18) and prob.dtype == np.float32
    assert 0 <= prob.min() and prob.max() <= 1


def test_registered_variants():
    slim, full = registry.get("vcnet"), registry.get("vcnet-full")
    for spec in (slim, full):
        assert spec.kind == "supervised" and spec.trainable and spec.dims == 3
        assert spec.output == "logits" and spec.architecture == "vcnet"
        assert spec.patch_size_zyx == (16, 128, 128)  # the paper's 128 x 128 x 16
        assert spec.input_multiple_zyx[0] == 4  # any stack under 5 slices gets a 4-slice patch
        assert spec.card.extra["min_slices"] == 5
    n_slim, n_full = registry.count_parameters(slim), registry.count_parameters(full)
    assert 300_000 < n_slim < 1_000_000
    assert 25_000_000 < n_full < 35_000_000  # paper: 19 M (3D U-Net) + 7.8 M (half 2D U-Net)
    with torch.device("meta"):
        assert isinstance(build_vcnet(**full.config), VCNet)


def test_untrained_model_is_refused_unless_allowed():
    name = "vcnet-full" if registry.get("vcnet").has_weights else "vcnet"  # -full ships none
    spec = registry.get(name)
    assert not spec.has_weights and not spec.usable
    with pytest.raises(InputError, match="no trained weights"):
        registry.load_model(name, "cpu")
    model, _ = registry.load_model(name, "cpu", allow_untrained=True)  # 30 M random weights
    assert not model.training
