"""Exact Euclidean distances at chosen voxels only: a table of offsets sorted by distance.

The graph needs distances at few voxels: the radius at the centreline voxels (a few per cent of
the vessel) and, when resampling, the signed distance at the pixels where two neighbouring
slices differ. A full distance transform (:func:`scipy.ndimage.distance_transform_edt`) costs
about 0.2 µs a voxel of the whole volume; here each voxel scans the offsets around it in order
of their distance in µm (:func:`offsets_within`) and stops at the first voxel of the value it
looks for, so it costs only what lies within the distance it finds. The answer is the same as
the transform's: the distance to the nearest voxel centre of that value, inside the array,
computed with the same float64 formula, or "none within ``reach``".
"""

from __future__ import annotations

import math
from collections.abc import Sequence

import numba
import numpy as np

__all__ = ["MAX_OFFSETS", "offsets_within", "nearest_distance", "between_slices", "inside_depth"]

#: Largest offset table (entries of the bounding box of the ball, before sorting, about 40 bytes
#: each). Beyond it (a reach of hundreds of voxels) the callers use a distance transform instead.
MAX_OFFSETS = 2_000_000


def offsets_within(spacing: Sequence[float], reach: float,
                   limit: int = MAX_OFFSETS) -> tuple[np.ndarray, np.ndarray] | None:
    """Integer offsets within ``reach`` µm of the origin, nearest first, and their distances.

    Parameters
    ----------
    spacing : sequence of float
        Voxel size (µm) along each axis (2 or 3 axes).
    reach : float
        Largest distance (µm) kept, included.
    limit : int
        Largest bounding box of the ball (voxels); None is returned beyond it.

    Returns
    -------
    offsets : ndarray of int64, shape (K, ndim)
        The offsets, the origin first, sorted by distance (ties in C order).
    distances : ndarray of float64, shape (K,)
        Their lengths in µm, computed as :func:`scipy.ndimage.distance_transform_edt` does
        (``sqrt((d0 s0)² + (d1 s1)² + ...)``, summed in axis order).
    """
    half = [int(math.floor(reach / float(s) + 1e-9)) for s in spacing]
    if math.prod(2 * h + 1 for h in half) > limit:
        return None
    axes = np.meshgrid(*[np.arange(-h, h + 1) for h in half], indexing="ij")
    offsets = np.stack([a.ravel() for a in axes], axis=1).astype(np.int64)
    squared = np.zeros(len(offsets), dtype=np.float64)
    for axis, s in enumerate(spacing):
        step = offsets[:, axis] * float(s)
        squared = squared + step * step
    distances = np.sqrt(squared)
    keep = distances <= reach
    offsets, distances = offsets[keep], distances[keep]
    order = np.argsort(distances, kind="stable")
    return np.ascontiguousarray(offsets[order]), np.ascontiguousarray(distances[order])


@numba.njit(cache=True)
def _nearest_3d(mask, points, want, offsets, distances, reach, none):
    """Distance from each point to the nearest voxel with ``mask == want``, ``none`` if beyond
    ``reach``."""
    nz, ny, nx = mask.shape
    out = np.empty(len(points), dtype=np.float64)
    for i in range(len(points)):
        z, y, x = points[i, 0], points[i, 1], points[i, 2]
        found = none
        for k in range(len(offsets)):
            if distances[k] > reach:
                break
            zz, yy, xx = z + offsets[k, 0], y + offsets[k, 1], x + offsets[k, 2]
            if 0 <= zz < nz and 0 <= yy < ny and 0 <= xx < nx and mask[zz, yy, xx] == want:
                found = distances[k]
                break
        out[i] = found
    return out


def nearest_distance(mask: np.ndarray, points: np.ndarray, want: bool,
                     table: tuple[np.ndarray, np.ndarray], reach: float,
                     none: float) -> np.ndarray:
    """Distance (µm) from each voxel of ``points`` to the nearest voxel of ``mask`` equal to
    ``want`` (0 at such a voxel), or ``none`` when there is none within ``reach`` µm.

    ``table`` is :func:`offsets_within` for the voxel size of ``mask`` and a reach of at least
    ``reach``. For ``want=False`` this is the value of ``distance_transform_edt(mask,
    sampling=spacing)`` at the points, wherever it is at most ``reach``.
    """
    points = np.ascontiguousarray(points, dtype=np.int64).reshape(-1, 3)
    return _nearest_3d(mask, points, bool(want), table[0], table[1], float(reach), float(none))


@numba.njit(cache=True)
def _signed_2d(plane, y, x, offsets, distances, clip, depth):
    """Signed distance (µm) of pixel (y, x) of a 2D mask as in the resampling: minus the
    distance to the nearest outside pixel when inside (-1e6 when none within ``depth``), the
    distance to the nearest inside pixel clipped to ``clip`` when outside."""
    ny, nx = plane.shape
    inside = plane[y, x]
    reach = depth if inside else clip
    for k in range(1, len(offsets)):
        if distances[k] > reach:
            break
        yy, xx = y + offsets[k, 0], x + offsets[k, 1]
        if 0 <= yy < ny and 0 <= xx < nx and plane[yy, xx] != inside:
            return -distances[k] if inside else distances[k]
    return -1e6 if inside else clip


@numba.njit(cache=True)
def _between(a, b, w, clip, depth, offsets, distances, out):
    wa = np.float32(1.0 - w)
    wb = np.float32(w)
    ny, nx = a.shape
    for y in range(ny):
        for x in range(nx):
            if a[y, x] == b[y, x]:
                out[y, x] = a[y, x]
                continue
            sa = np.float32(_signed_2d(a, y, x, offsets, distances, clip, depth))
            sb = np.float32(_signed_2d(b, y, x, offsets, distances, clip, depth))
            out[y, x] = wa * sa + wb * sb <= np.float32(0.0)


def between_slices(a: np.ndarray, b: np.ndarray, w: float, clip: float, depth: float,
                   table: tuple[np.ndarray, np.ndarray], out: np.ndarray) -> None:
    """Shape-based interpolation of two 2D masks at ``w`` (0 at ``a``, 1 at ``b``) into ``out``.

    The same decision as ``(1 - w) * sd(a) + w * sd(b) <= 0`` in float32, where ``sd`` is the
    signed distance of a slice (minus the distance to the nearest outside pixel inside, the
    distance to the nearest inside pixel clipped to ``clip`` outside): where ``a`` and ``b``
    agree the answer is theirs; elsewhere the two distances are searched in ``table``
    (:func:`offsets_within` with the plane's pixel size and a reach of at least ``clip`` and
    ``depth``). ``depth`` is :func:`inside_depth` ``(w, clip)`` (or the plane's diagonal when
    smaller): an inside distance beyond it cannot change the decision, so it is not searched.
    """
    _between(a, b, float(w), float(clip), float(depth), table[0], table[1], out)


def inside_depth(w: float, clip: float) -> float:
    """The inside distance (µm) beyond which the interpolated sign no longer depends on it.

    A pixel inside one slice at depth ``d`` and outside the other at a distance of at most
    ``clip``: ``-(1 - w) d + w clip <= 0`` once ``d >= clip w / (1 - w)``, and symmetrically
    ``d >= clip (1 - w) / w`` when the inside pixel is in the second slice.
    The depth is raised by 1e-5 of itself so that float32 rounding of the weighted sum cannot
    flip a decision near the bound.
    """
    return float(clip) * max(w / (1.0 - w), (1.0 - w) / w) * (1.0 + 1e-5)
