"""Vessel tools that follow the image: the brightest path between two points, painting on a MIP.

Like :mod:`napari_vessel.refine.edits`, every function returns an :class:`~napari_vessel.refine.edits.Edit`
(only the changed voxels), which a widget applies as one undo step.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import numpy as np
from scipy import ndimage as ndi

from napari_vessel.errors import InputError
from napari_vessel.io.volume import check_3d, check_spacing
from napari_vessel.refine.edits import Edit, _check_labels, _check_point, _check_value, check_same_grid

__all__ = ["min_cost_path", "bridge_gap", "paint_on_mip", "connected_depths"]


def _normalised(image: np.ndarray) -> np.ndarray:
    """Intensity scaled to [0, 1] between the 1st and 99th percentiles (NaN kept)."""
    finite = image[np.isfinite(image)]
    if finite.size == 0:
        return np.full(image.shape, np.nan)
    low, high = np.percentile(finite, [1, 99])
    if high <= low:
        high = low + 1.0
    return np.clip((image - low) / (high - low), 0.0, 1.0)


def min_cost_path(image: Any, p0: Any, p1: Any, *, spacing_zyx: Sequence[float] | None = None,
                  mask: Any = None, eps: float = 0.05) -> np.ndarray:
    """The brightest path between two voxels: minimum cost with cost ``1 / (eps + intensity)``.

    Parameters
    ----------
    image : ndarray, shape (Z, Y, X)
        Intensities (normalised to [0, 1] inside the function). NaN or infinite voxels are
        impassable.
    p0, p1 : sequence of 3 float
        Start and end (z, y, x).
    spacing_zyx : sequence of 3 float, optional
        Voxel size, so steps along z cost their true length.
    mask : ndarray of bool, optional
        Where the path may go (False = impassable).
    eps : float
        Cost floor: a dark voxel costs ``(1 + eps) / eps`` times a bright one.

    Returns
    -------
    ndarray of intp, shape (N, 3)
        The path's voxels from ``p0`` to ``p1``.
    """
    from skimage.graph import MCP_Geometric

    check_3d(image, "image")
    image = np.asarray(image, dtype=np.float64)
    start, end = _check_point(p0, image.shape, "start"), _check_point(p1, image.shape, "end")
    spacing = check_spacing((1.0, 1.0, 1.0) if spacing_zyx is None else spacing_zyx)
    cost = 1.0 / (eps + _normalised(image))
    cost[~np.isfinite(cost)] = np.inf
    if mask is not None:
        cost[~np.asarray(mask, dtype=bool)] = np.inf
    for name, p in (("start", start), ("end", end)):
        if not np.isfinite(cost[p]):
            raise InputError(f"the {name} point {p} is in a masked (impassable) region; move it")
    mcp = MCP_Geometric(cost, fully_connected=True, sampling=spacing)
    total, _ = mcp.find_costs([start], [end])
    if not np.isfinite(total[end]):
        raise InputError(
            f"no path from {start} to {end}: they are separated by a masked region; "
            "choose points that can be joined or widen the region"
        )
    return np.asarray(mcp.traceback(end), dtype=np.intp)


def _local_radius(distance: np.ndarray, point: Sequence[int], reach: int = 3) -> float:
    key = tuple(slice(max(p - reach, 0), p + reach + 1) for p in point)
    return float(distance[key].max())


def bridge_gap(labels: Any, image: Any, p0: Any, p1: Any, *,
               spacing_zyx: Sequence[float] | None = None, radius: float | None = None,
               label_value: int = 1, margin: int = 10, mask: Any = None) -> Edit:
    """Join two vessel ends along the brightest path, drawn as a tube of the vessel's radius.

    The path is :func:`min_cost_path` inside the box around ``p0`` and ``p1`` (plus ``margin``
    voxels). Unless ``radius`` is given, the radius at each end is the largest distance from the
    background, within 3 voxels of the end, of the Otsu-thresholded image (or of the labels where
    the image is dark there); it is interpolated linearly along the path. Only background voxels
    are painted, and the tube stops at the box.

    Parameters
    ----------
    labels : ndarray of int or bool, shape (Z, Y, X)
        The labels.
    image : ndarray, shape (Z, Y, X)
        The intensities the path follows.
    p0, p1 : sequence of 3 float
        The two ends (z, y, x).
    spacing_zyx : sequence of 3 float, optional
        Voxel size in µm; radii are in the same unit.
    radius : float, optional
        Tube radius (µm); estimated from the image when None.
    label_value : int
        Value of the drawn voxels.
    margin : int
        Voxels around the two points in which the path may wander.
    mask : ndarray of bool, shape (Z, Y, X), optional
        Where the path may go (False = impassable), as in :func:`min_cost_path`.
    """
    from skimage.filters import threshold_otsu

    labels = _check_labels(labels)
    check_3d(image, "image")
    check_same_grid(labels, image)
    value = _check_value(labels, label_value)
    start, end = _check_point(p0, labels.shape, "start"), _check_point(p1, labels.shape, "end")
    spacing = np.array(check_spacing((1.0, 1.0, 1.0) if spacing_zyx is None else spacing_zyx))
    lo = [max(min(a, b) - margin, 0) for a, b in zip(start, end, strict=True)]
    hi = [min(max(a, b) + margin + 1, s) for a, b, s in zip(start, end, labels.shape, strict=True)]
    key = tuple(slice(a, b) for a, b in zip(lo, hi, strict=True))
    crop = np.asarray(image[key], dtype=np.float64)
    local = [tuple(int(c - o) for c, o in zip(p, lo, strict=True)) for p in (start, end)]
    if mask is not None:
        check_same_grid(labels, mask)
    path = min_cost_path(crop, local[0], local[1], spacing_zyx=spacing,
                         mask=None if mask is None else np.asarray(mask[key]))

    if radius is None:
        finite = np.isfinite(crop)
        bright = finite & (crop > threshold_otsu(crop[finite])) if finite.any() else finite
        from_image = ndi.distance_transform_edt(bright, sampling=spacing)
        from_labels = ndi.distance_transform_edt(labels[key] != 0, sampling=spacing)
        ends = []
        for p in local:
            r = _local_radius(from_image, p) if bright[p] else _local_radius(from_labels, p)
            ends.append(max(r - 1e-6, float(spacing.min())))  # voxels nearer than the edge
    else:
        if not radius > 0:
            raise InputError(f"radius {radius} must be a positive length (µm)")
        ends = [float(radius), float(radius)]
    steps = np.linalg.norm(np.diff(path, axis=0) * spacing, axis=1)
    along = np.concatenate([[0.0], np.cumsum(steps)])
    along = along / along[-1] if along[-1] > 0 else along
    radius_map = np.zeros(crop.shape)
    radius_map[tuple(path.T)] = ends[0] + (ends[1] - ends[0]) * along
    on_path = np.zeros(crop.shape, dtype=bool)
    on_path[tuple(path.T)] = True
    distance, nearest = ndi.distance_transform_edt(~on_path, sampling=spacing, return_indices=True)
    tube = distance <= radius_map[tuple(nearest)]
    tube &= labels[key] == 0
    return Edit.from_mask(labels, tube, value, offset=lo)


def paint_on_mip(labels: Any, image: Any, mip_coords_yx: Any, slab: tuple[int, int] | None = None,
                 label_value: int = 1, brush_radius: int = 0, depth_radius: int = 0,
                 connected: bool = False) -> Edit:
    """Paint a stroke drawn on a z-MIP at the depth of the brightest voxel under each pixel.

    Each pixel of the stroke (widened to a disk of ``brush_radius``) is placed at the z of its
    brightest voxel within ``slab`` -- the argmax index VC-Net (paper 002) uses to unproject MIP
    pixels -- so a vessel seen on the MIP is labelled in 3D in one stroke.

    Per pixel, a dab wider than the vessel scatters: the pixels beside the vessel go to the depth
    of their brightest noise. With ``connected=True`` each 8-connected piece of the stroke lands
    as one 26-connected piece instead (see :func:`connected_depths`): at the depth where the piece
    is brightest as a whole, and from there following the vessel at most one slice per pixel.

    This is the core of :func:`napari_vessel.refine.review.paint_on_projection`, which the Review
    dock calls: that one takes any projection axis, reads only the box under the stroke and
    places connected pieces by default; this one works on whole in-memory arrays along z.

    Parameters
    ----------
    labels : ndarray of int or bool, shape (Z, Y, X)
        The labels.
    image : ndarray, shape (Z, Y, X)
        The intensities whose MIP was drawn on.
    mip_coords_yx : array_like, shape (N, 2)
        Stroke positions (y, x) on the MIP. Pixels outside the image are skipped, as a brush does.
    slab : (int, int), optional
        ``[start, stop)`` along z of the projected slab; default: the whole stack.
    label_value : int
        Value to paint.
    brush_radius : int
        Radius in pixels of the disk painted around each stroke position.
    depth_radius : int
        Also paint this many voxels above and below the brightest one.
    connected : bool
        Place each connected piece of the stroke as one connected piece (default: each pixel at
        its own brightest voxel).
    """
    labels = _check_labels(labels)
    check_3d(image, "image")
    check_same_grid(labels, image)
    value = _check_value(labels, label_value)
    depth, height, width = labels.shape
    z0, z1 = (0, depth) if slab is None else (int(slab[0]), int(slab[1]))
    if not 0 <= z0 < z1 <= depth:
        raise InputError(f"slab {slab} is not inside the stack; use 0 <= start < stop <= {depth}")
    points = np.atleast_2d(np.asarray(mip_coords_yx, dtype=float))
    if points.shape[1] != 2 or points.size == 0:
        raise InputError(f"stroke positions of shape {points.shape} are not (N, 2) (y, x) pairs")
    points = np.round(points).astype(np.intp)
    r = int(brush_radius)
    dy, dx = np.mgrid[-r : r + 1, -r : r + 1]
    disk = dy**2 + dx**2 <= r * r
    ys = (points[:, :1] + dy[disk]).ravel()
    xs = (points[:, 1:] + dx[disk]).ravel()
    inside = (ys >= 0) & (ys < height) & (xs >= 0) & (xs < width)
    if not inside.any():
        raise InputError(f"the stroke is outside the image of {height}x{width} pixels")
    flat = np.unique(ys[inside] * width + xs[inside])
    ys, xs = flat // width, flat % width
    stack = np.asarray(image[z0:z1])
    if connected:
        zs = z0 + connected_depths(stack, ys, xs)
    else:
        zs = z0 + np.argmax(stack[:, ys, xs], axis=0)
    d = int(depth_radius)
    zs = (zs[None, :] + np.arange(-d, d + 1)[:, None]).ravel()
    ys, xs = np.tile(ys, 2 * d + 1), np.tile(xs, 2 * d + 1)
    keep = (zs >= z0) & (zs < z1)
    index = (zs[keep], ys[keep], xs[keep])
    old = labels[index]
    changed = old != value
    index = tuple(i[changed] for i in index)
    return Edit(index, old[changed], np.full(int(changed.sum()), value, labels.dtype))  # type: ignore[arg-type]


def _finite_columns(stack: np.ndarray, ys: np.ndarray, xs: np.ndarray) -> np.ndarray:
    """Columns ``stack[:, ys, xs]`` as float32, with NaN and infinities set to the darkest value."""
    columns = np.asarray(stack[:, ys, xs], dtype=np.float32)
    bad = ~np.isfinite(columns)
    if bad.any():
        columns[bad] = columns[~bad].min() if (~bad).any() else 0.0
    return columns


def connected_depths(stack: Any, ys: Any, xs: Any) -> np.ndarray:
    """One depth per stroke pixel such that each piece of the stroke lands as one piece.

    The pixels ``(ys, xs)`` are split into 8-connected pieces. Each piece starts at the depth
    where it is brightest as a whole (the argmax of its summed columns: the vessel under a dab
    adds up, the noise beside it does not) at its pixel brightest there, and grows outwards
    pixel by pixel: a pixel takes its parent's depth, or one slice up or down where that is
    clearly brighter (by three times the noise of the 3x3-averaged columns), so a stroke
    follows a vessel that changes depth while the pixels beside the vessel stay put. Each pixel
    is within one slice of an 8-neighbour it grew from, so the voxels form one 26-connected piece.

    Parameters
    ----------
    stack : ndarray, shape (Z, Y, X)
        The intensities along the projection axis (already cut to the slab).
    ys, xs : array_like of int, shape (N,)
        Distinct stroke pixels inside the plane.

    Returns
    -------
    ndarray of intp, shape (N,)
        Index along the first axis for each pixel.
    """
    stack = np.asarray(stack)
    ys, xs = np.asarray(ys, dtype=np.intp), np.asarray(xs, dtype=np.intp)
    size, height, width = stack.shape
    n = ys.size
    depths = np.zeros(n, dtype=np.intp)
    if n == 0 or size == 1:
        return depths
    raw = _finite_columns(stack, ys, xs)
    smooth = np.zeros_like(raw)  # 3x3 mean of the columns: less noise for the local steps
    for dy in (-1, 0, 1):
        for dx in (-1, 0, 1):
            smooth += _finite_columns(stack, np.clip(ys + dy, 0, height - 1),
                                      np.clip(xs + dx, 0, width - 1))
    smooth /= 9.0
    steps = np.diff(smooth, axis=0).ravel()
    noise = 1.4826 * float(np.median(np.abs(steps - np.median(steps)))) / np.sqrt(2.0)
    margin = 3.0 * noise
    y0, x0 = int(ys.min()), int(xs.min())
    plane = np.zeros((int(ys.max()) - y0 + 1, int(xs.max()) - x0 + 1), dtype=bool)
    plane[ys - y0, xs - x0] = True
    pieces, count = ndi.label(plane, structure=np.ones((3, 3), dtype=bool))
    which = pieces[ys - y0, xs - x0]
    index = np.full(plane.shape, -1, dtype=np.intp)
    index[ys - y0, xs - x0] = np.arange(n)
    done = np.zeros(n, dtype=bool)
    for piece in range(1, count + 1):
        members = np.nonzero(which == piece)[0]
        start_depth = int(np.argmax(raw[:, members].sum(axis=1)))
        seed = int(members[np.argmax(smooth[start_depth, members])])
        depths[seed], done[seed] = start_depth, True
        queue = [seed]
        for p in queue:  # breadth first: the list grows while it is read
            parent = int(depths[p])
            py, px = ys[p] - y0, xs[p] - x0
            for ny in range(max(py - 1, 0), min(py + 2, plane.shape[0])):
                for nx in range(max(px - 1, 0), min(px + 2, plane.shape[1])):
                    q = int(index[ny, nx])
                    if q < 0 or done[q]:
                        continue
                    column = smooth[:, q]
                    lo, hi = max(parent - 1, 0), min(parent + 2, size)
                    best = lo + int(np.argmax(column[lo:hi]))
                    depths[q] = best if column[best] - column[parent] > margin else parent
                    done[q] = True
                    queue.append(q)
    return depths
