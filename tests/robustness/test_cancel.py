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
