"""Input checks and global statistics shared by the preprocessing operations."""

from __future__ import annotations

import math
import os
from collections.abc import Callable, Sequence
from concurrent.futures import ThreadPoolExecutor
from typing import Any

import numpy as np

from napari_vessel.errors import InputError

__all__ = ["as_image", "check_number", "sample_planes", "plane_map", "MAX_SAMPLE"]

#: Global statistics (percentiles, means, intensity profiles) are computed on at most this many
#: voxels: every slice, and every k-th row and column of it. The same subsample is used for NumPy
#: and dask input, so both give identical statistics.
MAX_SAMPLE = 4_000_000


def as_image(image: Any, *, name: str = "image", ndims: Sequence[int] = (2, 3),
             what: str = "this operation", finite: bool = True) -> np.ndarray:
    """Return ``image`` as a float32 NumPy array (no copy when it already is one).

    Raises :class:`InputError` for a wrong number of axes, an empty array, a non-numeric dtype or
    (with ``finite``) non-finite values (NaN or inf). Callers never write into the returned array.
    """
    array = np.asarray(image)
    if array.ndim not in ndims:
        if array.ndim == 2 and 3 in ndims:
            raise InputError(
                f"the {name} is 2D {array.shape}, but {what} needs a 3D stack (z, y, x); "
                "use the 2D preview of the step, or add an axis (image[None]) for one slice")
        want = " or ".join(f"{n}D" for n in ndims)
        raise InputError(f"the {name} has shape {array.shape}; {what} needs a {want} array "
                         "(choose one channel and one time point first)")
    if array.size == 0:
        raise InputError(f"the {name} is empty (shape {array.shape}); give a stack with voxels")
    if array.dtype.kind not in "biuf":
        raise InputError(f"the {name} has dtype {array.dtype}; a real-valued image is needed")
    array = array.astype(np.float32, copy=False)
    if finite:
        check_finite(array, name)
    return array


def check_finite(array: np.ndarray, name: str = "image") -> None:
    """Raise :class:`InputError` when ``array`` holds NaN or inf."""
    if array.dtype.kind != "f" or array.size == 0:
        return
    if np.isfinite(array.min()) and np.isfinite(array.max()):  # NaN propagates; no temporaries
        return
    if not np.isfinite(array).all():
        bad = int(array.size - np.count_nonzero(np.isfinite(array)))
        raise InputError(
            f"the {name} has {bad} NaN or infinite values; replace them first (e.g. "
            "numpy.nan_to_num(image)) - preprocessing never guesses what they should be")


def check_number(value: Any, name: str, *, low: float = -math.inf, high: float = math.inf,
                 low_open: bool = False, integer: bool = False) -> float:
    """Return ``value`` as a float (or int) within ``[low, high]``, or raise :class:`InputError`.

    Booleans are refused (``true`` in a JSON pipeline is not the number 1)."""
    if isinstance(value, bool):
        raise InputError(f"{name} must be a number, not {value!r}")
    try:
        number = float(value)
    except (TypeError, ValueError) as err:
        raise InputError(f"{name} must be a number, not {value!r}") from err
    if not math.isfinite(number):
        raise InputError(f"{name} must be a finite number, not {value!r}")
    if integer:
        if number != int(number):
            raise InputError(f"{name} must be a whole number, not {value!r}")
        number = int(number)
    too_low = number <= low if low_open else number < low
    if too_low or number > high:
        left = "(" if low_open else "["
        raise InputError(f"{name} = {value!r} is out of range; use a value in {left}{low}, {high}]")
    return number


def sample_step(shape: Sequence[int], max_voxels: int = MAX_SAMPLE) -> int:
    """Stride along y and x so that a strided sample has at most ``max_voxels`` voxels."""
    size = math.prod(int(s) for s in shape)
    return max(1, math.ceil(math.sqrt(size / max_voxels)))


def sample_planes(data: Any, max_voxels: int = MAX_SAMPLE) -> np.ndarray:
    """A regular subsample of every slice: ``data[..., ::k, ::k]`` as float32 NumPy.

    Works on NumPy and dask arrays (2D or 3D); ``k`` depends only on the shape, so NumPy and dask
    input give the same sample.
    """
    step = sample_step(data.shape, max_voxels)
    sample = np.asarray(data[..., ::step, ::step], dtype=np.float32)
    check_finite(sample)
    return sample


def workers() -> int:
    """Threads used by the operations that split work by slices."""
    return max(1, min(os.cpu_count() or 1, 4))


def plane_map(func: Callable[[np.ndarray], np.ndarray], planes: np.ndarray,
              out: np.ndarray | None = None) -> np.ndarray:
    """Apply ``func`` to groups of whole slices of a 3D array in a few threads.

    ``func`` takes a (n, Y, X) block and returns a block of the same number of slices; results are
    written into ``out`` (float32, same shape as ``planes``) and returned.
    """
    n_z = planes.shape[0]
    if out is None:
        out = np.empty(planes.shape, dtype=np.float32)
    n_threads = min(workers(), n_z)
    bounds = np.linspace(0, n_z, n_threads + 1).astype(int)

    def _do(i: int) -> None:
        lo, hi = bounds[i], bounds[i + 1]
        if hi > lo:
            out[lo:hi] = func(planes[lo:hi])

    if n_threads <= 1:
        _do(0)
    else:
        with ThreadPoolExecutor(n_threads) as pool:
            list(pool.map(_do, range(n_threads)))
    return out
