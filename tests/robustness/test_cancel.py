"""A cancel pressed while the last (or only) batch computes still cancels: no result comes back,
so no layer is added and no file is written. Not a timing test."""

from __future__ import annotations

import numpy as np
import pytest

from napari_vessel.errors import Cancelled
from napari_vessel.inference import segment
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
