"""Vessel-aware label edits: clean up components, fill holes, bridge gaps, paint on a MIP.

Every operation is a pure function of the arrays it is given. It returns an :class:`Edit` -- the
indices of the changed voxels with their old and new values -- and never modifies its input.
:func:`apply_edit` applies an edit to a copy (or in place); a napari widget applies it as one undo
step with ``layer.data_setitem(edit.index, edit.new)`` (see the :class:`Edit` docstring).

Points are voxel coordinates (z, y, x) in the labels' array, rounded to the nearest voxel.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np
from scipy import ndimage as ndi

from .errors import InputError
from .volume import check_3d, check_spacing

__all__ = ["Edit", "apply_edit", "check_same_grid", "remove_small_components", "keep_components_at",
           "erase_component_at", "fill_holes", "min_cost_path", "bridge_gap", "paint_on_mip"]


@dataclass(frozen=True)
class Edit:
    """A change to a labels array: ``labels[index]`` goes from ``old`` to ``new``.

    Only voxels whose value changes are listed. In a napari widget, apply it as one undo step::

        with layer.block_history():
            layer.data_setitem(edit.index, edit.new)

    Attributes
    ----------
    index : tuple of 3 ndarray of intp
        The (z, y, x) indices of the changed voxels.
    old, new : ndarray
        Values before and after, one per voxel, in the labels' dtype.
    """

    index: tuple[np.ndarray, np.ndarray, np.ndarray]
    old: np.ndarray
    new: np.ndarray

    @property
    def size(self) -> int:
        """Number of changed voxels."""
        return int(self.old.size)

    def inverse(self) -> Edit:
        """The edit that undoes this one."""
        return Edit(self.index, self.new, self.old)

    @classmethod
    def from_mask(
        cls, labels: np.ndarray, mask: np.ndarray, value: Any, offset: Sequence[int] = (0, 0, 0)
    ) -> Edit:
        """The edit setting ``labels[offset + mask]`` to ``value`` (scalar or array like mask).

        ``mask`` may cover a crop of ``labels`` that starts at ``offset``.
        """
        key = tuple(slice(o, o + s) for o, s in zip(offset, mask.shape, strict=True))
        region = labels[key]
        values = np.broadcast_to(np.asarray(value, dtype=labels.dtype), mask.shape)
        changed = mask & (region != values)
        local = np.nonzero(changed)
        index = tuple(i + o for i, o in zip(local, offset, strict=True))
        return cls(index, region[changed], values[changed].copy())  # type: ignore[arg-type]


def apply_edit(labels: np.ndarray, edit: Edit, *, copy: bool = True) -> np.ndarray:
    """Return ``labels`` with ``edit`` applied (a new array unless ``copy=False``)."""
    out = labels.copy() if copy else labels
    out[edit.index] = edit.new
    return out


def _check_labels(labels: Any) -> np.ndarray:
    check_3d(labels, "labels")
    labels = np.asarray(labels)
    if not (labels.dtype == bool or np.issubdtype(labels.dtype, np.integer)):
        raise InputError(
            f"labels have dtype {labels.dtype}; labels must be integers (or bool). Convert a "
            "probability map with a threshold first."
        )
    return labels


def _check_value(labels: np.ndarray, value: int, what: str = "label_value") -> int:
    top = 1 if labels.dtype == bool else np.iinfo(labels.dtype).max
    if int(value) != value or not 1 <= value <= top:
        raise InputError(f"{what} {value} is not possible for {labels.dtype} labels; use 1 to {top}")
    return int(value)


def _check_point(point: Any, shape: tuple[int, ...], what: str = "point") -> tuple[int, int, int]:
    coords = np.asarray(point, dtype=float).ravel()
    if coords.size != 3 or not np.all(np.isfinite(coords)):
        raise InputError(f"{what} {point!r} is not a (z, y, x) position; give three numbers")
    index = tuple(int(c) for c in np.round(coords))
    if any(not 0 <= i < s for i, s in zip(index, shape, strict=True)):
        raise InputError(
            f"{what} {tuple(round(c, 1) for c in coords)} is outside the volume of shape {shape}; "
            "click inside the labels"
        )
    return index  # type: ignore[return-value]


def check_same_grid(labels: Any, image: Any, labels_scale: Sequence[float] | None = None,
                    image_scale: Sequence[float] | None = None) -> None:
    """Raise :class:`InputError` unless labels and image cover the same voxels.

    Parameters
    ----------
    labels, image : array, shape (Z, Y, X)
        The two stacks.
    labels_scale, image_scale : sequence of float, optional
        Voxel sizes (e.g. napari layer ``scale``), compared when both are given.
    """
    if tuple(labels.shape) != tuple(image.shape):
        raise InputError(
            f"labels shape {tuple(labels.shape)} differs from image shape {tuple(image.shape)}; "
            "choose the labels layer that belongs to this image"
        )
    if labels_scale is not None and image_scale is not None:
        if not np.allclose(labels_scale, image_scale, rtol=1e-6):
            raise InputError(
                f"labels scale {tuple(labels_scale)} differs from image scale "
                f"{tuple(image_scale)}; give both layers the same voxel size"
            )


def _check_connectivity(connectivity: int) -> None:
    if connectivity not in (1, 2, 3):
        raise InputError(f"connectivity {connectivity!r} must be 1 (faces), 2 (edges) or 3 (corners)")


def _components(labels: np.ndarray, connectivity: int) -> np.ndarray:
    """Connected components (different label values are never joined), 0 = background."""
    _check_connectivity(connectivity)
    foreground = labels != 0
    values = labels[foreground]
    if labels.dtype == bool or values.size == 0 or values.min() == values.max():
        structure = ndi.generate_binary_structure(3, connectivity)
        return ndi.label(foreground, structure=structure, output=np.int32)[0]
    from skimage.measure import label

    return label(labels, background=0, connectivity=connectivity)


def remove_small_components(labels: Any, min_size: int, connectivity: int = 1) -> Edit:
    """Erase connected components with fewer than ``min_size`` voxels.

    Parameters
    ----------
    labels : ndarray of int or bool, shape (Z, Y, X)
        The labels. Touching components with different label values are separate components.
    min_size : int
        Components smaller than this are set to 0.
    connectivity : {1, 2, 3}
        Neighbours that connect: 1 = 6 face neighbours, 2 = 18, 3 = all 26.

    Returns
    -------
    Edit
    """
    labels = _check_labels(labels)
    if int(min_size) != min_size or min_size < 1:
        raise InputError(f"minimum size {min_size} must be a whole number of voxels, at least 1")
    components = _components(labels, connectivity)
    small = np.bincount(components.ravel()) < min_size
    small[0] = False
    return Edit.from_mask(labels, small[components], 0)


def keep_components_at(labels: Any, points: Any, connectivity: int = 1) -> Edit:
    """Erase every component except those containing one of ``points``.

    Parameters
    ----------
    labels : ndarray of int or bool, shape (Z, Y, X)
        The labels.
    points : array_like, shape (N, 3)
        Voxel positions (z, y, x) on the components to keep.
    connectivity : {1, 2, 3}
        Neighbours that connect (see :func:`remove_small_components`).
    """
    labels = _check_labels(labels)
    points = np.atleast_2d(np.asarray(points, dtype=float))
    index = [_check_point(p, labels.shape) for p in points]
    if not index:
        raise InputError("no points given; click on the components to keep")
    for p in index:
        if labels[p] == 0:
            raise InputError(f"point {p} is on the background; click on a labelled voxel")
    components = _components(labels, connectivity)
    keep = np.zeros(int(components.max()) + 1, dtype=bool)
    keep[[components[p] for p in index]] = True
    keep[0] = True
    return Edit.from_mask(labels, ~keep[components], 0)


def erase_component_at(labels: Any, point: Any, connectivity: int = 1) -> Edit:
    """Erase the connected component (of one label value) that contains ``point``."""
    labels = _check_labels(labels)
    p = _check_point(point, labels.shape)
    if labels[p] == 0:
        raise InputError(f"nothing to erase at {p}: it is background; click on a labelled voxel")
    _check_connectivity(connectivity)
    from skimage.segmentation import flood

    return Edit.from_mask(labels, flood(labels, p, connectivity=connectivity), 0)


def fill_holes(labels: Any, per_slice: bool = False) -> Edit:
    """Fill background regions enclosed by labels.

    Parameters
    ----------
    labels : ndarray of int or bool, shape (Z, Y, X)
        The labels.
    per_slice : bool
        False: fill cavities closed in 3D. True: fill holes closed within each z slice (e.g. the
        lumen of a vessel running along z, which is open at its ends in 3D).

    Returns
    -------
    Edit
        Each filled voxel takes the value of the nearest labelled voxel.
    """
    labels = _check_labels(labels)
    foreground = labels != 0
    if per_slice:
        filled = np.stack([ndi.binary_fill_holes(plane) for plane in foreground])
    else:
        filled = ndi.binary_fill_holes(foreground)
    holes = filled & ~foreground
    if not holes.any():
        return Edit.from_mask(labels, holes, 0)
    values = labels[foreground]
    if labels.dtype == bool or values.min() == values.max():
        return Edit.from_mask(labels, holes, values[0])
    where = np.nonzero(holes)
    lo = [max(int(w.min()) - 1, 0) for w in where]
    key = tuple(slice(a, int(w.max()) + 2) for a, w in zip(lo, where, strict=True))
    crop = labels[key]
    nearest = ndi.distance_transform_edt(crop == 0, return_distances=False, return_indices=True)
    return Edit.from_mask(labels, holes[key], crop[tuple(nearest)], offset=lo)


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
                 label_value: int = 1, brush_radius: int = 0, depth_radius: int = 0) -> Edit:
    """Paint a stroke drawn on a z-MIP at the depth of the brightest voxel under each pixel.

    Each pixel of the stroke (widened to a disk of ``brush_radius``) is placed at the z of its
    brightest voxel within ``slab`` -- the argmax index VC-Net (paper 002) uses to unproject MIP
    pixels -- so a vessel seen on the MIP is labelled in 3D in one stroke.

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
    column = np.asarray(image[z0:z1])[:, ys, xs]
    zs = z0 + np.argmax(column, axis=0)
    d = int(depth_radius)
    zs = (zs[None, :] + np.arange(-d, d + 1)[:, None]).ravel()
    ys, xs = np.tile(ys, 2 * d + 1), np.tile(xs, 2 * d + 1)
    keep = (zs >= z0) & (zs < z1)
    index = (zs[keep], ys[keep], xs[keep])
    old = labels[index]
    changed = old != value
    index = tuple(i[changed] for i in index)
    return Edit(index, old[changed], np.full(int(changed.sum()), value, labels.dtype))  # type: ignore[arg-type]
