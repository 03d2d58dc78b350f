"""Depth-attenuation correction: bring every slice to a common intensity scale.

Two-photon signal fades with imaging depth (paper 001, section 4.2 and Figure S5). Per-slice median
subtraction removes the background offset; this correction goes one step further and also equalises
the gain: for every slice it measures a robust background level (a low percentile) and foreground
level (a high percentile), smooths both along z, and maps them linearly onto the median levels of
all slices. It is the "common scale" counterpart of the paper's locally adaptive future work.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import numpy as np
from scipy import ndimage as ndi

from napari_vessel.errors import InputError
from napari_vessel.preprocess._common import as_image, check_number, sample_planes

__all__ = ["correct_depth_attenuation", "DepthLevels", "depth_levels"]


@dataclass(frozen=True)
class DepthLevels:
    """Per-slice levels measured by :func:`depth_levels`.

    Attributes
    ----------
    background, foreground : ndarray of float64, shape (Z,)
        Smoothed low and high percentile of every slice.
    gain : ndarray of float64, shape (Z,)
        Factor applied to every slice after subtracting its background.
    target_background, target_foreground : float
        The common levels every slice is mapped onto (medians over the slices).
    """

    background: np.ndarray
    foreground: np.ndarray
    gain: np.ndarray
    target_background: float
    target_foreground: float


def _check_params(background: float, foreground: float, smooth: int, max_gain: float) -> tuple:
    background = check_number(background, "background percentile", low=0, high=100)
    foreground = check_number(foreground, "foreground percentile", low=0, high=100)
    if foreground <= background:
        raise InputError(f"the foreground percentile ({foreground}) must be above the background "
                         f"percentile ({background}), e.g. 5 and 99.5")
    smooth = int(check_number(smooth, "smoothing (slices)", low=1, integer=True))
    max_gain = check_number(max_gain, "max_gain", low=1)
    return background, foreground, smooth, max_gain


def depth_levels(data: Any, *, background: float = 5.0, foreground: float = 99.5,
                 smooth: int = 5, max_gain: float = 10.0) -> DepthLevels:
    """Measure the per-slice levels used by :func:`correct_depth_attenuation`.

    Parameters
    ----------
    data : NumPy or dask array, shape (Z, Y, X)
        The stack; levels are computed on a regular subsample of every slice (see
        :data:`~napari_vessel.preprocess._common.MAX_SAMPLE`).
    background, foreground, smooth, max_gain
        See :func:`correct_depth_attenuation`.

    Returns
    -------
    DepthLevels
    """
    background, foreground, smooth, max_gain = _check_params(background, foreground, smooth,
                                                             max_gain)
    if len(data.shape) != 3:
        raise InputError(f"depth correction needs a 3D stack (z, y, x), not shape {data.shape}")
    sample = sample_planes(data)
    flat = sample.reshape(sample.shape[0], -1).astype(np.float64)
    low, high = np.percentile(flat, [background, foreground], axis=1)
    if smooth > 1:  # a running median along z ignores single odd slices
        low = ndi.median_filter(low, size=smooth, mode="nearest")
        high = ndi.median_filter(high, size=smooth, mode="nearest")
    spread = high - low
    if not np.any(spread > 0):
        raise InputError("the stack has no contrast (every slice has equal background and "
                         "foreground levels); depth correction needs vessels brighter than the "
                         "background")
    target_low, target_high = float(np.median(low)), float(np.median(high))
    target_spread = max(target_high - target_low, float(spread[spread > 0].min()))
    with np.errstate(divide="ignore"):
        gain = np.where(spread > 0, target_spread / np.where(spread > 0, spread, 1.0), max_gain)
    gain = np.clip(gain, 1.0 / max_gain, max_gain)
    return DepthLevels(low, high, gain, target_low, target_high)


def apply_depth_levels(block: np.ndarray, levels: DepthLevels, z0: int = 0) -> np.ndarray:
    """Map slices ``z0 .. z0 + len(block)`` of a stack with measured levels (float32 out)."""
    z = slice(z0, z0 + block.shape[0])
    low = levels.background[z].astype(np.float32)[:, None, None]
    gain = levels.gain[z].astype(np.float32)[:, None, None]
    out = np.subtract(block, low, dtype=np.float32)
    out *= gain
    out += np.float32(levels.target_background)
    return out


def correct_depth_attenuation(image: Any, *, background: float = 5.0, foreground: float = 99.5,
                              smooth: int = 5, max_gain: float = 10.0) -> np.ndarray:
    """Bring every slice's background and foreground levels to a common scale.

    Each slice z is mapped linearly, ``out = (image - b_z) * g_z + b``, where ``b_z`` and ``f_z``
    are the slice's ``background`` and ``foreground`` percentiles (smoothed along z), ``b`` and
    ``f`` their medians over all slices, and ``g_z = (f - b) / (f_z - b_z)`` limited to
    ``[1 / max_gain, max_gain]``.

    Parameters
    ----------
    image : array-like, shape (Z, Y, X)
        The stack.
    background : float
        Percentile (0-100) that measures a slice's background level.
    foreground : float
        Percentile (0-100, above ``background``) that measures its vessel (bright) level.
    smooth : int
        Width in slices of the running median applied to the levels along z (1: none).
    max_gain : float
        Largest amplification (and attenuation) of a slice, so near-empty deep slices do not turn
        into amplified noise.

    Returns
    -------
    ndarray of float32, shape (Z, Y, X)
        A new array; the input is not modified.

    Raises
    ------
    InputError
        2D input, a stack without contrast, bad percentiles, NaN or inf values.
    """
    array = as_image(image, ndims=(3,), what="depth correction")
    levels = depth_levels(array, background=background, foreground=foreground, smooth=smooth,
                          max_gain=max_gain)
    return apply_depth_levels(array, levels)
