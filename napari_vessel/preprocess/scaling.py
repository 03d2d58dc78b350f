"""Histogram scaling: multiply a stack by a factor so its intensities match a reference.

Paper 001 (section 4.2): data from the second microscope (12-bit detector) differed from the
training data (16-bit) by the scale of its intensity histogram, not its shape; the authors multiplied
it by a non-negative factor chosen by hand (16) and named automatic choice as future work. Here the
factor is estimated automatically against a reference, which is either another stack or an
*intensity profile* (a few percentiles, as stored in a model card), and the user may override it.

Two estimators:

``"histogram"`` (default)
    Minimises the Wasserstein-1 (earth mover's) distance between the scaled histogram and the
    reference, ``W1 = integral |f * Q_image(p) - Q_ref(p)| dp`` over the quantile functions ``Q``,
    approximated at the reference's percentile levels. The minimiser is the weighted median of the
    ratios ``Q_ref / Q_image`` with weights ``Q_image * dp``: exact, no search.
``"percentiles"``
    The median of the log-ratios ``log(Q_ref / Q_image)`` over the profile's percentile levels.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

import numpy as np

from napari_vessel.errors import InputError
from napari_vessel.preprocess._common import as_image, check_number, sample_planes

__all__ = ["scale_intensity", "estimate_scale_factor", "intensity_profile", "check_profile",
           "PROFILE_PERCENTILES", "METHODS"]

#: Percentile levels stored in an intensity profile by default (dense enough for the histogram
#: distance, small enough for a model card).
PROFILE_PERCENTILES = (0.5, 1, 2, 5, 10, 20, 30, 40, 50, 60, 70, 80, 90, 95, 98, 99, 99.5, 99.9)
#: Ways to estimate the factor.
METHODS = ("histogram", "percentiles")


def scale_intensity(image: Any, factor: float) -> np.ndarray:
    """Multiply a stack by a positive factor.

    Parameters
    ----------
    image : array-like, shape (Z, Y, X) or (Y, X)
        Any real dtype.
    factor : float
        Positive, finite factor (e.g. 16 to bring 12-bit data to a 16-bit scale).

    Returns
    -------
    ndarray of float32
        ``image * factor`` as float32. The result never wraps around or saturates: a uint16 voxel
        of 65535 times 16 becomes 1048560.0. Convert back to an integer type yourself if needed.

    Raises
    ------
    InputError
        Zero, negative or non-finite factor; empty input; NaN or inf values.
    """
    factor = check_number(factor, "scaling factor", low=0, low_open=True)
    array = as_image(image, what="histogram scaling")
    return array * np.float32(factor)


def intensity_profile(image: Any, percentiles: Sequence[float] = PROFILE_PERCENTILES) -> dict:
    """The intensity percentiles of a stack, as stored in a model card.

    Parameters
    ----------
    image : NumPy or dask array, shape (Z, Y, X) or (Y, X)
        The stack (a regular subsample of at most 4 million voxels is used).
    percentiles : sequence of float
        Increasing levels in [0, 100].

    Returns
    -------
    dict
        ``{"percentiles": [...], "values": [...]}`` with plain Python floats (JSON-able).

    Examples
    --------
    >>> import numpy as np
    >>> intensity_profile(np.arange(101.0)[None], [1, 50, 99])
    {'percentiles': [1.0, 50.0, 99.0], 'values': [1.0, 50.0, 99.0]}
    """
    levels = _check_levels(percentiles)
    if len(image.shape) not in (2, 3) or 0 in image.shape:
        raise InputError(f"an intensity profile needs a non-empty 2D or 3D image, not shape "
                         f"{tuple(image.shape)}")
    values = np.percentile(sample_planes(image).astype(np.float64), levels)
    return {"percentiles": [float(p) for p in levels], "values": [float(v) for v in values]}


def _check_levels(percentiles: Sequence[float]) -> np.ndarray:
    try:
        levels = np.asarray(percentiles, dtype=np.float64).ravel()
    except (TypeError, ValueError) as err:
        raise InputError(f"percentiles must be numbers, not {percentiles!r}") from err
    if levels.size == 0 or not np.all(np.isfinite(levels)) or levels.min() < 0 or levels.max() > 100:
        raise InputError(f"percentiles must be numbers in [0, 100], not {list(levels)}")
    if np.any(np.diff(levels) <= 0):
        raise InputError(f"percentiles must increase, not {list(levels)}")
    return levels


def check_profile(profile: Any) -> dict:
    """Validate an intensity profile ``{"percentiles": [...], "values": [...]}``; return a copy."""
    if not isinstance(profile, Mapping) or not {"percentiles", "values"} <= set(profile):
        raise InputError("an intensity profile is a dict with 'percentiles' and 'values' lists, "
                         "e.g. {'percentiles': [1, 50, 99], 'values': [3.0, 40.0, 900.0]}; make "
                         "one with intensity_profile(reference_image)")
    levels = _check_levels(profile["percentiles"])
    try:
        values = np.asarray(profile["values"], dtype=np.float64).ravel()
    except (TypeError, ValueError) as err:
        raise InputError(f"profile values must be numbers, not {profile['values']!r}") from err
    if values.shape != levels.shape:
        raise InputError(f"the profile has {levels.size} percentiles but {values.size} values; "
                         "give one value per percentile")
    if not np.all(np.isfinite(values)) or np.any(np.diff(values) < 0):
        raise InputError("profile values must be finite and non-decreasing (one per percentile)")
    return {"percentiles": [float(p) for p in levels], "values": [float(v) for v in values]}


def _as_profile(reference: Any) -> dict:
    if isinstance(reference, Mapping):
        return check_profile(reference)
    if hasattr(reference, "shape"):
        # a dense, evenly spaced set of levels approximates the W1 integral well
        return intensity_profile(reference, np.arange(0.5, 100.0, 1.0))
    raise InputError(f"the reference must be an image or an intensity profile dict, not "
                     f"{type(reference).__name__}")


def _weighted_median(values: np.ndarray, weights: np.ndarray) -> float:
    order = np.argsort(values)
    values, cumulative = values[order], np.cumsum(weights[order])
    return float(values[np.searchsorted(cumulative, 0.5 * cumulative[-1])])


def estimate_scale_factor(image: Any, reference: Any, *, method: str = "histogram") -> float:
    """Estimate the factor that brings ``image``'s intensity histogram onto a reference.

    Parameters
    ----------
    image : NumPy or dask array, shape (Z, Y, X) or (Y, X)
        The stack to be scaled.
    reference : array-like or dict
        Another image (e.g. from the training microscope) or an intensity profile
        ``{"percentiles": [...], "values": [...]}`` as made by :func:`intensity_profile` and
        stored in a model card.
    method : {"histogram", "percentiles"}
        ``"histogram"`` minimises the Wasserstein-1 distance between the histograms (weighted
        median of the quantile ratios); ``"percentiles"`` takes the median ratio of the profile's
        percentiles (see the module notes).

    Returns
    -------
    float
        The factor; multiply with :func:`scale_intensity`. Recovers a pure scaling exactly and
        a scaling with different noise or quantisation (12-bit vs 16-bit) within a few percent.

    Raises
    ------
    InputError
        Unknown method; bad profile; an image or reference with no positive intensities.
    """
    if method not in METHODS:
        raise InputError(f"unknown method {method!r}; use one of {', '.join(METHODS)}")
    profile = _as_profile(reference)
    levels = np.asarray(profile["percentiles"])
    ref = np.asarray(profile["values"])
    if len(image.shape) not in (2, 3) or 0 in image.shape:
        raise InputError(f"cannot scale an image of shape {tuple(image.shape)}; give a non-empty "
                         "2D or 3D image")
    mine = np.percentile(sample_planes(image).astype(np.float64), levels)
    usable = (mine > 0) & (ref > 0)
    if not np.any(usable):
        what = "image" if not np.any(mine > 0) else "reference"
        raise InputError(f"the {what} has no positive intensities at the profile's percentiles "
                         f"({list(levels)}); scaling needs signal above 0 (is it empty or constant "
                         "0?)")
    ratios = ref[usable] / mine[usable]
    if method == "percentiles":
        return float(np.exp(np.median(np.log(ratios))))
    # quadrature weight dp of each level: half the distance to its neighbours (ends to 0 / 100)
    edges = np.concatenate([[0.0], 0.5 * (levels[1:] + levels[:-1]), [100.0]])
    dp = np.diff(edges)[usable]
    return _weighted_median(ratios, mine[usable] * dp)
