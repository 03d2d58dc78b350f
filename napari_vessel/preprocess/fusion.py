"""Multi-focus fusion of confocal stacks: one all-in-focus image, or a sharpened stack.

Paper 003 (section II.A, "Image preprocessing"): each confocal slice captures only the part of the
vessel network near its focal plane, so the stack is fused into a single multi-focus image before
contrast enhancement. The method here is the classic pixel-wise decision-map fusion:

1. a focus measure per pixel and slice: the local energy of the Laplacian (the mean of the squared
   2D Laplacian over a window; sharp detail gives large second derivatives) or the local variance;
2. the decision map: for every pixel, the slice with the largest focus measure;
3. the decision map is smoothed by a median filter (consistency check: isolated decisions inside a
   region that is sharp elsewhere are replaced by their neighbours' choice);
4. the fused image takes every pixel from the slice its decision names; that slice index is also
   returned as the depth map.

The sliding-window variant fuses every window of ``depth_window`` neighbouring slices, which sharpens
a stack without flattening it.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import numpy as np
from scipy import ndimage as ndi

from napari_vessel.errors import InputError
from napari_vessel.preprocess._common import as_image, check_number, plane_map

__all__ = ["focus_measure", "fuse_focus", "focus_stack", "FusionResult", "MEASURES"]

#: Focus measures.
MEASURES = ("laplacian", "variance")


@dataclass(frozen=True)
class FusionResult:
    """An all-in-focus image and where each of its pixels came from.

    Attributes
    ----------
    image : ndarray of float32, shape (Y, X)
        The fused image.
    depth : ndarray of int32, shape (Y, X)
        Index of the slice each pixel was taken from.
    """

    image: np.ndarray
    depth: np.ndarray


def _check(measure: str, window: int, smooth: int, shape: tuple[int, ...]) -> tuple[int, int]:
    if measure not in MEASURES:
        raise InputError(f"unknown focus measure {measure!r}; use one of {', '.join(MEASURES)}")
    window = int(check_number(window, "focus window", low=1, integer=True))
    smooth = int(check_number(smooth, "decision smoothing", low=0, integer=True))
    if max(window, smooth) > min(shape[-2:]):
        raise InputError(f"the focus window ({window}) or smoothing ({smooth}) is larger than the "
                         f"slices {shape[-2:]}; use smaller values (they are in pixels)")
    return window, smooth


def _measure_plane(plane: np.ndarray, measure: str, window: int) -> np.ndarray:
    if measure == "variance":
        mean = ndi.uniform_filter(plane, window, mode="reflect")
        out = ndi.uniform_filter(plane * plane, window, mode="reflect")
        out -= mean * mean
        return np.maximum(out, 0, out=out)
    laplace = ndi.correlate1d(plane, [1.0, -2.0, 1.0], axis=0, mode="reflect")
    laplace += ndi.correlate1d(plane, [1.0, -2.0, 1.0], axis=1, mode="reflect")
    np.square(laplace, out=laplace)
    return ndi.uniform_filter(laplace, window, mode="reflect")


def _measure_block(planes: np.ndarray, measure: str, window: int) -> np.ndarray:
    """Focus measure of every slice, one slice at a time (its temporaries stay in the cache)."""
    out = np.empty(planes.shape, dtype=np.float32)
    for i, plane in enumerate(planes):
        out[i] = _measure_plane(plane, measure, window)
    return out


def focus_measure(stack: Any, *, measure: str = "laplacian", window: int = 9) -> np.ndarray:
    """Per-pixel sharpness of every slice.

    Parameters
    ----------
    stack : array-like, shape (Z, Y, X)
    measure : {"laplacian", "variance"}
        Local energy of the 2D Laplacian, or local variance.
    window : int
        Side of the square window (pixels) the measure is averaged over.

    Returns
    -------
    ndarray of float32, shape (Z, Y, X)
        Larger is sharper.
    """
    array = as_image(stack, ndims=(3,), what="multi-focus fusion")
    window, _ = _check(measure, window, 0, array.shape)
    return plane_map(lambda block: _measure_block(block, measure, window), array)


def _median_depth(depth: np.ndarray, n_levels: int, size: int) -> np.ndarray:
    """Exactly ``ndi.median_filter(depth, size, mode="nearest")``, faster for few levels.

    Slice indices below 256 with an odd window use scikit-image's sliding-histogram median on
    the edge-padded map (every window then holds ``size**2`` pixels, as in SciPy's).
    """
    if n_levels > 256 or size % 2 == 0:
        return ndi.median_filter(depth, size=size, mode="nearest")
    pad = size // 2
    padded = np.pad(depth.astype(np.uint8), pad, mode="edge")
    from skimage.filters.rank import median as rank_median  # 0.1 s to import: on use

    out = rank_median(padded, np.ones((size, size), dtype=bool))
    return out[pad:-pad, pad:-pad].astype(np.int32)


def _decide(focus: np.ndarray, smooth: int) -> np.ndarray:
    depth = np.argmax(focus, axis=0).astype(np.int32)
    if smooth > 1:
        depth = _median_depth(depth, focus.shape[0], smooth)
    return depth


def fuse_focus(stack: Any, *, measure: str = "laplacian", window: int = 9,
               smooth: int = 5) -> FusionResult:
    """Fuse a confocal stack into one all-in-focus image (paper 003, section II.A).

    Parameters
    ----------
    stack : array-like, shape (Z, Y, X)
        Slices focused at different depths.
    measure : {"laplacian", "variance"}
        Focus measure (see :func:`focus_measure`).
    window : int
        Window (pixels) of the focus measure.
    smooth : int
        Size (pixels) of the median filter applied to the decision map; 0 or 1 for none.

    Returns
    -------
    FusionResult
        ``image`` (float32, Y x X) and ``depth`` (int32 slice index per pixel).

    Raises
    ------
    InputError
        2D input, unknown measure, window larger than the slices, NaN or inf values.
    """
    array = as_image(stack, ndims=(3,), what="multi-focus fusion")
    window, smooth = _check(measure, window, smooth, array.shape)
    focus = plane_map(lambda block: _measure_block(block, measure, window), array)
    depth = _decide(focus, smooth)
    image = np.take_along_axis(array, depth[None].astype(np.intp), axis=0)[0]
    return FusionResult(image.astype(np.float32, copy=False), depth)


def focus_stack_block(array: np.ndarray, *, depth_window: int, measure: str, window: int,
                      smooth: int) -> np.ndarray:
    """Sliding-window fusion of a (Z, Y, X) float32 block; windows are cut at its ends."""
    focus = plane_map(lambda block: _measure_block(block, measure, window), array)
    half = depth_window // 2
    out = np.empty(array.shape, dtype=np.float32)
    for z in range(array.shape[0]):
        lo, hi = max(0, z - half), min(array.shape[0], z + half + 1)
        depth = _decide(focus[lo:hi], smooth)
        out[z] = np.take_along_axis(array[lo:hi], depth[None].astype(np.intp), axis=0)[0]
    return out


def focus_stack(stack: Any, *, depth_window: int = 5, measure: str = "laplacian", window: int = 9,
                smooth: int = 5) -> np.ndarray:
    """Sharpen a stack: every slice becomes the fusion of its ``depth_window`` neighbours.

    Parameters
    ----------
    stack : array-like, shape (Z, Y, X)
    depth_window : int
        Odd number of slices fused into each output slice (1 returns the stack unchanged).
        At the top and bottom the window is cut at the stack's ends.
    measure, window, smooth
        As in :func:`fuse_focus`.

    Returns
    -------
    ndarray of float32, shape (Z, Y, X)
        A new array; every output pixel is a voxel of the input from a nearby slice.
    """
    array = as_image(stack, ndims=(3,), what="sliding-window fusion")
    window, smooth = _check(measure, window, smooth, array.shape)
    depth_window = int(check_number(depth_window, "depth window (slices)", low=1, integer=True))
    if depth_window % 2 == 0:
        raise InputError(f"the depth window must be an odd number of slices, not {depth_window}")
    return focus_stack_block(array, depth_window=depth_window, measure=measure, window=window,
                             smooth=smooth)
