"""Classical models: Frangi (µm scales per axis) and morphological ACWE on small synthetic tubes."""

from __future__ import annotations

import numpy as np
import pytest
from skimage.filters import frangi

from napari_vessel.errors import InputError
from napari_vessel.inference.run import predict
from napari_vessel.models import registry
from napari_vessel.models.classical import (
    acwe_probability,
    frangi_probability,
    frangi_vesselness,
    normalise,
)


def _tube(axis: str = "x", shape=(12, 40, 40), z_scale: float = 2.0, radius: float = 3.5):
    """A bright tube (radius in µm with z voxels ``z_scale`` µm deep) in noise, and its mask."""
    z, y, x = np.indices(shape)
    if axis == "x":
        dist = np.hypot((z - shape[0] / 2) * z_scale, y - shape[1] / 2)
    else:
        dist = np.hypot(y - shape[1] / 2, x - shape[2] / 2)
    mask = dist < radius
    noise = np.random.default_rng(0).normal(0, 0.05, shape)
    return (mask * 0.8 + 0.1 + noise).astype(np.float32), mask


def _dice(a: np.ndarray, b: np.ndarray) -> float:
    return 2 * np.logical_and(a, b).sum() / (a.sum() + b.sum())


def test_registered_as_classical():
    for name in ("frangi", "morph-acwe"):
        spec = registry.get(name)
        assert spec.kind == "classical" and not spec.trainable and spec.usable
    assert registry.get("morph-acwe").config["alpha"] == 1.0
    assert registry.get("morph-acwe").config["beta"] == 2.0


def test_frangi_follows_skimage_on_isotropic_voxels():
    image, _ = _tube(shape=(16, 32, 32), z_scale=1.0)
    ours = frangi_vesselness(image, (2.0, 2.0, 2.0), sigmas_um=(3.0, 6.0))
    ref = frangi(image, sigmas=(1.5, 3.0), black_ridges=False, mode="reflect")
    assert np.corrcoef(ours.ravel(), ref.ravel())[0, 1] > 0.999
    assert np.quantile(np.abs(ours - ref), 0.99) < 0.02  # only the kernel truncation differs


@pytest.mark.parametrize("axis", ["x", "z"])
def test_frangi_finds_tubes_in_anisotropic_stacks(axis):
    image, mask = _tube(axis)
    prob = frangi_probability(image, (2.0, 1.0, 1.0))
    assert prob.dtype == np.float32 and 0 <= prob.min() and prob.max() <= 1
    assert prob[mask].mean() > 0.9 > 0.5 > prob[~mask].mean()
    assert np.median(prob[mask]) > 0.99 and np.median(prob[~mask]) < 0.01


@pytest.mark.parametrize("axis", ["x", "z"])
def test_acwe_segments_tubes(axis):
    image, mask = _tube(axis)
    prob = acwe_probability(image, (2.0, 1.0, 1.0))
    assert prob.dtype == np.float32 and set(np.unique(prob)) <= {0, 0.25, 0.5, 0.75, 1}
    assert _dice(prob > 0.5, mask) > 0.65


def test_through_the_engine_and_bad_input():
    image, mask = _tube()
    prob = predict("frangi", image, spacing_zyx=(2.0, 1.0, 1.0))
    assert prob.shape == image.shape and prob[mask].mean() > 0.9
    with pytest.raises(InputError, match="constant"):
        normalise(np.full((3, 4, 4), 5.0))
    with pytest.raises(InputError, match="3D"):
        frangi_probability(image[0])
    with pytest.raises(InputError, match="at least 1"):
        acwe_probability(image, iterations=0)
