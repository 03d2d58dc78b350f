"""From labels to the working grid: input checks, crop, small pieces, isotropic resampling, radii.

Memory: the labels become one boolean mask (1 byte per voxel, a dask array is computed into it),
cropped to the bounding box of the vessel plus one voxel. Resampling writes one boolean slice
at a time; distances are searched only where they are needed
(:mod:`~napari_vessel.graph.nearest`); the reference distance transforms run per slice and in
tiles of at most :data:`TILE_VOXELS` voxels, so no float copy of the whole volume is ever made.
"""

from __future__ import annotations

import itertools
import math
from collections.abc import Sequence
from typing import Any

import numpy as np
from scipy import ndimage as ndi

from napari_vessel.errors import InputError
from napari_vessel.graph.nearest import between_slices, inside_depth, nearest_distance, offsets_within
from napari_vessel.graph.params import NEAR_ISOTROPIC
from napari_vessel.graph.runs import find_runs
from napari_vessel.io.volume import check_3d
from napari_vessel.progress import CancelToken, Progress

__all__ = ["vessel_mask", "crop_box", "drop_small", "fill_cavities", "grid_spacing", "resample",
           "radii_at", "TILE_VOXELS"]

#: Largest tile (voxels, margins included) of the distance transform: about 21 bytes a voxel.
TILE_VOXELS = 4_000_000


def vessel_mask(labels: Any) -> np.ndarray:
    """The vessel mask (``labels > 0``) of a 3D label array, after checking it.

    Any integer or boolean label values work: every value > 0 is vessel (several label values
    are merged, negative ones are background). Floats must be whole numbers (0/1 masks saved
    as float): a map with fractions is a probability map and is refused.
    """
    if not hasattr(labels, "dtype") or not hasattr(labels, "shape"):
        labels = np.asarray(labels)
    check_3d(labels, "labels")
    kind = np.dtype(labels.dtype).kind
    if kind not in "biuf":
        raise InputError(f"labels of type {labels.dtype} cannot be used; give an integer or "
                         "boolean label array (non-zero = vessel)")
    if kind == "f":
        if not bool(np.isfinite(labels).all()):
            raise InputError("the labels contain NaN or infinite values; clean them (e.g. "
                             "np.nan_to_num) or re-export the labels")
        if not bool((labels == np.round(labels)).all()):
            raise InputError("the labels hold fractional values, like a probability map; "
                             "threshold it first (e.g. prob > 0.5) or pass the labels file")
    if isinstance(labels, np.ndarray) and labels.dtype == bool:
        return labels  # already the mask: no copy (the graph never writes into it)
    return np.asarray(labels > 0)


def crop_box(mask: np.ndarray) -> tuple[slice, slice, slice] | None:
    """The bounding box of ``mask`` grown by one voxel (within the array), None when empty."""
    box = []
    for axis in range(3):
        others = tuple(a for a in range(3) if a != axis)
        hits = np.flatnonzero(mask.any(axis=others))
        if hits.size == 0:
            return None
        box.append(slice(max(int(hits[0]) - 1, 0), min(int(hits[-1]) + 2, mask.shape[axis])))
    return tuple(box)


def drop_small(mask: np.ndarray, min_voxels: int) -> tuple[np.ndarray, int]:
    """Remove 26-connected pieces with fewer than ``min_voxels`` voxels; returns (mask, n removed).

    The pieces are found by runs (:func:`~napari_vessel.graph.runs.find_runs`, the same pieces as
    ``scipy.ndimage.label(mask, np.ones((3, 3, 3)))``); ``mask`` is never written into.
    """
    if min_voxels <= 1:
        return mask, 0
    runs = find_runs(mask, True, full=True)
    small = runs.sizes() < min_voxels
    if not small.any():
        return mask, 0
    out = mask.copy()
    runs.paint(out, small, False)
    return out, int(small.sum())


def fill_cavities(mask: np.ndarray, spacing: Sequence[float],
                  max_um3: float) -> tuple[np.ndarray, int, int]:
    """Fill enclosed background cavities of at most ``max_um3`` µm³; returns (mask, n, voxels).

    A cavity is a 6-connected piece of background (the complement of the 26-connected vessel,
    as in :func:`~napari_vessel.graph.thin.thin`) that touches no face of ``mask``. Its volume is
    its voxel count times the voxel volume. Thinning keeps every cavity as a closed surface,
    which skan turns into loops and clusters of short segments; filled, the vessel thins to its
    centreline. ``mask`` must be the whole stack or the :func:`crop_box` of one (the box's
    margin voxel is background, so a piece touching a face of the box reaches a face of the
    stack). The background pieces are found by runs
    (:func:`~napari_vessel.graph.runs.find_runs`, the pieces of ``scipy.ndimage.label`` with
    ``generate_binary_structure(3, 1)``; 0.3 s on 100 x 1024 x 1024 voxels); ``mask`` is never
    written into. ``max_um3`` below one voxel (0: off) returns ``mask`` unchanged.
    """
    voxel_um3 = math.prod(float(s) for s in spacing)
    if max_um3 < voxel_um3 or min(mask.shape) < 3:
        return mask, 0, 0
    runs = find_runs(mask, False, full=False)
    if runs.n_pieces == 0:
        return mask, 0, 0
    sizes = runs.sizes()
    fill = (sizes * voxel_um3 <= max_um3) & ~runs.touches_a_face()
    n_fill = int(np.count_nonzero(fill))
    if n_fill == 0:
        return mask, 0, 0
    out = mask.copy()
    runs.paint(out, fill, True)
    return out, n_fill, int(sizes[fill].sum())


