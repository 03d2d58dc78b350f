"""The inference engine: tiling, blending, lazy input, devices, cancel, progress, bad input."""

from __future__ import annotations

import dask.array as da
import numpy as np
import pytest
import torch
import zarr
from torch import nn

from napari_vessel.errors import Cancelled, InputError
from napari_vessel.inference.run import check_volume_array, pick_device, predict, segment
from napari_vessel.inference.sliding_window import plan_tiles, reflect_indices, tile_starts
from napari_vessel.io.volume import Volume
from napari_vessel.models import registry
from napari_vessel.models.registry import ModelSpec
from napari_vessel.models.umis import build_umis
from napari_vessel.models.weights import save_weights
from napari_vessel.progress import CancelToken

TINY = {"width": 2, "blocks": [1, 1], "strides": [[1, 2, 2], [2, 2, 2]],
        "stem_kernel": [3, 3, 3], "stem_stride": [1, 1, 1], "morph_iterations": 1}


def _pointwise() -> nn.Module:
    torch.manual_seed(0)
    return nn.Sequential(nn.Conv3d(1, 1, 1), nn.Sigmoid()).eval()


def _conv3() -> nn.Module:
    torch.manual_seed(0)
    return nn.Sequential(nn.Conv3d(1, 1, 3, padding=1), nn.Sigmoid()).eval()


def _tiny_umis() -> nn.Module:
    torch.manual_seed(0)
    return build_umis(**TINY).eval()


def _direct(model: nn.Module, volume: np.ndarray) -> np.ndarray:
    with torch.no_grad():
        return model(torch.from_numpy(volume)[None, None]).numpy()[0, 0]


@pytest.fixture
def volume() -> np.ndarray:
    return np.random.default_rng(0).random((9, 37, 30)).astype(np.float32)


def test_tiling_helpers():
    assert tile_starts(10, 4, 0.0) == [0, 3, 6]
    assert tile_starts(4, 8, 0.5) == [0]
    for n, lo, hi in ((5, -7, 14), (1, -2, 3), (2, -5, 6)):
        padded = np.pad(np.arange(n), (-lo, hi - n), mode="reflect")
        assert np.array_equal(reflect_indices(lo, hi, n, 0), padded)
    plan = plan_tiles((10, 512, 512), (32, 128, 128), 0.25, (4, 16, 16))
    assert plan.patch == (12, 128, 128) and plan.starts[0] == (0,)  # 10 slices: one 12-slice patch
    assert plan.pad_before[0] == 1 and plan.n_tiles == 25


@pytest.mark.parametrize("patch, overlap, blending", [
    ((4, 16, 16), 0.25, "gaussian"), ((3, 12, 10), 0.5, "constant"), ((9, 37, 30), 0.0, "gaussian"),
    ((16, 64, 64), 0.25, "constant"), ((2, 8, 8), 0.0, "constant"),
])
def test_pointwise_net_equals_full_pass(volume, patch, overlap, blending):
    model = _pointwise()
    prob = predict(model, volume, patch_size=patch, overlap=overlap, blending=blending,
                   batch_size=3, device="cpu")
    assert prob.dtype == np.float32 and prob.shape == volume.shape
    np.testing.assert_allclose(prob, _direct(model, volume), atol=1e-6)


def test_conv_net_in_one_patch_equals_reflect_padded_pass(volume):
    model = _conv3()
    model.input_multiple = (4, 8, 8)  # sizes must be multiples: the volume is padded to fit
    prob = predict(model, volume, patch_size=(12, 40, 32), device="cpu")
    padded = np.pad(volume, ((1, 2), (1, 2), (1, 1)), mode="reflect")
    expected = _direct(model, padded)[1:-2, 1:-2, 1:-1]
    np.testing.assert_allclose(prob, expected, atol=1e-6)


