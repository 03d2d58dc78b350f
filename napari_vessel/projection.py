"""Maximum-intensity projections (MIPs) of image and label stacks.

Vessels are thin 3D trees: one slice shows fragments, a projection shows the tree. This module
computes full, slab, sliding (VC-Net, paper 002, eq. 1) and depth-coded MIPs of NumPy or dask
stacks, and keeps the MIP of a labels array up to date while it is painted (:class:`LabelMIP`),
recomputing only the image columns a brush stroke touched.

All functions take the stack first, shape (Z, Y, X), and project along ``axis`` (0 = z).
Dask arrays are reduced chunk by chunk, so the whole stack is never held in memory.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import Any

import numpy as np

from napari_vessel.errors import InputError
from napari_vessel.io.volume import check_3d, is_dask

__all__ = ["mip", "mip_with_depth", "slab_bounds", "slab_mip", "sliding_mips", "depth_coded_mip",
           "depth_colours", "DEPTH_HUES", "LabelMIP", "regions_from_paint_event"]

#: Hues (HSV circle, 0-1) of the first and last slice in a depth-coded MIP: red to violet, so the
#: two ends never share a colour.
DEPTH_HUES = (0.0, 0.75)

#: Below this many projected pixels a union of stroke regions is recomputed as one rectangle.
_SMALL_AREA = 64 * 64


def _check_axis(axis: int) -> int:
    if axis not in (0, 1, 2, -1, -2, -3):
        raise InputError(f"axis {axis!r} is not an axis of a 3D stack; use 0 (z), 1 (y) or 2 (x)")
    return axis % 3


def _as_stack(volume: Any, what: str = "image") -> Any:
    """NumPy or dask array of ``volume`` (a Volume, ndarray, dask or zarr array), checked 3D."""
    data = getattr(volume, "data", volume) if hasattr(volume, "spacing_zyx") else volume
    check_3d(data, what)
    if is_dask(data) or isinstance(data, np.ndarray):
        return data
    if hasattr(data, "chunks") and hasattr(data, "dtype"):  # zarr and friends: stay lazy
        import dask.array as da

        return da.from_array(data, chunks=data.chunks)
    return np.asarray(data)


def mip(volume: Any, axis: int = 0) -> np.ndarray:
    """Maximum-intensity projection along one axis.

    Parameters
    ----------
    volume : ndarray, dask array, zarr array or Volume, shape (Z, Y, X)
        The stack. Dask and zarr arrays are reduced chunk by chunk.
    axis : int
        Axis to project along: 0 (z, default), 1 (y) or 2 (x).

    Returns
    -------
    ndarray, shape of ``volume`` without ``axis``
        The maximum along ``axis``, same dtype as ``volume``.
    """
    axis = _check_axis(axis)
    data = _as_stack(volume)
    if is_dask(data):
        return np.asarray(data.max(axis=axis).compute())
    return data.max(axis=axis)


def mip_with_depth(volume: Any, axis: int = 0) -> tuple[np.ndarray, np.ndarray]:
    """MIP and, for each pixel, the index along ``axis`` of the voxel that gave the maximum.

    Parameters are as for :func:`mip`.

    Returns
    -------
    mip : ndarray
        The maximum along ``axis``.
    depth : ndarray of intp
        Index of the (first) maximum along ``axis`` -- the index VC-Net records to unproject
        MIP pixels back to voxels.
    """
    axis = _check_axis(axis)
    data = _as_stack(volume)
    if is_dask(data):
        import dask

        top, depth = dask.compute(data.max(axis=axis), data.argmax(axis=axis))
        return np.asarray(top), np.asarray(depth, dtype=np.intp)
    depth = data.argmax(axis=axis)
    top = np.take_along_axis(data, np.expand_dims(depth, axis), axis=axis).squeeze(axis)
    return top, depth.astype(np.intp, copy=False)


def slab_bounds(center: int, thickness: int, size: int) -> tuple[int, int]:
    """Start and stop (exclusive) of a slab of ``thickness`` slices around ``center``.

    The slab is ``[center - thickness // 2, center - thickness // 2 + thickness)``, cut at the
    ends of the stack (so it is thinner near the first and last slices).

    Raises
    ------
    InputError
        If ``thickness`` is not in ``1..size`` or ``center`` is outside the stack.
    """
    if int(thickness) != thickness or not 1 <= thickness <= size:
        raise InputError(
            f"slab thickness {thickness} is not possible for a stack of {size} slices; "
            f"choose a whole number from 1 to {size}"
        )
    if int(center) != center or not 0 <= center < size:
        raise InputError(
            f"slab centre {center} is outside the stack; choose a slice from 0 to {size - 1}"
        )
    start = int(center) - int(thickness) // 2
    return max(start, 0), min(start + int(thickness), size)


def slab_mip(volume: Any, center: int, thickness: int, axis: int = 0) -> np.ndarray:
    """MIP of the ``thickness`` slices around slice ``center`` (see :func:`slab_bounds`).

    Parameters
    ----------
    volume, axis
        As for :func:`mip`.
    center : int
        The current slice (e.g. the viewer's slider position along ``axis``).
    thickness : int
        Number of slices, 1 to the size of the stack along ``axis``.

    Returns
    -------
    ndarray
        The slab's maximum along ``axis``.
    """
    axis = _check_axis(axis)
    data = _as_stack(volume)
    start, stop = slab_bounds(center, thickness, data.shape[axis])
    key = tuple(slice(start, stop) if a == axis else slice(None) for a in range(3))
    return mip(data[key], axis=axis)


def sliding_mips(
    volume: Any, s: int = 5, t: int = 2, axis: int = 0
) -> tuple[np.ndarray, np.ndarray]:
    """Sliding MIPs of ``s`` slices every ``t`` slices (VC-Net, paper 002, sec. 3.1.1).

    MIP ``k`` (from 0) covers slices ``k*t`` to ``k*t + s - 1``; there are
    ``m = floor((K3 - s) / t) + 1`` of them (eq. 1), where ``K3`` is the stack's size along ``axis``.

    Parameters
    ----------
    volume
        As for :func:`mip`.
    s : int
        Slices per MIP (the paper uses 5).
    t : int
        Stride between MIPs (the paper uses 2).
    axis : int
        Axis to project along (the paper's vertical axis is z, 0).

    Returns
    -------
    mips : ndarray, shape (m, ...)
        The m MIPs, stacked along a new first axis.
    depths : ndarray of intp, shape (m, ...)
        For each MIP pixel, the index along ``axis`` (in the whole stack) of the voxel that gave
        the maximum, as VC-Net records for unprojection.
    """
    axis = _check_axis(axis)
    data = _as_stack(volume)
    size = data.shape[axis]
    if int(s) != s or not 1 <= s <= size:
        raise InputError(f"s = {s} slices per MIP is not possible with {size} slices; use 1 to {size}")
    if int(t) != t or t < 1:
        raise InputError(f"stride t = {t} must be a whole number of at least 1")
    m = (size - int(s)) // int(t) + 1  # eq. 1
    mips, depths = [], []
    for k in range(m):
        start = k * int(t)
        key = tuple(slice(start, start + int(s)) if a == axis else slice(None) for a in range(3))
        top, depth = mip_with_depth(data[key], axis=axis)
        mips.append(top)
        depths.append(depth + start)
    return np.stack(mips), np.stack(depths)


def depth_coded_mip(
    volume: Any,
    axis: int = 0,
    *,
    cmap: Callable[[np.ndarray], np.ndarray] | None = None,
    hue_range: tuple[float, float] = DEPTH_HUES,
    contrast_limits: tuple[float, float] | None = None,
) -> np.ndarray:
    """Colour MIP: hue tells the depth of the maximum, brightness its intensity.

    Parameters
    ----------
    volume, axis
        As for :func:`mip`.
    cmap : callable, optional
        Maps depths in [0, 1] (an array) to colours, shape (..., 3) or (..., 4), e.g. a
        matplotlib colormap. By default the hue goes through ``hue_range`` of the HSV circle
        (red = first slice, violet = last), which avoids red at both ends.
    hue_range : (float, float)
        Hues of the first and last slice for the default colours.
    contrast_limits : (float, float), optional
        Intensities shown as black and full brightness. Default: the 0.5 and 99.5 percentiles of
        the MIP.

    Returns
    -------
    ndarray of float32, shape (..., 3)
        RGB image in [0, 1].
    """
    axis = _check_axis(axis)
    data = _as_stack(volume)
    top, depth = mip_with_depth(data, axis=axis)
    top = top.astype(np.float32)
    if contrast_limits is None:
        low, high = np.percentile(top, [0.5, 99.5])
    else:
        low, high = (float(v) for v in contrast_limits)
    value = np.clip((top - low) / (high - low), 0, 1) if high > low else (top > low).astype(float)
    size = data.shape[axis]
    position = depth.astype(np.float32) / max(size - 1, 1)
    if cmap is None:
        return depth_colours(position, hue_range, value)
    colours = np.asarray(cmap(position), dtype=np.float32)[..., :3]
    return (colours * value[..., None]).astype(np.float32)


def depth_colours(position: Any, hue_range: tuple[float, float] = DEPTH_HUES,
                  value: Any = 1.0) -> np.ndarray:
    """The default colours of :func:`depth_coded_mip`, e.g. to draw its legend.

    Parameters
    ----------
    position : array_like
        Depths in [0, 1] (0 = first slice, 1 = last).
    hue_range : (float, float)
        Hues of the first and last slice.
    value : float or array_like
        Brightness in [0, 1], broadcast against ``position``.

    Returns
    -------
    ndarray of float32, shape ``position.shape + (3,)``
        RGB in [0, 1].
    """
    from skimage.color import hsv2rgb

    position = np.asarray(position, dtype=np.float32)
    hue = hue_range[0] + (hue_range[1] - hue_range[0]) * position
    value = np.broadcast_to(np.asarray(value, dtype=np.float32), hue.shape)
    hsv = np.stack([hue, np.ones_like(hue), value], axis=-1)
    return hsv2rgb(hsv).astype(np.float32)


def _plane_region(region: Any, shape: tuple[int, int, int], axis: int):
    """Normalise one changed region to ``(kind, a, b, lo, hi)`` in the projected plane.

    ``kind`` is "box" (``a``, ``b`` are slices) or "points" (``a``, ``b`` index arrays);
    ``lo, hi`` bound the change along ``axis`` (``None`` when unknown).
    """
    plane = [d for d in range(3) if d != axis]
    if isinstance(region, tuple) and all(isinstance(r, slice) for r in region):
        if len(region) == 3:
            bounds = [region[d].indices(shape[d])[:2] for d in range(3)]
            a, b = (slice(*bounds[d]) for d in plane)
            return "box", a, b, bounds[axis][0], bounds[axis][1]
        if len(region) == 2:
            a, b = (slice(*r.indices(shape[d])[:2]) for r, d in zip(region, plane, strict=True))
            return "box", a, b, None, None
    if isinstance(region, tuple) and len(region) in (2, 3):
        coords = [np.asarray(r, dtype=np.intp).ravel() for r in region]
    else:
        array = np.asarray(region)
        if array.ndim != 2 or array.shape[1] not in (2, 3):
            raise InputError(
                f"changed region {type(region).__name__} {getattr(array, 'shape', '')} is not "
                "understood; give (z, y, x) index arrays, an (N, 3) coordinate array, or a tuple "
                "of 2 or 3 slices"
            )
        coords = list(np.round(array).astype(np.intp).T)
    dims = range(3) if len(coords) == 3 else plane
    inside = np.ones(coords[0].shape, dtype=bool)
    for c, d in zip(coords, dims, strict=True):
        inside &= (c >= 0) & (c < shape[d])
    lo_hi: tuple[int | None, int | None] = (None, None)
    if len(coords) == 3:
        depth = coords[axis][inside]
        lo_hi = (int(depth.min()), int(depth.max()) + 1) if depth.size else (0, 0)
        coords = [coords[d] for d in plane]
    return "points", coords[0][inside], coords[1][inside], lo_hi[0], lo_hi[1]


def regions_from_paint_event(atoms: Sequence[Any]) -> list[Any]:
    """Changed regions from a napari Labels ``paint`` event's ``value`` (a list of history atoms).

    napari 0.9 stores two kinds of atoms: mask-based edits (brush, fill, polygon) with a
    ``slice_key`` bounding box, and ``data_setitem`` edits ``(indices, old_values, new_values)``.
    The result can be passed to :meth:`LabelMIP.update`. Undo and redo emit no paint event.
    """
    regions = []
    for atom in atoms:
        key = getattr(atom, "slice_key", None)
        if key is not None:
            regions.append(tuple(key))
        elif isinstance(atom, tuple) and len(atom) == 3 and isinstance(atom[0], tuple):
            regions.append(tuple(atom[0]))
        else:
            raise InputError(f"paint event item {type(atom).__name__} is not a known history atom")
    return regions


class LabelMIP:
    """The MIP of a labels stack, kept up to date while the labels are painted.

    After a brush stroke only the image columns the stroke touched are recomputed (from the
    labels along ``axis``), so painting, erasing and filling are all exact and a stroke on a
    200x1024x1024 stack costs well under a millisecond (see ``docs/benchmarks-refine.md``).

    Parameters
    ----------
    labels : ndarray, shape (Z, Y, X)
        The labels (any integer or bool dtype).
    axis : int
        Axis to project along.
    mode : {"max", "any"}
        ``"max"``: the largest label value along the column; ``"any"``: 1 where any voxel of the
        column is labelled (uint8).
    slab : (int, int), optional
        Project only ``[start, stop)`` along ``axis`` (see :func:`slab_bounds`); default: all.

    Attributes
    ----------
    mip : ndarray
        The projection. Every method updates it in place, so a viewer layer can show it
        directly and only needs a refresh.
    """

    def __init__(
        self, labels: Any, *, axis: int = 0, mode: str = "max", slab: tuple[int, int] | None = None
    ) -> None:
        if mode not in ("max", "any"):
            raise InputError(f"label MIP mode {mode!r} is unknown; use 'max' or 'any'")
        check_3d(labels, "labels")
        self.axis = _check_axis(axis)
        self.mode = mode
        self.shape = tuple(int(s) for s in labels.shape)
        self.slab = self._check_slab(slab)
        self.mip: np.ndarray | None = None
        self.recompute(labels)

    def _check_slab(self, slab: tuple[int, int] | None) -> tuple[int, int] | None:
        if slab is None:
            return None
        size = self.shape[self.axis]
        start, stop = (int(v) for v in slab)
        if not 0 <= start < stop <= size:
            raise InputError(
                f"slab {slab} is not inside the stack; give (start, stop) with "
                f"0 <= start < stop <= {size}"
            )
        return start, stop

    def _stack(self, labels: Any) -> Any:
        """``labels`` with the projection axis first, cut to the slab (a view for NumPy)."""
        if tuple(labels.shape) != self.shape:
            raise InputError(
                f"labels shape {tuple(labels.shape)} differs from the MIP's {self.shape}; "
                "make a new LabelMIP for the new labels"
            )
        if self.axis != 0:  # a view for NumPy; other arrays (zarr) are sliced lazily along z
            labels = np.moveaxis(np.asarray(labels), self.axis, 0)
        moved = labels
        if self.slab is not None:
            moved = moved[self.slab[0] : self.slab[1]]
        return moved

    def _project(self, block: np.ndarray) -> np.ndarray:
        if self.mode == "any":
            return np.any(block, axis=0).astype(np.uint8)
        return np.asarray(block).max(axis=0)

    def recompute(self, labels: Any) -> np.ndarray:
        """Recompute the whole projection from ``labels`` (e.g. after undo), in place."""
        projected = self._project(self._stack(labels))
        if getattr(self, "mip", None) is None:
            self.mip = projected
        else:
            self.mip[...] = projected
        return self.mip

    def set_slab(self, labels: Any, slab: tuple[int, int] | None) -> np.ndarray:
        """Project a new slab (``None`` for the whole stack), e.g. when the slider moves."""
        self.slab = self._check_slab(slab)
        return self.recompute(labels)

    def update(self, labels: Any, region: Any) -> tuple[slice, slice] | None:
        """Recompute the projection where ``labels`` changed inside ``region``.

        Parameters
        ----------
        labels : ndarray, shape (Z, Y, X)
            The labels after the change.
        region : tuple, ndarray or list
            What changed: a tuple of (z, y, x) index arrays (as from ``np.nonzero``), an (N, 3)
            array of voxel coordinates, a tuple of 3 slices (bounding box), a tuple of 2 slices
            or 2 index arrays in the projected plane, or a list of any of these
            (e.g. from :func:`regions_from_paint_event`).

        Returns
        -------
        (slice, slice) or None
            Bounding box of the recomputed pixels in :attr:`mip`, or None if nothing was in range.
        """
        regions = region if isinstance(region, list) else [region]
        rects, points, bounds, area = [], [], [], 0
        for item in regions:
            kind, a, b, lo, hi = _plane_region(item, self.shape, self.axis)
            start, stop = self.slab or (0, self.shape[self.axis])
            if lo is not None and (hi <= max(lo, start) or lo >= stop):
                continue  # nothing changed inside the projected stack or slab
            if kind == "box":
                if a.stop > a.start and b.stop > b.start:
                    rects.append((a.start, a.stop, b.start, b.stop))
                    bounds.append(rects[-1])
                    area += (a.stop - a.start) * (b.stop - b.start)
            elif a.size:
                points.append((a, b))
                bounds.append((int(a.min()), int(a.max()) + 1, int(b.min()), int(b.max()) + 1))
                area += a.size
        if not bounds:
            return None
        box = np.array(bounds)
        y0, y1 = int(box[:, 0].min()), int(box[:, 1].max())
        x0, x1 = int(box[:, 2].min()), int(box[:, 3].max())
        stack = self._stack(labels)
        if (y1 - y0) * (x1 - x0) <= max(_SMALL_AREA, 2 * area) or not isinstance(
            stack, np.ndarray
        ):
            self.mip[y0:y1, x0:x1] = self._project(stack[:, y0:y1, x0:x1])
        else:  # a long or scattered stroke: gather only the touched columns
            touched = np.zeros((y1 - y0, x1 - x0), dtype=bool)
            for r in rects:
                touched[r[0] - y0 : r[1] - y0, r[2] - x0 : r[3] - x0] = True
            for a, b in points:
                touched[a - y0, b - x0] = True
            ys, xs = np.nonzero(touched)
            ys += y0
            xs += x0
            self.mip[ys, xs] = self._project(stack[:, ys, xs])
        return slice(y0, y1), slice(x0, x1)
