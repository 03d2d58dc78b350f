"""Classical (untrained) vessel segmentation, registered beside the networks for comparison.

``morph-acwe``
    Morphological active contours without edges (Márquez-Neila et al. 2014, the baseline of
    paper 000, section 3, eq. 8-10) with scikit-image's ``morphological_chan_vese``. Paper 000
    uses alpha = 1 (weight of the inside term ``(I - c1)^2``) and beta = 2 (outside term
    ``(I - c2)^2``); in scikit-image's update ``lambda1 * (I - c1)^2 - lambda2 * (I - c0)^2``
    with ``c1`` the mean inside, so alpha is ``lambda1`` and beta is ``lambda2``. Started from
    Otsu's threshold; the probability is the fraction of the last iterations in which a voxel was
    inside, so thresholding it at 0.5 gives a majority vote.
``frangi``
    Multi-scale Frangi vesselness (Frangi et al. 1998, eq. 10-13, as in
    ``skimage.filters.frangi``) with scales in micrometres converted to voxels per axis, so the
    ~5 µm slices of two-photon stacks are not treated like 1 µm pixels. The Hessian is taken in
    physical units (derivatives divided by the voxel size). The vesselness ``v`` is mapped to a
    probability ``v^2 / (v^2 + t^2)`` with ``t`` Otsu's threshold of log-vesselness, so 0.5 is
    the automatic threshold and the order of voxels (hence average precision) is kept.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np

from ..errors import InputError
from .registry import ModelSpec, register

__all__ = ["normalise", "acwe_probability", "frangi_vesselness", "frangi_probability"]


def normalise(volume: np.ndarray, low: float = 0.5, high: float = 99.5) -> np.ndarray:
    """Stretch percentiles ``low``-``high`` to [0, 1] and clip (float32)."""
    volume = np.asarray(volume, dtype=np.float32)
    lo, hi = np.percentile(volume, [low, high])
    if hi <= lo:
        lo, hi = float(volume.min()), float(volume.max())
    if hi <= lo:
        raise InputError("the image is constant: there is nothing to segment")
    return np.clip((volume - lo) / (hi - lo), 0.0, 1.0).astype(np.float32)


def _check(volume: np.ndarray) -> np.ndarray:
    volume = np.asarray(volume)
    if volume.ndim != 3:
        raise InputError(f"a 3D stack (z, y, x) is needed, got shape {volume.shape}")
    if not np.isfinite(volume).all():
        raise InputError("the image contains NaN or infinite values")
    return volume


def acwe_probability(volume: np.ndarray, spacing_zyx: Sequence[float] = (1.0, 1.0, 1.0), *,
                     iterations: int = 12, smoothing: int = 1, alpha: float = 1.0,
                     beta: float = 2.0, average_last: int = 4) -> np.ndarray:
    """Morphological Chan-Vese segmentation as a probability-like map.

    Parameters
    ----------
    volume : ndarray, shape (Z, Y, X)
    spacing_zyx : (float, float, float)
        Voxel size in µm (unused: the method works in voxels, as in the paper).
    iterations : int
        Morphological ACWE iterations (eq. 9-10).
    smoothing : int
        mu: curvature smoothing steps ``(SI o IS)`` per iteration.
    alpha, beta : float
        Weights of the inside and outside image terms (paper 000: 1 and 2).
    average_last : int
        Number of final iterations averaged into the probability.

    Returns
    -------
    ndarray of float32, shape (Z, Y, X), values in [0, 1]
    """
    from skimage.filters import threshold_otsu
    from skimage.segmentation import morphological_chan_vese

    image = normalise(_check(volume))
    if iterations < 1 or average_last < 1:
        raise InputError("iterations and average_last must be at least 1")
    init = image > threshold_otsu(image)
    total = np.zeros(image.shape, dtype=np.float32)
    calls = [0]  # the callback sees the initial level set, then one per iteration

    def collect(level_set: np.ndarray) -> None:
        calls[0] += 1
        if calls[0] > iterations + 1 - average_last:
            np.add(total, level_set, out=total)

    morphological_chan_vese(image, iterations, init_level_set=init, smoothing=smoothing,
                            lambda1=alpha, lambda2=beta, iter_callback=collect)
    return total / min(average_last, iterations + 1)


def _hessian_eigenvalues(image: np.ndarray, sigma_um: float,
                         spacing: Sequence[float]) -> np.ndarray:
    """Eigenvalues (3, Z, Y, X) of the Hessian at scale ``sigma_um``, in physical units.

    Gaussian second derivatives (``scipy.ndimage.gaussian_filter`` with ``order``) with the
    sigma of each axis in voxels, divided by the voxel sizes of the two axes.
    """
    from scipy import ndimage as ndi
    from skimage.feature import hessian_matrix_eigvals

    sigma_vox = tuple(max(sigma_um / s, 0.5) for s in spacing)
    elements = []
    for i in range(3):
        for j in range(i, 3):  # zz, zy, zx, yy, yx, xx: the order hessian_matrix_eigvals takes
            order = [0, 0, 0]
            order[i] += 1
            order[j] += 1
            h = ndi.gaussian_filter(image, sigma_vox, order=order, mode="reflect", truncate=4.0)
            elements.append(h / np.float32(spacing[i] * spacing[j]))
    return hessian_matrix_eigvals(elements)


def frangi_vesselness(volume: np.ndarray, spacing_zyx: Sequence[float] = (1.0, 1.0, 1.0), *,
                      sigmas_um: Sequence[float] = (1.0, 2.0, 4.0), alpha: float = 0.5,
                      beta: float = 0.5, gamma: float | None = None) -> np.ndarray:
    """Frangi vesselness of bright tubes with scales in µm (Frangi 1998, eq. 10-13).

    With isotropic spacing this follows ``skimage.filters.frangi(volume, sigmas,
    black_ridges=False)`` for ``sigmas = sigmas_um / spacing`` (same formula; the Gaussian
    derivative kernels are truncated at 4 sigma here, which keeps large volumes fast).

    Parameters
    ----------
    volume : ndarray, shape (Z, Y, X)
    spacing_zyx : (float, float, float)
        Voxel size in µm.
    sigmas_um : sequence of float
        Scales (Gaussian sigma) in µm, about the vessel radii to find.
    alpha, beta : float
        Sensitivity to plate-likeness and blob-likeness.
    gamma : float, optional
        Structureness scale; default half the largest Hessian norm at the first scale.

    Returns
    -------
    ndarray of float32, shape (Z, Y, X), values in [0, 1]
    """
    image = -np.asarray(_check(volume), dtype=np.float32)  # bright ridges -> dark, as skimage
    spacing = tuple(float(s) for s in spacing_zyx)
    best = np.zeros(image.shape, dtype=np.float32)
    for sigma in sigmas_um:
        eig = _hessian_eigenvalues(image, float(sigma), spacing)
        eig = np.take_along_axis(eig, np.abs(eig).argsort(0), 0)
        lambda1 = eig[0]
        lambda2, lambda3 = np.maximum(eig[1:], 1e-10)
        r_a = lambda2 / lambda3  # eq. 11
        r_b = np.abs(lambda1) / np.sqrt(lambda2 * lambda3)  # eq. 10
        s = np.sqrt((eig**2).sum(0))  # eq. 12
        if gamma is None:  # as scikit-image: set from the first scale, kept for the others
            gamma = float(s.max()) / 2 or 1.0
        value = 1.0 - np.exp(-(r_a**2) / (2 * alpha**2))  # eq. 13
        value *= np.exp(-(r_b**2) / (2 * beta**2))
        value *= 1.0 - np.exp(-(s**2) / (2 * gamma**2))
        np.maximum(best, value.astype(np.float32), out=best)
    return best


def frangi_probability(volume: np.ndarray, spacing_zyx: Sequence[float] = (1.0, 1.0, 1.0), *,
                       sigmas_um: Sequence[float] = (1.0, 2.0, 4.0), alpha: float = 0.5,
                       beta: float = 0.5) -> np.ndarray:
    """Frangi vesselness mapped to [0, 1] with an automatic threshold at 0.5.

    The threshold is Otsu's on the logarithm of the non-negligible vesselness values: the
    vesselness spans decades, and on a linear scale Otsu's threshold keeps only the brightest
    centrelines of large vessels.
    """
    from skimage.filters import threshold_otsu

    v = frangi_vesselness(normalise(_check(volume)), spacing_zyx, sigmas_um=sigmas_um,
                          alpha=alpha, beta=beta)
    positive = v[v > 1e-6]
    if positive.size < 2 or positive.min() == positive.max():
        return np.zeros(v.shape, dtype=np.float32)
    t = float(np.exp(threshold_otsu(np.log(positive))))
    v2 = v.astype(np.float64) ** 2
    return (v2 / (v2 + t * t)).astype(np.float32)


register(ModelSpec(
    name="morph-acwe",
    kind="classical",
    description="Morphological active contours without edges (alpha=1, beta=2), no training",
    predict=acwe_probability,
    config={"iterations": 12, "smoothing": 1, "alpha": 1.0, "beta": 2.0, "average_last": 4},
    trainable=False,
    patch_size_zyx=(1, 1, 1),
))

register(ModelSpec(
    name="frangi",
    kind="classical",
    description="Frangi vesselness (scales 1-4 µm per axis) with Otsu's threshold, no training",
    predict=frangi_probability,
    config={"sigmas_um": [1.0, 2.0, 4.0], "alpha": 0.5, "beta": 0.5},
    trainable=False,
    patch_size_zyx=(1, 1, 1),
))
