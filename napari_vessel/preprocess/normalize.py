"""Intensity normalisation: z-score, and percentile stretching to [0, 1] (what the models expect).

Both use global statistics measured on a regular subsample of every slice (at most 4 million
voxels, every voxel of smaller stacks), so a dask stack processed chunk by chunk gives exactly the
same result as the same stack in memory.
"""

from __future__ import annotations

from typing import Any

import numpy as np

from napari_vessel.errors import InputError
from napari_vessel.preprocess._common import as_image, check_number, sample_planes

__all__ = ["zscore", "percentile_stretch", "zscore_stats", "stretch_range"]


def zscore_stats(data: Any) -> tuple[float, float]:
    """Mean and standard deviation of a stack (NumPy or dask), from the regular subsample."""
    sample = sample_planes(data).astype(np.float64)
    mean, std = float(sample.mean()), float(sample.std())
    if not std > 0:
        raise InputError(f"the image is constant (every value is {mean:g}); z-scoring needs some "
                         "contrast - check that the right channel and slices were loaded")
    return mean, std


def zscore(image: Any) -> np.ndarray:
    """Subtract the mean and divide by the standard deviation.

    Parameters
    ----------
    image : array-like, shape (Z, Y, X) or (Y, X)

    Returns
    -------
    ndarray of float32, same shape
        Mean about 0 and standard deviation about 1 (exactly, for stacks of at most 4 million
        voxels).

    Raises
    ------
    InputError
        Constant or empty image; NaN or inf values.
    """
    array = as_image(image, what="z-scoring")
    mean, std = zscore_stats(array)
    return apply_zscore(array, mean, std)


def apply_zscore(block: np.ndarray, mean: float, std: float) -> np.ndarray:
    """``(block - mean) / std`` as float32."""
    out = np.subtract(block, np.float32(mean), dtype=np.float32)
    out *= np.float32(1.0 / std)
    return out


def _check_levels(low: float, high: float) -> tuple[float, float]:
    low = check_number(low, "low percentile", low=0, high=100)
    high = check_number(high, "high percentile", low=0, high=100)
    if high <= low:
        raise InputError(f"the high percentile ({high}) must be above the low one ({low}), "
                         "e.g. 1 and 99.8")
    return low, high


def stretch_range(data: Any, low: float = 1.0, high: float = 99.8) -> tuple[float, float]:
    """The intensities that :func:`percentile_stretch` maps to 0 and 1.

    When the two percentiles coincide (a mostly empty stack, e.g. after median subtraction of
    sparse vessels) the sample's minimum and maximum are used instead.
    """
    low, high = _check_levels(low, high)
    sample = sample_planes(data).astype(np.float64)
    lo, hi = (float(v) for v in np.percentile(sample, [low, high]))
    if hi <= lo:
        lo, hi = float(sample.min()), float(sample.max())
    if hi <= lo:
        raise InputError(f"the image is constant (every value is {lo:g}); a percentile stretch "
                         "needs some contrast - check that the right channel and slices were "
                         "loaded")
    return lo, hi


def apply_stretch(block: np.ndarray, lo: float, hi: float) -> np.ndarray:
    """``clip((block - lo) / (hi - lo), 0, 1)`` as float32."""
    out = np.subtract(block, np.float32(lo), dtype=np.float32)
    out *= np.float32(1.0 / (hi - lo))
    np.clip(out, 0.0, 1.0, out=out)
    return out


def percentile_stretch(image: Any, *, low: float = 1.0, high: float = 99.8) -> np.ndarray:
    """Map the ``low`` percentile to 0 and the ``high`` percentile to 1, clipping outside.

    Parameters
    ----------
    image : array-like, shape (Z, Y, X) or (Y, X)
    low, high : float
        Percentiles in [0, 100], ``low < high``.

    Returns
    -------
    ndarray of float32, same shape, values in [0, 1]

    Raises
    ------
    InputError
        Constant or empty image; bad percentiles; NaN or inf values.

    Examples
    --------
    >>> import numpy as np
    >>> percentile_stretch(np.array([[0.0, 5.0, 10.0]]), low=0, high=100)
    array([[0. , 0.5, 1. ]], dtype=float32)
    """
    array = as_image(image, what="percentile stretching")
    lo, hi = stretch_range(array, low, high)
    return apply_stretch(array, lo, hi)
