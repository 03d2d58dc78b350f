"""Vessel trees made of straight tube segments: growth, rasterisation and centrelines.

A segment is a capsule: all points within ``radius`` of the line from its start to its end, in µm.
Trees are grown by a random walk with side branches whose radii follow Murray's law
(r0^3 = r1^3 + r2^3), and drawn into voxels by the exact distance from each voxel centre to each
segment, in a bounding box per segment. :mod:`napari_vessel.data.phantom` renders them as images.
"""

from __future__ import annotations

import heapq
import itertools
import math
from collections.abc import Sequence

import numpy as np

__all__ = ["grow_trees", "draw_tubes", "centerline_mask", "PIAL", "PENETRATING", "CAPILLARY"]

#: Kinds of vessel (column 8 of a segment row).
PIAL, PENETRATING, CAPILLARY = 0, 1, 2


def _turn(u: np.ndarray, rng: np.random.Generator, wiggle: float, kind: int) -> np.ndarray:
    """A random-walk step of the direction: pial vessels stay level, penetrating ones dive."""
    u = u + wiggle * rng.standard_normal(3)
    if kind == PIAL:
        u[0] = 0.0
    elif kind == PENETRATING:
        u[0] += 0.6
    return u / (np.linalg.norm(u) + 1e-12)


def grow_trees(rng: np.random.Generator, extent: np.ndarray, n_trees: int, r_min: float,
               r_max: float, budget: float, dimmest: float = 0.7) -> tuple[np.ndarray, np.ndarray]:
    """Grow vessel trees by a random walk with Murray-law side branches.

    Each tree starts as a pial vessel entering a lateral face just under the surface (z = 0)
    and running level. Its side branches are smaller pial vessels or penetrating vessels that
    dive; thinner branches are capillaries, which wander and end after 30-90 µm. Larger vessels
    grow first; capillaries stop once their total length reaches ``budget``.

    Parameters
    ----------
    rng : numpy.random.Generator
        Source of randomness (the only one used).
    extent : ndarray, shape (3,)
        Size of the box in µm (z, y, x).
    n_trees : int
        Number of trees.
    r_min, r_max : float
        Radius of the thinnest capillary and of the first (thickest) root, in µm.
    budget : float
        Total capillary length in µm.
    dimmest : float
        Relative brightness of the dimmest branch (0 < dimmest <= 1); each branch draws its own
        brightness between it and 1 (dye filling and depth differ between vessels).

    Returns
    -------
    segments : ndarray of float, shape (N, 9)
        Start z, y, x, end z, y, x (µm), radius (µm), parent row (-1 for a root) and kind
        (:data:`PIAL`, :data:`PENETRATING` or :data:`CAPILLARY`).
    brightness : ndarray of float32, shape (N,)
        Relative brightness of each segment, constant along a branch (``dimmest`` to 1).
    """
    segments: list[tuple] = []
    brightness: list[float] = []
    heap: list[tuple] = []  # (-radius, order, start, direction, radius, parent, kind)
    for t in range(n_trees):
        r = r_max * (1.0 if t == 0 else rng.uniform(0.5, 1.0))
        side, along = rng.integers(4), rng.uniform(0.15, 0.85)
        y, x = [(0.0, along), (1.0, along), (along, 0.0), (along, 1.0)][side] * extent[1:]
        angle = math.atan2(extent[1] / 2 - y, extent[2] / 2 - x) + rng.uniform(-0.5, 0.5)
        start = np.array([r * rng.uniform(0.6, 1.3), y, x])
        heap.append((-r, len(heap), start, np.array([0.0, math.sin(angle), math.cos(angle)]),
                     r, -1, PIAL))
    heapq.heapify(heap)
    order = itertools.count(len(heap))
    total, low, high = 0.0, -extent.max() * 0.05, extent * 1.05
    while heap and len(segments) < 20000:
        _, _, p, u, r, parent, kind = heapq.heappop(heap)
        if kind == CAPILLARY and total >= budget:
            continue
        shade = dimmest + (rng.uniform(0.7, 1.0) - 0.7) / 0.3 * (1.0 - dimmest)  # same draws
        max_len = rng.uniform(30, 90) if kind == CAPILLARY else 3 * float(np.linalg.norm(extent))
        grown = 0.0
        while grown < max_len:
            step = min(max(2.0 * r, 6.0), 16.0)
            u = _turn(u, rng, 0.25 if kind == CAPILLARY else 0.12, kind)
            q = p + step * u
            segments.append((*p, *q, r, parent, kind))
            brightness.append(shade)
            parent, p, grown = len(segments) - 1, q, grown + step
            total += step if kind == CAPILLARY else 0.0
            if np.any(p < low - r) or np.any(p > high + r):
                break
            if rng.random() < step / (40.0 if kind == PIAL else 30.0):
                r_side = max(r_min, r * rng.uniform(0.3, 0.7))  # Murray: r^3 = r_main^3 + r_side^3
                r_main = max(r_min, (r**3 - r_side**3) ** (1 / 3)) if r_side < r else r_min
                side_kind = PENETRATING if kind == PIAL and r_side > 2 * r_min else CAPILLARY
                if side_kind == PENETRATING and rng.random() < 0.4:
                    side_kind = PIAL  # a smaller surface branch that spreads the tree
                v = rng.standard_normal(3)
                v = v - (v @ u) * u  # leave roughly at right angles to the parent
                if side_kind == PENETRATING:
                    v[0] = abs(v[0]) + 1.0
                heapq.heappush(heap, (-r_side, next(order), p.copy(),
                                      v / (np.linalg.norm(v) + 1e-12), r_side, parent, side_kind))
                r = r_main
    return np.array(segments, dtype=float).reshape(-1, 9), np.array(brightness, dtype=np.float32)