def grid_spacing(spacing: Sequence[float], isotropic: bool) -> tuple[float, float, float]:
    """Voxel size of the working grid: coarse axes brought to the finest size when ``isotropic``."""
    finest = min(spacing)
    if not isotropic:
        return tuple(float(s) for s in spacing)
    return tuple(float(finest if s > NEAR_ISOTROPIC * finest else s) for s in spacing)


def grid_shape(shape: Sequence[int], spacing: Sequence[float], grid: Sequence[float]) -> tuple:
    """Shape of the working grid: the same first and last voxel centres, ``grid`` apart."""
    return tuple(n if g == s else int(math.floor((n - 1) * s / g + 1e-9)) + 1
                 for n, s, g in zip(shape, spacing, grid, strict=True))


def _signed_distance(plane: np.ndarray, spacing: Sequence[float], clip: float) -> np.ndarray:
    """Signed distance in µm of a 2D mask (negative inside), clipped to ``clip`` outside."""
    if not plane.any():
        return np.full(plane.shape, clip, np.float32)
    outside = np.minimum(ndi.distance_transform_edt(~plane, sampling=spacing), clip)
    if plane.all():  # no background to measure from: deep inside
        return np.full(plane.shape, -1e6, np.float32)
    inside = ndi.distance_transform_edt(plane, sampling=spacing)
    return np.where(plane, -inside, outside).astype(np.float32)


def resample(mask: np.ndarray, spacing: Sequence[float], grid: Sequence[float],
             progress: Progress, cancel: CancelToken | None, *,
             use_transform: bool = False) -> np.ndarray:
    """Bring ``mask`` from ``spacing`` to ``grid`` by shape-based interpolation.

    Along each axis to refine, the signed distance maps of consecutive slices (in µm, clipped
    to one voxel of that axis outside the vessel) are interpolated linearly and the zero level
    is kept (Raya and Udupa 1990, "shape-based interpolation"). Slices of the input are kept as
    they are; between them a vessel moves and changes width smoothly instead of in steps.

    The distances are needed only where the two slices differ, and only up to a depth that can
    still change the sign (:func:`~napari_vessel.graph.nearest.inside_depth`): they are
    searched there (:func:`~napari_vessel.graph.nearest.between_slices`, the same decisions as
    the full transforms, 0.2 s instead of 20 s on 100 x 1024 x 1024 voxels).
    ``use_transform=True`` computes two 2D distance transforms per slice instead (the
    reference; also taken when the search table would be too large).
    """
    spacing = [float(s) for s in spacing]
    axes = [a for a in range(3) if grid[a] != spacing[a]]
    for step, axis in enumerate(axes):
        work = np.moveaxis(mask, axis, 0)
        n_out = grid_shape(mask.shape, spacing, grid)[axis]
        plane_spacing = [spacing[a] for a in range(3) if a != axis]
        clip = spacing[axis]
        places = []
        for k in range(n_out):
            u = k * grid[axis] / spacing[axis]
            i = min(int(math.floor(u + 1e-9)), work.shape[0] - 1)
            places.append((i, u - i))
        diagonal = math.hypot(*[(n - 1) * s for n, s in zip(work.shape[1:], plane_spacing,
                                                           strict=True)]) * (1 + 1e-9)
        depths = [min(inside_depth(w, clip), diagonal) if w >= 1e-6 else 0.0 for _, w in places]
        table = None if use_transform else offsets_within(plane_spacing,
                                                          max([clip, *depths]))
        out = np.empty((n_out,) + work.shape[1:], dtype=bool)
        cache: dict[int, np.ndarray] = {}
        for k, (i, w) in enumerate(places):
            if cancel is not None and k % 16 == 0:
                cancel.check()
            if w < 1e-6:
                out[k] = work[i]
            elif table is not None:
                between_slices(work[i], work[i + 1], w, clip, depths[k], table, out[k])
            else:
                for j in (i, i + 1):
                    if j not in cache:
                        cache[j] = _signed_distance(work[j], plane_spacing, clip)
                for j in [j for j in cache if j < i]:
                    del cache[j]
                out[k] = (1 - w) * cache[i] + w * cache[i + 1] <= 0
            if k % 16 == 0:
                progress((step + k / n_out) / len(axes), "resampling to isotropic voxels")
        mask = np.ascontiguousarray(np.moveaxis(out, 0, axis))
        spacing[axis] = float(grid[axis])
    return mask


