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

Both accept a ``cancel`` token (:class:`~napari_vessel.progress.CancelToken`) that the engine
passes to every classical ``predict`` taking one; it is checked between small steps (one
separable filter pass, one slab of Hessian eigenvalues, one structuring element of the ACWE
smoothing), so a cancel stops a 25 x 512 x 512 stack within a fraction of a second and raises
:class:`~napari_vessel.errors.Cancelled` with no result.
"""

from __future__ import annotations

from collections.abc import Iterator, Sequence
from typing import Any

import numpy as np

from napari_vessel.errors import InputError
from napari_vessel.models.registry import ModelSpec, register

__all__ = ["normalise", "acwe_probability", "frangi_vesselness", "frangi_probability"]

#: Voxels per slab of the pointwise Frangi steps (eigenvalues, vesselness): about 0.1 s each.
_SLAB_VOXELS = 1 << 17


def _check_cancel(cancel: Any) -> None:
    """Raise :class:`~napari_vessel.errors.Cancelled` when ``cancel`` (a CancelToken) is set."""
    if cancel is not None:
        cancel.check()


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
    from napari_vessel.io.volume import check_voxels

    volume = np.asarray(volume)
    if volume.ndim != 3:
        raise InputError(f"a 3D stack (z, y, x) is needed, got shape {volume.shape}")
    return check_voxels(volume, constant=False)


def acwe_probability(volume: np.ndarray, spacing_zyx: Sequence[float] = (1.0, 1.0, 1.0), *,
                     iterations: int = 12, smoothing: int = 1, alpha: float = 1.0,
                     beta: float = 2.0, average_last: int = 4,
                     cancel: Any = None) -> np.ndarray:
    """Morphological Chan-Vese segmentation as a probability-like map.

    The iterations are those of ``skimage.segmentation.morphological_chan_vese`` (same
    operators, same result; the smoothing alternates ``SI o IS`` and ``IS o SI`` from the
    start of every run), written out here so that ``cancel`` is checked between steps.

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
    cancel : CancelToken, optional
        Checked between the steps of every iteration.

    Returns
    -------
    ndarray of float32, shape (Z, Y, X), values in [0, 1]

    Raises
    ------
    Cancelled
        When ``cancel`` was set; nothing is returned.
    """
    from skimage.filters import threshold_otsu

    image = normalise(_check(volume))
    if iterations < 1 or average_last < 1:
        raise InputError("iterations and average_last must be at least 1")
    _check_cancel(cancel)
    u = np.int8(image > threshold_otsu(image))
    total = np.zeros(image.shape, dtype=np.float32)
    first = iterations + 1 - average_last  # level sets 0 (the start) .. iterations
    if first <= 0:
        np.add(total, u, out=total)
    smoothed = 0
    for step in range(1, iterations + 1):
        _check_cancel(cancel)
        # image attachment (paper 000, eq. 9), exactly as scikit-image computes it
        c0 = (image * (1 - u)).sum() / float((1 - u).sum() + 1e-8)
        c1 = (image * u).sum() / float(u.sum() + 1e-8)
        abs_du = np.abs(np.gradient(u)).sum(0)
        aux = abs_du * (alpha * (image - c1) ** 2 - beta * (image - c0) ** 2)
        del abs_du
        u[aux < 0] = 1
        u[aux > 0] = 0
        del aux
        for _ in range(smoothing):  # curvature (eq. 10): SI o IS, then IS o SI, alternating
            if smoothed % 2 == 0:
                u = _sup_inf(_inf_sup(u, cancel), cancel)
            else:
                u = _inf_sup(_sup_inf(u, cancel), cancel)
            smoothed += 1
        if step >= first:
            np.add(total, u, out=total)
    _check_cancel(cancel)
    return total / min(average_last, iterations + 1)


def _line_elements() -> Iterator[np.ndarray]:
    """The nine 3x3x3 line segments of the 3D SI and IS operators (scikit-image's ``_P3``)."""
    index = [0, 1, 2]
    for axes in ((slice(None), slice(None), 1), (slice(None), 1, slice(None)),
                 (1, slice(None), slice(None)), (slice(None), index, index),
                 (slice(None), index, index[::-1]), (index, slice(None), index),
                 (index, slice(None), index[::-1]), (index, index, slice(None)),
                 (index, index[::-1], slice(None))):
        element = np.zeros((3, 3, 3))
        element[axes] = 1
        yield element


def _line_extreme(u: np.ndarray, cancel: Any, erode: bool) -> np.ndarray:
    """SI (``erode``: the largest of the erosions by the nine line segments) or IS (the smallest
    of the dilations), as int8."""
    from scipy import ndimage as ndi

    morph, pick = (ndi.binary_erosion, np.maximum) if erode else (ndi.binary_dilation, np.minimum)
    out = None
    for element in _line_elements():
        _check_cancel(cancel)
        step = morph(u, element).astype(np.int8)
        out = step if out is None else pick(out, step, out=out)
    return out


def _sup_inf(u: np.ndarray, cancel: Any) -> np.ndarray:
    return _line_extreme(u, cancel, erode=True)


def _inf_sup(u: np.ndarray, cancel: Any) -> np.ndarray:
    return _line_extreme(u, cancel, erode=False)


def _hessian_elements(image: np.ndarray, sigma_um: float, spacing: Sequence[float],
                      cancel: Any = None) -> list[np.ndarray]:
    """The six Hessian elements (zz, zy, zx, yy, yx, xx) at scale ``sigma_um``, physical units.

    Gaussian second derivatives with the sigma of each axis in voxels, divided by the voxel
    sizes of the two axes. Each is ``scipy.ndimage.gaussian_filter(image, sigma, order)`` done
    as its three one-dimensional passes (what ``gaussian_filter`` does, so the same values),
    with ``cancel`` checked between passes.
    """
    from scipy import ndimage as ndi

    sigma_vox = tuple(max(sigma_um / s, 0.5) for s in spacing)
    elements = []
    for i in range(3):
        for j in range(i, 3):  # zz, zy, zx, yy, yx, xx: the order hessian_matrix_eigvals takes
            order = [0, 0, 0]
            order[i] += 1
            order[j] += 1
            h = image
            for axis in range(3):
                _check_cancel(cancel)
                h = ndi.gaussian_filter1d(h, sigma_vox[axis], axis, order[axis],
                                          output=np.empty(image.shape, image.dtype),
                                          mode="reflect", truncate=4.0)
            elements.append(h / np.float32(spacing[i] * spacing[j]))
    return elements


def _slabs(shape: Sequence[int]) -> Iterator[tuple[slice, ...]]:
    """Index ranges of about :data:`_SLAB_VOXELS` voxels: whole z planes, or rows of one."""
    z, y, x = (int(n) for n in shape)
    if y * x <= _SLAB_VOXELS:
        step = max(1, _SLAB_VOXELS // max(y * x, 1))
        for start in range(0, z, step):
            yield slice(start, start + step), slice(None), slice(None)
    else:
        step = max(1, _SLAB_VOXELS // max(x, 1))
        for plane in range(z):
            for start in range(0, y, step):
                yield slice(plane, plane + 1), slice(start, start + step), slice(None)


def frangi_vesselness(volume: np.ndarray, spacing_zyx: Sequence[float] = (1.0, 1.0, 1.0), *,
                      sigmas_um: Sequence[float] = (1.0, 2.0, 4.0), alpha: float = 0.5,
                      beta: float = 0.5, gamma: float | None = None,
                      cancel: Any = None) -> np.ndarray:
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
    cancel : CancelToken, optional
        Checked between filter passes and between slabs of the pointwise steps.

    Returns
    -------
    ndarray of float32, shape (Z, Y, X), values in [0, 1]

    Raises
    ------
    Cancelled
        When ``cancel`` was set; nothing is returned.
    """
    from skimage.feature import hessian_matrix_eigvals

    image = -np.asarray(_check(volume), dtype=np.float32)  # bright ridges -> dark, as skimage
    spacing = tuple(float(s) for s in spacing_zyx)
    best = np.zeros(image.shape, dtype=np.float32)
    for sigma in sigmas_um:
        elements = _hessian_elements(image, float(sigma), spacing, cancel)
        shape_term = None  # eq. 13 without the structureness factor, per voxel
        norm = None  # s of eq. 12, per voxel
        for where in _slabs(image.shape):  # pointwise: slab by slab gives the same values
            _check_cancel(cancel)
            eig = hessian_matrix_eigvals([h[where] for h in elements])
            eig = np.take_along_axis(eig, np.abs(eig).argsort(0), 0)
            lambda1 = eig[0]
            lambda2, lambda3 = np.maximum(eig[1:], 1e-10)
            r_a = lambda2 / lambda3  # eq. 11
            r_b = np.abs(lambda1) / np.sqrt(lambda2 * lambda3)  # eq. 10
            value = 1.0 - np.exp(-(r_a**2) / (2 * alpha**2))  # eq. 13
            value *= np.exp(-(r_b**2) / (2 * beta**2))
            s = np.sqrt((eig**2).sum(0))  # eq. 12
            if shape_term is None:
                shape_term = np.empty(image.shape, dtype=value.dtype)
                norm = np.empty(image.shape, dtype=s.dtype)
            shape_term[where], norm[where] = value, s
        del elements
        if gamma is None:  # as scikit-image: set from the first scale, kept for the others
            gamma = float(norm.max()) / 2 or 1.0
        for where in _slabs(image.shape):
            _check_cancel(cancel)
            value = shape_term[where]
            value *= 1.0 - np.exp(-(norm[where] ** 2) / (2 * gamma**2))
            np.maximum(best[where], value.astype(np.float32), out=best[where])
    _check_cancel(cancel)
    return best


def frangi_probability(volume: np.ndarray, spacing_zyx: Sequence[float] = (1.0, 1.0, 1.0), *,
                       sigmas_um: Sequence[float] = (1.0, 2.0, 4.0), alpha: float = 0.5,
                       beta: float = 0.5, cancel: Any = None) -> np.ndarray:
    """Frangi vesselness mapped to [0, 1] with an automatic threshold at 0.5.

    The threshold is Otsu's on the logarithm of the non-negligible vesselness values: the
    vesselness spans decades, and on a linear scale Otsu's threshold keeps only the brightest
    centrelines of large vessels. ``cancel`` (a CancelToken) is checked between steps, see
    :func:`frangi_vesselness`.
    """
    from skimage.filters import threshold_otsu

    image = normalise(_check(volume))
    _check_cancel(cancel)
    v = frangi_vesselness(image, spacing_zyx, sigmas_um=sigmas_um, alpha=alpha, beta=beta,
                          cancel=cancel)
    positive = v[v > 1e-6]
    if positive.size < 2 or positive.min() == positive.max():
        return np.zeros(v.shape, dtype=np.float32)
    t = float(np.exp(threshold_otsu(np.log(positive))))
    _check_cancel(cancel)
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