def test_result_stable_across_patch_sizes_and_overlaps(volume):
    model = _tiny_umis()
    a = predict(model, volume, patch_size=(4, 16, 16), overlap=0.5, device="cpu")
    b = predict(model, volume, patch_size=(4, 24, 20), overlap=0.5, device="cpu")
    assert a.shape == volume.shape
    assert np.mean(np.abs(a - b)) < 0.05  # same network, different tiles: nearly the same map
    c = predict(model, volume, patch_size=(4, 16, 16), overlap=0.5, device="cpu", batch_size=1)
    np.testing.assert_allclose(a, c, atol=1e-5)


def test_dask_and_zarr_equal_in_memory(volume):
    model = _tiny_umis()
    expected = predict(model, volume, patch_size=(4, 16, 16), overlap=0.25, device="cpu")
    lazy = da.from_array(volume, chunks=(5, 16, 16))
    got = predict(model, lazy, patch_size=(4, 16, 16), overlap=0.25, device="cpu",
                  block_shape=(4, 20, 12))
    np.testing.assert_allclose(got, expected, atol=1e-5)
    out = zarr.zeros(volume.shape, chunks=(4, 16, 16), dtype="float32")
    store = zarr.array(volume, chunks=(3, 16, 16))
    result = predict(model, store, patch_size=(4, 16, 16), overlap=0.25, device="cpu", out=out)
    assert result is out
    np.testing.assert_allclose(out[:], expected, atol=1e-5)


@pytest.mark.parametrize("shape", [(1, 5, 5), (3, 20, 20), (10, 24, 24), (2, 3, 40)])
def test_small_and_few_slice_volumes(shape):
    data = np.random.default_rng(1).random(shape).astype(np.float32)
    prob = predict(_tiny_umis(), data, patch_size=(32, 16, 16), device="cpu")
    assert prob.shape == shape and np.isfinite(prob).all()


def test_progress_is_monotonic_and_cancel_raises(volume):
    model = _pointwise()
    seen: list[float] = []
    predict(model, volume, patch_size=(4, 8, 8), batch_size=2, device="cpu",
            progress=lambda f, m: seen.append(f))
    assert len(seen) > 5 and seen == sorted(seen) and seen[-1] == 1.0
    token = CancelToken()

    def stop_after_two(fraction, message):
        if fraction > 0.1:
            token.cancel()

    with pytest.raises(Cancelled):
        predict(model, volume, patch_size=(4, 8, 8), batch_size=2, device="cpu",
                progress=stop_after_two, cancel=token)
    with pytest.raises(Cancelled):
        predict(model, volume, cancel=token)  # already cancelled: nothing runs


class _OOMAbove(nn.Module):
    """Runs out of 'GPU memory' when the batch is larger than ``limit``."""

    def __init__(self, limit: int) -> None:
        super().__init__()
        self.limit = limit
        self.sizes: list[int] = []

    def forward(self, x):
        self.sizes.append(x.shape[0])
        if x.shape[0] > self.limit:
            raise torch.OutOfMemoryError("CUDA out of memory. Tried to allocate 2.00 GiB")
        return torch.sigmoid(x)


def test_out_of_memory_halves_the_batch_then_gives_up(volume):
    model = _OOMAbove(limit=2)
    prob = predict(model, volume, patch_size=(4, 8, 8), batch_size=8, device="cpu")
    np.testing.assert_allclose(prob, 1 / (1 + np.exp(-volume)), atol=1e-6)
    assert model.sizes[0] == 8 and max(model.sizes[1:]) <= 4 and 2 in model.sizes
    with pytest.raises(InputError, match="lower the patch size"):
        predict(_OOMAbove(limit=0), volume, patch_size=(4, 8, 8), device="cpu")


def test_tta_keeps_a_flip_equivariant_net_unchanged(volume):
    model = _pointwise()
    np.testing.assert_allclose(predict(model, volume, tta=True, device="cpu"),
                               predict(model, volume, device="cpu"), atol=1e-6)