def _tile_core(shape: Sequence[int], margin: Sequence[int]) -> int:
    """Largest core edge (voxels) whose tile with margins stays within :data:`TILE_VOXELS`."""
    core = max(shape)
    while core > 16 and math.prod(min(n, core + 2 * m) for n, m in zip(shape, margin,
                                                                        strict=True)) > TILE_VOXELS:
        core = int(core * 0.8)
    return core


def _largest_edt_at(mask: np.ndarray, spacing: Sequence[float], corners: list[np.ndarray],
                    max_radius_um: float, progress: Progress,
                    cancel: CancelToken | None) -> np.ndarray:
    """Largest distance transform value (µm) of ``mask`` over the integer ``corners`` of each
    point (each (N, 3), at most one voxel apart), one tile transform for all of them."""
    out = np.zeros(len(corners[0]), dtype=np.float64)
    margin = [int(math.ceil(max_radius_um / s)) + 2 for s in spacing]
    core = _tile_core(mask.shape, margin)
    keys, inverse = np.unique(corners[0] // core, axis=0, return_inverse=True)
    inverse = inverse.ravel()
    for t, key in enumerate(keys):
        if cancel is not None:
            cancel.check()
        lo = [max(int(k) * core - m, 0) for k, m in zip(key, margin, strict=True)]
        hi = [min((int(k) + 1) * core + m, n) for k, m, n in zip(key, margin, mask.shape,
                                                                 strict=True)]
        tile = mask[tuple(slice(a, b) for a, b in zip(lo, hi, strict=True))]
        mine = np.flatnonzero(inverse == t)
        if tile.all():  # no background within reach: at least the cap
            out[mine] = np.inf
        else:
            distance = ndi.distance_transform_edt(tile, sampling=spacing)
            for near in corners:
                out[mine] = np.maximum(out[mine], distance[tuple((near[mine] - lo).T)])
            del distance
        progress((t + 1) / len(keys), "measuring radii")
    return out


def radii_at(mask: np.ndarray, spacing: Sequence[float], points: np.ndarray, max_radius_um: float,
             progress: Progress, cancel: CancelToken | None, *,
             use_transform: bool = False) -> np.ndarray:
    """Vessel radius (µm) at ``points`` (N, 3; fractional along resampled axes) of ``mask``.

    The Euclidean distance transform of the labels with their voxel size
    (``distance_transform_edt(sampling=spacing)``) gives the distance from a centreline voxel
    to the nearest background voxel centre; that is the radius, capped at ``max_radius_um``. A
    point between two slices takes the larger value of the voxels on either side (the one
    nearer the vessel's axis). The wall lies half a voxel before the background voxel, but the
    centreline voxel is on average about as far off the true axis, so no offset is taken: on
    the phantoms the median error is under 0.1 µm (``docs/graph.md``).

    The value is needed at the points only: each point scans the voxels around it nearest
    first (:func:`~napari_vessel.graph.nearest.nearest_distance`) up to ``max_radius_um``, the
    same value as the transform without touching the rest of the volume and with no memory
    beyond the offset table (1.3 MB for 30 µm at 2 x 1 x 1 µm). ``use_transform=True`` (the
    reference, also taken when the table would exceed
    :data:`~napari_vessel.graph.nearest.MAX_OFFSETS`) runs the transform in tiles with a
    margin of ``max_radius_um``, so every distance below the cap is exact and memory stays
    below about 21 bytes x :data:`TILE_VOXELS`.
    """
    if len(points) == 0:
        return np.zeros(0, dtype=np.float32)
    points = np.asarray(points, dtype=float)
    shape = np.asarray(mask.shape) - 1
    fractional = [a for a in range(3) if np.any(points[:, a] != np.round(points[:, a]))]
    corners = []
    for corner in itertools.product((np.floor, np.ceil), repeat=len(fractional)):
        near = np.rint(points)
        for axis, rounding in zip(fractional, corner, strict=True):
            near[:, axis] = rounding(points[:, axis])
        corners.append(np.clip(near, 0, shape).astype(np.int64))
    table = None if use_transform else offsets_within(spacing, max_radius_um)
    if table is None:
        best = _largest_edt_at(mask, spacing, corners, max_radius_um, progress, cancel)
    else:
        best = np.zeros(len(points), dtype=np.float64)
        chunk = 1 << 16
        for start in range(0, len(points), chunk):
            if cancel is not None:
                cancel.check()
            for near in corners:
                found = nearest_distance(mask, near[start:start + chunk], False, table,
                                         max_radius_um, np.inf)
                np.maximum(best[start:start + chunk], found, out=best[start:start + chunk])
            progress(min(start + chunk, len(points)) / len(points), "measuring radii")
    return np.clip(best, 0.0, max_radius_um).astype(np.float32)
