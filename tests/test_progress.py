"""Progress callbacks: scaling into a parent's range, stage prefixes, cancel tokens."""

from __future__ import annotations

import pytest

from napari_vessel.errors import Cancelled
from napari_vessel.progress import CancelToken, scaled


def test_scaled_maps_into_the_parent_range_and_prefixes_messages():
    seen = []
    sub = scaled(lambda f, m: seen.append((round(f, 3), m)), 0.1, 0.5, "preprocessing")
    sub(0.0, "")
    sub(0.5, "done")
    sub(2.0, "step")  # clipped to the stage's end
    assert seen == [(0.1, ""), (0.3, "preprocessing: done"), (0.5, "preprocessing: step")]


def test_cancel_token_raises_once_cancelled():
    token = CancelToken()
    token.check()
    token.cancel()
    with pytest.raises(Cancelled):
        token.check()
