"""Tiny labelled volumes shared by the training tests (not a test module)."""

from __future__ import annotations

import numpy as np

from napari_vessel.training.data import Pair, normalise


def bar_pair(seed: int = 0, shape=(6, 32, 32)) -> Pair:
    """Four horizontal bars through every slice, with noise: a volume any network learns fast."""
    rng = np.random.default_rng(seed)
    labels = np.zeros(shape, bool)
    for _ in range(4):
        y = rng.integers(3, shape[1] - 3)
        labels[:, y - 1:y + 2, :] = True
    return Pair(f"bars{seed}", normalise(labels * 1.0 + rng.normal(0, 0.1, shape)), labels)
