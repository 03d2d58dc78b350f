"""A cancel pressed while the last (or only) batch computes still cancels: no result comes back,
so no layer is added and no file is written. Not a timing test."""

from __future__ import annotations

import numpy as np
import pytest

from napari_vessel.errors import Cancelled
from napari_vessel.inference.run import segment
from napari_vessel.progress import CancelToken


@pytest.mark.parametrize("runtime", ["torch", "auto"])
def test_cancel_during_the_only_batch_returns_nothing(runtime, tmp_path):
    token = CancelToken()

    def progress(fraction, message):
        if "patch" in message:  # reported after the network pass of the single patch
            token.cancel()

    data = (np.random.default_rng(0).random((8, 64, 64)) * 200).astype(np.uint8)
    with pytest.raises(Cancelled):
        segment(data, "tvnet", device="cpu", runtime=runtime, progress=progress, cancel=token)


def _families():
    """One shipped model per architecture (every model family, classical ones included)."""
    import warnings

    from napari_vessel.models import registry

    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        specs = [s for s in registry.list_models() if s.usable and s.source == "builtin"]
    return list({s.architecture: s.name for s in specs}.values())


@pytest.mark.parametrize("name", _families())
def test_every_model_family_cancelled_in_its_last_step_returns_nothing(name):
    """PyTorch (no export to build): the cancel comes while the only batch, or the classical
    filter, computes; the run must raise and hand back nothing."""
    token = CancelToken()
    seen = []

    def progress(fraction, message):
        seen.append(message)
        if "patch" in message or "running" in message:
            token.cancel()

    data = (np.random.default_rng(0).random((8, 64, 64)) * 200).astype(np.uint8)
    with pytest.raises(Cancelled):
        segment(data, name, device="cpu", runtime="torch", progress=progress, cancel=token)
    assert token.cancelled and seen, seen


class _CancelAt(CancelToken):
    """A token that is set by its own ``at``-th check: a cancel pressed in the middle of the run."""

    def __init__(self, at: int) -> None:
        super().__init__()
        self.at, self.checks = at, 0

    def check(self) -> None:
        self.checks += 1
        if self.checks == self.at:
            self.cancel()
        super().check()


@pytest.mark.parametrize("name", ["frangi", "morph-acwe"])
@pytest.mark.parametrize("at", [3, 8, 25])
def test_a_classical_filter_stops_inside_its_work(name, at):
    """The classical filters check the token between their steps (a filter pass, a slab, an
    erosion): the run stops at the first check after the cancel and returns nothing."""
    token = _CancelAt(at)
    data = (np.random.default_rng(0).random((8, 64, 64)) * 200).astype(np.uint8)
    result = None
    with pytest.raises(Cancelled):
        result = segment(data, name, device="cpu", cancel=token)
    assert result is None
    assert token.checks == at  # stopped at once, not after the whole filter


def test_a_classical_predict_without_cancel_still_runs():
    """A user's classical method that takes no ``cancel`` keyword is called as before."""
    from napari_vessel.models.registry import ModelSpec

    spec = ModelSpec(name="flat-half", kind="classical", description="test",
                     predict=lambda volume, spacing: np.full(volume.shape, 0.5, np.float32),
                     patch_size_zyx=(1, 1, 1))
    data = (np.random.default_rng(0).random((4, 16, 16)) * 200).astype(np.uint8)
    prob, labels, _ = segment(data, spec, cancel=CancelToken())
    assert prob.shape == data.shape


def test_the_interruptible_filters_give_the_same_values(monkeypatch):
    """Checking the token changes nothing: slabs give the one-piece values, and the written-out
    ACWE gives scikit-image's morphological_chan_vese."""
    from skimage.filters import threshold_otsu
    from skimage.segmentation import morphological_chan_vese

    from napari_vessel.models import classical

    image = np.random.default_rng(1).random((10, 30, 40)).astype(np.float32)
    whole = classical.frangi_vesselness(image, (2.0, 1.0, 1.0))
    monkeypatch.setattr(classical, "_SLAB_VOXELS", 500)  # many slabs, rows of a plane too
    np.testing.assert_array_equal(classical.frangi_vesselness(image, (2.0, 1.0, 1.0),
                                                              cancel=CancelToken()), whole)
    norm = classical.normalise(image)
    steps = []
    morphological_chan_vese(norm, 4, init_level_set=norm > threshold_otsu(norm), smoothing=1,
                            lambda1=1.0, lambda2=2.0, iter_callback=lambda u: steps.append(u.copy()))
    ours = classical.acwe_probability(image, iterations=4, average_last=2)
    np.testing.assert_array_equal(ours, (steps[-1] + steps[-2].astype(np.float32)) / 2)


def test_the_pytorch_forward_pass_stops_between_its_layers():
    """With PyTorch, a cancel pressed inside one forward pass stops it before the next layer (one
    pass of a big network over a whole stack takes seconds); the hooks are gone afterwards."""
    import torch

    from napari_vessel.inference.run import predict

    token = CancelToken()
    ran = []

    class Press(torch.nn.Module):
        def forward(self, x):
            token.cancel()  # the user presses Cancel while this layer computes
            return x

    class Later(torch.nn.Module):
        def forward(self, x):
            ran.append(True)
            return x

    net = torch.nn.Sequential(Press(), torch.nn.Conv3d(1, 1, 1), Later()).eval()
    data = np.random.default_rng(0).random((4, 16, 16)).astype(np.float32)
    with pytest.raises(Cancelled):
        predict(net, data, device="cpu", runtime="torch", patch_size=(4, 16, 16), cancel=token)
    assert not ran
    assert all(not m._forward_pre_hooks for m in net.modules())
    out = predict(net, data, device="cpu", runtime="torch", patch_size=(4, 16, 16))
    assert out.shape == data.shape and ran