def draw_tubes(shape: Sequence[int], segments: np.ndarray, spacing_zyx: Sequence[float],
               brightness: np.ndarray | None = None,
               kinds_for_mask: Sequence[int] = ()) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Rasterise tube segments by their distance to each voxel centre.

    Parameters
    ----------
    shape : tuple of 3 int
        Shape (Z, Y, X) of the output volumes.
    segments : ndarray, shape (N, >=7)
        Rows of start z, y, x, end z, y, x and radius, all in µm (column 8, if present, is the
        kind of vessel used by ``kinds_for_mask``).
    spacing_zyx : tuple of 3 float
        Voxel size in µm; voxel ``(k, j, i)`` has its centre at ``(k dz, j dy, i dx)``.
    brightness : ndarray, shape (N,), optional
        Intensity of each segment in the returned signal (1 when omitted).
    kinds_for_mask : sequence of int
        Segment kinds whose voxels go into the third output (e.g. ``(0,)`` for pial vessels).

    Returns
    -------
    labels : ndarray of bool, shape (Z, Y, X)
        True where the distance to some segment is at most its radius.
    signal : ndarray of float32, shape (Z, Y, X)
        Brightness times coverage, a ramp one voxel wide that is 0.5 exactly on the tube wall,
        maximum over overlapping tubes.
    mask : ndarray of bool, shape (Z, Y, X)
        The labels of the segments whose kind is in ``kinds_for_mask``.
    """
    spacing = np.asarray(spacing_zyx, dtype=float)
    labels = np.zeros(shape, dtype=bool)
    signal = np.zeros(shape, dtype=np.float32)
    mask = np.zeros(shape, dtype=bool)
    width = float(spacing.min())
    axes = [np.arange(n) * s for n, s in zip(shape, spacing, strict=True)]
    for i, row in enumerate(np.asarray(segments, dtype=float)):
        a, b, r = row[0:3], row[3:6], row[6]
        pad = r + width
        lo = np.maximum(np.floor((np.minimum(a, b) - pad) / spacing).astype(int), 0)
        hi = np.minimum(np.ceil((np.maximum(a, b) + pad) / spacing).astype(int) + 1, shape)
        if np.any(hi <= lo):
            continue
        z, y, x = (axes[k][lo[k]:hi[k]] - a[k] for k in range(3))
        z, y, x = z[:, None, None], y[None, :, None], x[None, None, :]
        v = b - a
        length2 = float(v @ v)
        t = (z * v[0] + y * v[1] + x * v[2]) / length2 if length2 > 0 else np.zeros((1, 1, 1))
        t = np.clip(t, 0.0, 1.0)
        d2 = (z - t * v[0]) ** 2 + (y - t * v[1]) ** 2 + (x - t * v[2]) ** 2
        box = tuple(slice(lo[k], hi[k]) for k in range(3))
        inside = d2 <= r * r * (1 + 1e-12)
        labels[box] |= inside
        if len(row) > 8 and int(row[8]) in kinds_for_mask:
            mask[box] |= inside
        cover = np.clip((r - np.sqrt(d2)) / width + 0.5, 0.0, 1.0).astype(np.float32)
        cover *= 1.0 if brightness is None else brightness[i]
        np.maximum(signal[box], cover, out=signal[box])
    return labels, signal, mask


def centerline_mask(shape: Sequence[int], segments: np.ndarray, spacing: np.ndarray,
                    labels: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Mark the voxels nearest to each segment's axis, and the tube radius on them.

    Parameters
    ----------
    shape : tuple of 3 int
        Shape (Z, Y, X) of the volume.
    segments : ndarray, shape (N, >=7)
        Segment rows as in :func:`draw_tubes` (µm).
    spacing : ndarray, shape (3,)
        Voxel size in µm (z, y, x).
    labels : ndarray of bool, shape (Z, Y, X)
        The tubes; centreline voxels outside them (possible for tubes thinner than half a voxel
        diagonal) are dropped, so the centrelines always lie inside the labels.

    Returns
    -------
    centerlines : ndarray of uint8, shape (Z, Y, X)
        1 on the centreline voxels.
    radius : ndarray of float32, shape (Z, Y, X)
        Radius in µm on the centreline voxels (the largest where tubes cross), 0 elsewhere.
    """
    shape = tuple(shape)
    radius = np.zeros(shape, dtype=np.float32)
    if len(segments):
        a, b = segments[:, 0:3], segments[:, 3:6]
        n = np.ceil(np.linalg.norm(b - a, axis=1) / (0.25 * spacing.min())).astype(int) + 1
        which = np.repeat(np.arange(len(segments)), n)
        t = (np.arange(n.sum()) - np.repeat(np.cumsum(n) - n, n)) / np.repeat(np.maximum(n - 1, 1), n)
        idx = np.rint((a[which] + t[:, None] * (b - a)[which]) / spacing).astype(int)
        ok = np.all((idx >= 0) & (idx < np.array(shape)), axis=1)
        idx, which = idx[ok], which[ok]
        np.maximum.at(radius, tuple(idx.T), segments[which, 6].astype(np.float32))
    radius[~labels] = 0
    return (radius > 0).astype(np.uint8), radius
