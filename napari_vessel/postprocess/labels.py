"""From a probability map to clean vessel labels: thresholds, small-object removal, hole filling.

All functions take 2D or 3D arrays (3D is (z, y, x)), treat any non-zero label as vessel, and
never modify their input. Connectivity follows SciPy and scikit-image: 1 joins voxels that share
a face, 2 an edge, 3 a corner. The default here is the full neighbourhood (``connectivity=3`` in
3D) because thin capillaries running obliquely through anisotropic voxels often touch their next
voxel only at an edge or a corner.
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from typing import Any

import numpy as np
from scipy import ndimage as ndi

from napari_vessel.errors import InputError

__all__ = ["threshold", "hysteresis", "remove_small", "fill_holes", "probability_to_labels",
           "apply_postprocessing"]


def _check_array(data: Any, what: str) -> np.ndarray:
    """Return ``data`` as a 2D or 3D real NumPy array without NaN, or raise :class:`InputError`."""
    array = np.asarray(data)
    if array.dtype == object or not (np.issubdtype(array.dtype, np.number) or array.dtype == bool):
        raise InputError(f"the {what} has data type {array.dtype}; give a numeric array")
    if np.iscomplexobj(array):
        raise InputError(f"the {what} is complex; give real numbers")
    if array.ndim not in (2, 3) or array.size == 0:
        raise InputError(f"the {what} has shape {array.shape}; give a non-empty 2D (y, x) or 3D "
                         "(z, y, x) array")
    if np.issubdtype(array.dtype, np.floating) and np.isnan(array).any():
        raise InputError(f"the {what} contains NaN values; replace them (e.g. np.nan_to_num) first")
    return array


def _check_level(value: Any, name: str) -> float:
    try:
        level = float(value)
    except (TypeError, ValueError) as err:
        raise InputError(f"{name}={value!r} is not a number") from err
    if not math.isfinite(level):
        raise InputError(f"{name}={value!r} must be a finite number, e.g. 0.5")
    return level


def _structure(ndim: int, connectivity: Any) -> np.ndarray:
    if isinstance(connectivity, bool) or connectivity not in range(1, ndim + 1):
        names = {1: "faces", 2: "edges", 3: "corners"}
        choices = ", ".join(f"{k} ({names[k]})" for k in range(1, ndim + 1))
        raise InputError(f"connectivity {connectivity!r} is not valid for {ndim}D data; "
                         f"choose {choices}")
    return ndi.generate_binary_structure(ndim, int(connectivity))


def _check_size(value: Any, name: str) -> int:
    try:
        ok = float(value).is_integer() and value >= 0 and not isinstance(value, bool)
    except (TypeError, ValueError):
        ok = False
    if not ok:
        raise InputError(f"{name}={value!r} must be a whole number of voxels >= 0")
    return int(value)


def threshold(prob: Any, level: float = 0.5) -> np.ndarray:
    """Label the voxels whose probability is above ``level``.

    Parameters
    ----------
    prob : ndarray, shape (Z, Y, X) or (Y, X)
        Probability (or any score) per voxel.
    level : float
        Voxels with ``prob > level`` become vessel.

    Returns
    -------
    ndarray of uint8, same shape
        1 for vessel, 0 for background.

    Examples
    --------
    >>> threshold(np.array([[0.2, 0.5, 0.9]]))
    array([[0, 0, 1]], dtype=uint8)
    """
    prob = _check_array(prob, "probability map")
    return (prob > _check_level(level, "level")).astype(np.uint8)


def hysteresis(prob: Any, low: float, high: float, *, connectivity: int = 3) -> np.ndarray:
    """Hysteresis threshold: keep regions above ``low`` that contain a voxel above ``high``.

    Faint stretches of a vessel survive when they are connected to a confident part, while
    isolated faint noise does not. With ``connectivity=1`` this equals
    :func:`skimage.filters.apply_hysteresis_threshold`.

    Parameters
    ----------
    prob : ndarray, shape (Z, Y, X) or (Y, X)
        Probability (or any score) per voxel.
    low, high : float
        Lower and upper thresholds (``low <= high``); comparisons are strict (``>``).
    connectivity : int
        Neighbourhood joining voxels of one region, from 1 (faces) to ``prob.ndim`` (corners).

    Returns
    -------
    ndarray of uint8, same shape
        1 for vessel, 0 for background.
    """
    prob = _check_array(prob, "probability map")
    low, high = _check_level(low, "low"), _check_level(high, "high")
    if low > high:
        raise InputError(f"low={low} is above high={high}; the low threshold must not exceed the "
                         "high one")
    components, count = ndi.label(prob > low, structure=_structure(prob.ndim, connectivity))
    if count == 0:
        return np.zeros(prob.shape, dtype=np.uint8)
    confident = np.zeros(count + 1, dtype=bool)
    confident[np.unique(components[prob > high])] = True
    confident[0] = False
    return confident[components].astype(np.uint8)


def remove_small(labels: Any, min_size: int, *, connectivity: int = 3) -> np.ndarray:
    """Remove connected vessel pieces with fewer than ``min_size`` voxels.

    Parameters
    ----------
    labels : ndarray of int or bool, shape (Z, Y, X) or (Y, X)
        Labels; any non-zero value is vessel.
    min_size : int
        Pieces with fewer voxels than this are set to 0 (0 or 1 keeps everything).
    connectivity : int
        Neighbourhood joining voxels of one piece, from 1 (faces) to ``labels.ndim`` (corners).

    Returns
    -------
    ndarray, same shape and dtype as ``labels``
        The labels with small pieces set to 0; other voxels keep their value.
    """
    labels = _check_array(labels, "labels")
    min_size = _check_size(min_size, "min_size")
    structure = _structure(labels.ndim, connectivity)
    if min_size <= 1:
        return labels.copy()
    components, count = ndi.label(labels != 0, structure=structure)
    small = np.bincount(components.ravel(), minlength=count + 1) < min_size
    small[0] = False
    out = labels.copy()
    out[small[components]] = 0
    return out


def fill_holes(labels: Any, *, per_slice: bool = False, max_size: int | None = None) -> np.ndarray:
    """Fill background regions that vessel voxels enclose completely.

    Parameters
    ----------
    labels : ndarray of int or bool, shape (Z, Y, X) or (Y, X)
        Labels; any non-zero value is vessel.
    per_slice : bool
        False: fill cavities closed in the full array. True (3D only): fill holes closed within
        each z slice, such as the dark lumen of a vessel running along z, which is open at both
        ends in 3D.
    max_size : int, optional
        Leave holes with more voxels than this open. Useful per slice, where a ring of vessels
        can enclose tissue that must stay background.

    Returns
    -------
    ndarray, same shape and dtype as ``labels``
        The labels with holes set to the largest label value present (1 for 0/1 labels).
    """
    labels = _check_array(labels, "labels")
    if per_slice and labels.ndim != 3:
        raise InputError(f"per_slice needs a 3D (z, y, x) array; these labels are {labels.ndim}D. "
                         "Use per_slice=False for a single slice.")
    if max_size is not None:
        max_size = _check_size(max_size, "max_size")
    foreground = labels != 0
    if per_slice:
        filled = np.stack([ndi.binary_fill_holes(plane) for plane in foreground])
    else:
        filled = ndi.binary_fill_holes(foreground)
    holes = filled & ~foreground
    if max_size is not None and holes.any():
        structure = ndi.generate_binary_structure(labels.ndim, 1)
        if per_slice:  # a hole is a region within one slice
            structure[0] = structure[2] = False
        pieces, count = ndi.label(holes, structure=structure)
        large = np.bincount(pieces.ravel(), minlength=count + 1) > max_size
        large[0] = False
        holes &= ~large[pieces]
    out = labels.copy()
    if holes.any():
        out[holes] = labels.max()
    return out


def probability_to_labels(prob: Any, *, level: float = 0.5, min_size: int = 0, fill: bool = False,
                          connectivity: int = 3) -> np.ndarray:
    """Threshold a probability map and clean it up in one call.

    Parameters
    ----------
    prob : ndarray, shape (Z, Y, X) or (Y, X)
        Probability of vessel per voxel.
    level : float
        Voxels with ``prob > level`` become vessel (see :func:`threshold`).
    min_size : int
        Remove pieces with fewer voxels than this (see :func:`remove_small`); 0 keeps all.
    fill : bool
        Fill cavities enclosed in 3D (see :func:`fill_holes`).
    connectivity : int
        Neighbourhood for ``min_size``, from 1 (faces) to ``prob.ndim`` (corners).

    Returns
    -------
    ndarray of uint8, same shape
        1 for vessel, 0 for background.
    """
    labels = threshold(prob, level)
    _structure(labels.ndim, connectivity)
    if _check_size(min_size, "min_size"):
        labels = remove_small(labels, min_size, connectivity=connectivity)
    if fill:
        labels = fill_holes(labels)
    return labels


def apply_postprocessing(prob: Any, recipe: Mapping[str, Any] | None = None) -> np.ndarray:
    """Labels from a probability map as a model card's ``postprocessing`` describes.

    Parameters
    ----------
    prob : ndarray, shape (Z, Y, X) or (Y, X)
        Probability of vessel per voxel.
    recipe : dict, optional
        ``{"method": "threshold", "level": 0.5, "min_size": 0}`` (the default when None), or
        ``{"method": "hysteresis", "low": 0.45, "high": 0.95, "min_size": 64, "fill_holes": True,
        "max_hole": 64}``: :func:`hysteresis`, then :func:`remove_small`, then
        :func:`fill_holes` within each z slice (3D) for holes up to ``max_hole`` voxels, as in
        paper 003. Other keys (such as ``function``) are ignored; missing ones take these values.

    Returns
    -------
    ndarray of uint8, same shape
        1 for vessel, 0 for background.

    Raises
    ------
    InputError
        Unknown method or invalid values.
    """
    recipe = dict(recipe or {"method": "threshold"})
    method = recipe.get("method", "threshold")
    connectivity = recipe.get("connectivity", 3)
    if method == "threshold":
        return probability_to_labels(prob, level=recipe.get("level", 0.5),
                                     min_size=recipe.get("min_size", 0),
                                     fill=bool(recipe.get("fill_holes", False)),
                                     connectivity=connectivity)
    if method != "hysteresis":
        raise InputError(f"unknown post-processing method {method!r}; the model card may name "
                         "'threshold' or 'hysteresis'")
    labels = hysteresis(prob, recipe.get("low", 0.45), recipe.get("high", 0.95),
                        connectivity=connectivity)
    if _check_size(recipe.get("min_size", 0), "min_size"):
        labels = remove_small(labels, recipe["min_size"], connectivity=connectivity)
    if recipe.get("fill_holes", False):
        labels = fill_holes(labels, per_slice=labels.ndim == 3, max_size=recipe.get("max_hole"))
    return labels.astype(np.uint8, copy=False)