def test_bad_inputs(volume):
    model = _pointwise()
    bad = volume.copy()
    bad[2, 3, 4] = np.nan
    with pytest.raises(InputError, match="NaN"):
        predict(model, bad)
    with pytest.raises(InputError, match="NaN"):
        predict(model, da.from_array(bad, chunks=4), patch_size=(4, 8, 8))
    with pytest.raises(InputError, match="all zero"):
        predict(model, np.zeros((4, 8, 8), np.float32))
    with pytest.raises(InputError, match="constant"):
        predict(model, da.full((4, 8, 8), 7.0, chunks=4), patch_size=(4, 8, 8))
    with pytest.raises(InputError, match="2D"):
        predict(model, volume[0])
    with pytest.raises(InputError, match="3 channels"):
        predict(model, np.stack([volume] * 3, axis=-1))
    with pytest.raises(InputError, match="overlap"):
        predict(model, volume, overlap=1.0)
    with pytest.raises(InputError, match="blending"):
        predict(model, volume, blending="linearish")
    with pytest.raises(InputError, match="out has shape"):
        predict(model, volume, out=np.zeros((1, 2, 3), np.float32))
    with pytest.raises(InputError, match="did you mean"):
        predict("umsi", volume)
    assert check_volume_array(volume[None]).shape == volume.shape  # singleton channel dropped


def test_pick_device():
    assert pick_device("cpu").type == "cpu"
    assert pick_device(None).type in ("cpu", "cuda", "mps")
    if not torch.cuda.is_available():
        with pytest.raises(InputError, match="no CUDA"):
            pick_device("cuda")
    with pytest.raises(InputError, match="unknown device"):
        pick_device("tpu")


@pytest.fixture
def tiny_registered(tmp_path):
    model = _tiny_umis()
    weights = save_weights(model, tmp_path / "tiny-umis",
                           {"architecture": "umis", "config": TINY, "kind": "unsupervised"})
    spec = registry.register(ModelSpec(
        name="test-tiny-umis", kind="unsupervised", description="test", builder=build_umis,
        config=TINY, weights=weights, patch_size_zyx=(4, 16, 16), input_multiple_zyx=(2, 4, 4)))
    yield spec
    registry.unregister("test-tiny-umis")


def test_segment_with_a_network(volume, tiny_registered):
    vol = Volume(volume * 200 + 10, (5.0, 1.0, 1.0), source="memory")
    prob, labels, manifest = segment(vol, "test-tiny-umis", threshold=0.3, device="cpu")
    assert prob.shape == labels.shape == volume.shape and labels.dtype == np.uint8
    assert np.array_equal(labels, (prob > 0.3).astype(np.uint8))
    # the default preprocessing stretches to [0, 1]; the same as predicting on the stretched data
    stretched = (volume - volume.min()) / (volume.max() - volume.min())
    model, _ = registry.load_model("test-tiny-umis", "cpu")
    np.testing.assert_allclose(prob, predict(model, stretched, patch_size=(4, 16, 16),
                                             device="cpu"), atol=1e-5)
    assert manifest.model.weights_sha256 == tiny_registered.card.sha256
    assert manifest.device == "cpu" and manifest.input.spacing_zyx == (5.0, 1.0, 1.0)
    assert manifest.parameters.threshold == 0.3 and manifest.preprocessing
    versions = manifest.versions
    assert None not in (versions.torch, versions.napari_vessel, versions.numpy)
    assert set(manifest.timing.to_dict()) == {"preprocess_s", "predict_s", "postprocess_s"}
    with pytest.raises(InputError, match="threshold"):
        segment(vol, "test-tiny-umis", threshold=2)


def test_segment_with_a_classical_model():
    z, y, x = np.indices((12, 40, 40))
    tube = np.hypot((z - 6) * 2, y - 20) < 3.5  # along x
    data = tube * 0.8 + 0.1 + np.random.default_rng(0).normal(0, 0.05, tube.shape)
    prob, labels, manifest = segment(data.astype(np.float32), "morph-acwe", spacing_zyx=(2, 1, 1))
    assert labels[6, 20, 5:35].all() and not labels[:, 2, 2].any()
    assert manifest.model.kind == "classical" and manifest.device == "cpu"
