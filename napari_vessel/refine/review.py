"""Pure helpers behind the Review & refine widget: projected geometry, strokes, edits.

Everything here works on plain arrays and numbers (no viewer): where a projection of a stack sits
in space, which voxels a brush stroke drawn on a projection means, and how to keep an edit that was
computed in the background valid when the labels changed meanwhile.

Axes are (z, y, x); ``axis`` is the projection axis (0 = z) as in :mod:`napari_vessel.projection`.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import numpy as np

from napari_vessel.errors import InputError
from napari_vessel.projection import depth_coded_mip, mip, slab_bounds, sliding_mips
from napari_vessel.refine.edits import Edit
from napari_vessel.refine.paths import paint_on_mip

__all__ = ["MODES", "check_mode", "project", "check_stack", "projected_geometry",
           "sliding_geometry", "slab_at", "region_from_update", "stroke_pixels",
           "paint_on_projection", "erase_columns", "still_valid", "depth_range",
           "projection_summary"]

#: The projections the widget offers.
MODES = ("full", "slab", "sliding", "depth-coded")


def check_stack(shape: Sequence[int], name: str = "image") -> None:
    """Raise :class:`InputError` unless ``shape`` is a 3D stack that can be projected."""
    shape = tuple(int(s) for s in shape)
    if len(shape) != 3:
        raise InputError(
            f"'{name}' has {len(shape)} axes {shape}; a maximum-intensity projection needs a 3D "
            "stack (z, y, x). Choose a 3D image layer."
        )
    if min(shape) < 1:
        raise InputError(f"'{name}' is empty {shape}; choose a layer with data")


def check_mode(mode: str) -> str:
    """Return ``mode`` if it is one of :data:`MODES`, else raise :class:`InputError`."""
    if mode not in MODES:
        raise InputError(f"projection {mode!r} is unknown; choose one of {', '.join(MODES)}")
    return mode


def project(data: Any, mode: str = "full", *, axis: int = 0, slab: tuple[int, int] | None = None,
            s: int = 5, t: int = 2, contrast_limits: tuple[float, float] | None = None
            ) -> np.ndarray:
    """One projection of a stack, as the widget shows it.

    Parameters
    ----------
    data : array, shape (Z, Y, X)
        The stack (NumPy, dask or zarr; dask is reduced chunk by chunk).
    mode : {"full", "slab", "sliding", "depth-coded"}
        Full MIP; MIP of ``slab``; sliding MIPs of ``s`` slices every ``t`` (shape (m, ., .));
        colour MIP with hue = depth of the maximum (shape (., ., 3)).
    axis : int
        Projection axis.
    slab : (int, int), optional
        ``[start, stop)`` along ``axis`` for ``mode="slab"``.
    s, t : int
        Slices per sliding MIP and stride.
    contrast_limits : (float, float), optional
        Black and full brightness of the depth-coded MIP.

    Returns
    -------
    ndarray
    """
    check_mode(mode)
    check_stack(data.shape)
    if mode == "full":
        return mip(data, axis=axis)
    if mode == "slab":
        if slab is None:
            raise InputError("a slab MIP needs a slab (start, stop)")
        start, stop = (int(v) for v in slab)
        size = data.shape[axis % 3]
        if not 0 <= start < stop <= size:
            raise InputError(f"slab {slab} is not inside the stack; use 0 <= start < stop <= {size}")
        key = tuple(slice(start, stop) if d == axis % 3 else slice(None) for d in range(3))
        return mip(data[key], axis=axis)
    if mode == "sliding":
        return sliding_mips(data, s=s, t=t, axis=axis)[0]
    return depth_coded_mip(data, axis=axis, contrast_limits=contrast_limits)


def _number(value: float) -> str:
    return f"{round(float(value), 2):g}"


def depth_range(size: int, spacing: float = 1.0) -> tuple[str, str]:
    """Texts for the first and last slice of a depth-coded MIP's legend.

    Parameters
    ----------
    size : int
        Slices along the projection axis.
    spacing : float
        Voxel size along the axis in µm (the layer's scale).

    Returns
    -------
    (str, str)
        E.g. ``("0 µm (slice 0)", "94 µm (slice 47)")``: depth from the first slice.
    """
    last = max(int(size) - 1, 0)
    return ("0 µm (slice 0)", f"{_number(last * float(spacing))} µm (slice {last})")


def projection_summary(mode: str, size: int, *, axis_name: str = "z", spacing: float = 1.0,
                       slab: tuple[int, int] | None = None, s: int = 5, t: int = 2) -> str:
    """A one-line description of a projection, for the widget's status line.

    Parameters
    ----------
    mode : str
        One of :data:`MODES`.
    size : int
        Slices along the projection axis.
    axis_name : str
        Name of the axis ("z", "y" or "x").
    spacing : float
        Voxel size along the axis in µm.
    slab : (int, int), optional
        ``[start, stop)`` of a slab MIP.
    s, t : int
        Slices per sliding MIP and stride.

    Examples
    --------
    >>> projection_summary("depth-coded", 48, spacing=2.0)
    'depth MIP of 48 slices along z, depth coded 0-94 µm (red = slice 0, violet = slice 47)'
    """
    check_mode(mode)
    size = int(size)
    if mode == "slab" and slab is not None:
        start, stop = (int(v) for v in slab)
        return f"slab MIP of slices {start}-{stop - 1} ({stop - start} of {size}) along {axis_name}"
    if mode == "sliding":
        count = max((size - int(s)) // max(int(t), 1) + 1, 0)
        return (f"{count} sliding MIPs of {int(s)} slices every {int(t)} along {axis_name} "
                f"({size} slices)")
    if mode == "depth-coded":
        last = max(size - 1, 0)
        return (f"depth MIP of {size} slices along {axis_name}, depth coded "
                f"0-{_number(last * float(spacing))} µm (red = slice 0, violet = slice {last})")
    return f"MIP of {size} slices along {axis_name}"


def _plane(axis: int) -> list[int]:
    return [d for d in range(3) if d != axis % 3]


def projected_geometry(scale: Sequence[float], translate: Sequence[float],
                       axis: int = 0) -> tuple[tuple[float, ...], tuple[float, ...]]:
    """Scale and translate of a 2D projection of a 3D layer along ``axis``.

    The projection keeps the two other axes, so it overlays the stack when viewed across ``axis``.
    """
    keep = _plane(axis)
    return (tuple(float(scale[d]) for d in keep), tuple(float(translate[d]) for d in keep))


def sliding_geometry(scale: Sequence[float], translate: Sequence[float], s: int, t: int,
                     axis: int = 0) -> tuple[tuple[float, ...], tuple[float, ...]]:
    """Scale and translate of a stack of sliding MIPs (``s`` slices every ``t``), shape (m, ., .).

    MIP ``k`` covers slices ``k*t .. k*t + s - 1``; it is placed at the centre of those slices
    along ``axis``, so along z it follows the viewer's slider.
    """
    keep = _plane(axis)
    step = float(scale[axis]) * int(t)
    start = float(translate[axis]) + (int(s) - 1) / 2 * float(scale[axis])
    return ((step, *(float(scale[d]) for d in keep)), (start, *(float(translate[d]) for d in keep)))


def slab_at(position: float, thickness: int, size: int) -> tuple[int, int]:
    """The slab of ``thickness`` slices around a (fractional) position along the axis.

    Like :func:`~napari_vessel.projection.slab_bounds`, with the position rounded and clipped to
    the stack (the viewer's slider may sit past the end of a smaller layer).
    """
    center = int(np.clip(np.round(float(position)), 0, size - 1))
    return slab_bounds(center, thickness, size)


def region_from_update(offset: Sequence[int], shape: Sequence[int], displayed: Sequence[int],
                       ndim: int = 3) -> tuple[slice, ...]:
    """The box of a labels layer that a partial view update covers.

    Parameters
    ----------
    offset : sequence of int
        Start of the updated region in the displayed axes (napari ``labels_update`` ``offset``).
    shape : sequence of int
        Size of the updated region; only the first ``len(offset)`` entries are used.
    displayed : sequence of int
        The layer's displayed axes, in the order of ``offset``.
    ndim : int
        Number of axes of the layer.

    Returns
    -------
    tuple of slice
        The box: the update's extent on displayed axes, everything on the others (a brush may
        reach other slices when it paints in 3D).
    """
    key = [slice(None)] * ndim
    for axis, start, size in zip(displayed, offset, shape, strict=False):
        key[int(axis)] = slice(int(start), int(start) + int(size))
    return tuple(key)


def stroke_pixels(atoms: Sequence[Any], shape: Sequence[int]) -> tuple[np.ndarray, int]:
    """Pixels and value of a stroke painted on a 2D labels image, from its history atoms.

    Parameters
    ----------
    atoms : sequence
        The ``value`` of a napari Labels ``paint`` event on the 2D image: mask-based atoms
        (``slice_key``, ``mask``, ``new_value``) or ``(indices, old, new)`` tuples.
    shape : sequence of int
        Shape of the 2D image.

    Returns
    -------
    coords : ndarray of intp, shape (N, 2)
        The changed pixels (row, column), without repeats.
    value : int
        The value painted (0 for the eraser). With several values, the last one.
    """
    rows, cols, value = [], [], 0
    for atom in atoms:
        key = getattr(atom, "slice_key", None)
        if key is not None:
            box = [s.indices(n)[:2] for s, n in zip(key, shape, strict=True)]
            mask = atom.mask
            if mask is None:
                mask = np.ones([b - a for a, b in box], dtype=bool)
            r, c = np.nonzero(np.asarray(mask).reshape([b - a for a, b in box]))
            rows.append(r + box[0][0])
            cols.append(c + box[1][0])
            value = int(np.asarray(atom.new_value).ravel()[0])
        elif isinstance(atom, tuple) and len(atom) == 3:
            index, _, new = atom
            rows.append(np.asarray(index[0], dtype=np.intp).ravel())
            cols.append(np.asarray(index[1], dtype=np.intp).ravel())
            value = int(np.asarray(new).ravel()[-1]) if np.size(new) else value
        else:
            raise InputError(f"stroke item {type(atom).__name__} is not a known history atom")
    if not rows:
        return np.empty((0, 2), dtype=np.intp), value
    flat = np.unique(np.concatenate(rows) * int(shape[1]) + np.concatenate(cols))
    coords = np.stack([flat // int(shape[1]), flat % int(shape[1])], axis=1).astype(np.intp)
    return coords, value


def _moved(index: tuple[np.ndarray, ...], axis: int) -> tuple[np.ndarray, ...]:
    """Indices in (axis, plane...) order back to (z, y, x) order."""
    out: list[np.ndarray] = [np.empty(0)] * 3
    for source, target in enumerate([axis, *_plane(axis)]):
        out[target] = index[source]
    return tuple(out)


def _check_stroke(coords: Any, plane_shape: Sequence[int]) -> np.ndarray:
    coords = np.atleast_2d(np.asarray(coords, dtype=float))
    if coords.size == 0 or coords.shape[1] != 2:
        raise InputError(f"stroke positions of shape {coords.shape} are not (N, 2) pixel pairs")
    return coords


def paint_on_projection(labels: np.ndarray, image: Any, coords: Any, *, axis: int = 0,
                        slab: tuple[int, int] | None = None, label_value: int = 1,
                        brush_radius: int = 0, depth_radius: int = 0,
                        connected: bool = True) -> Edit:
    """Place a stroke drawn on a MIP along ``axis`` at the depth of the vessel under it.

    :func:`~napari_vessel.refine.paths.paint_on_mip` for any projection axis, reading only the box of
    the image under the stroke (so a dask image is not loaded whole). By default each connected
    piece of the stroke (a dab, a drag) lands as one 26-connected piece: at the depth where the
    piece is brightest as a whole, following the vessel at most one slice per pixel
    (:func:`~napari_vessel.refine.paths.connected_depths`); a single pixel goes to its brightest
    voxel. With ``connected=False`` every pixel goes to its own brightest voxel, so the pixels
    of a dab beside a vessel scatter to the depths of their brightest noise.

    Parameters
    ----------
    labels : ndarray, shape (Z, Y, X)
        The labels.
    image : array, shape (Z, Y, X)
        The intensities (NumPy, dask or zarr).
    coords : array_like, shape (N, 2)
        Stroke pixels in the projected plane (the two axes other than ``axis``, in order).
    axis, slab, label_value, brush_radius, depth_radius, connected
        As for :func:`~napari_vessel.refine.paths.paint_on_mip`; ``slab`` is ``[start, stop)`` along
        ``axis``.

    Returns
    -------
    Edit
        Indices in the (z, y, x) labels.
    """
    axis = int(axis) % 3
    plane = _plane(axis)
    if tuple(labels.shape) != tuple(image.shape):
        raise InputError(
            f"labels shape {tuple(labels.shape)} differs from image shape {tuple(image.shape)}; "
            "choose the labels layer that belongs to this image"
        )
    sizes = [labels.shape[d] for d in plane]
    coords = _check_stroke(coords, sizes)
    r = int(brush_radius)
    lo = np.clip(np.floor(coords.min(axis=0)).astype(int) - r, 0, sizes)
    hi = np.clip(np.ceil(coords.max(axis=0)).astype(int) + r + 1, 0, sizes)
    if np.any(hi <= lo):
        raise InputError(f"the stroke is outside the image of {sizes[0]}x{sizes[1]} pixels")
    key = [slice(None)] * 3
    for d, a, b in zip(plane, lo, hi, strict=True):
        key[d] = slice(int(a), int(b))
    crop_labels = np.moveaxis(np.asarray(labels[tuple(key)]), axis, 0)
    crop_image = np.moveaxis(np.asarray(image[tuple(key)]), axis, 0)
    edit = paint_on_mip(crop_labels, crop_image, coords - lo, slab=slab, label_value=label_value,
                        brush_radius=r, depth_radius=depth_radius, connected=connected)
    local = (edit.index[0], edit.index[1] + lo[0], edit.index[2] + lo[1])
    return Edit(_moved(local, axis), edit.old, edit.new)  # type: ignore[arg-type]


def erase_columns(labels: np.ndarray, coords: Any, *, axis: int = 0,
                  slab: tuple[int, int] | None = None) -> Edit:
    """Erase every labelled voxel under stroke pixels of a projection, within ``slab``.

    Parameters
    ----------
    labels : ndarray, shape (Z, Y, X)
        The labels.
    coords : array_like, shape (N, 2)
        Pixels in the projected plane; those outside the image are skipped.
    axis : int
        The projection axis.
    slab : (int, int), optional
        ``[start, stop)`` along ``axis``; default: the whole stack.
    """
    axis = int(axis) % 3
    plane = _plane(axis)
    sizes = [labels.shape[d] for d in plane]
    coords = np.round(_check_stroke(coords, sizes)).astype(np.intp)
    inside = np.all((coords >= 0) & (coords < sizes), axis=1)
    coords = coords[inside]
    size = labels.shape[axis]
    start, stop = (0, size) if slab is None else (int(slab[0]), int(slab[1]))
    if not 0 <= start < stop <= size:
        raise InputError(f"slab {slab} is not inside the stack; use 0 <= start < stop <= {size}")
    depth = np.arange(start, stop)
    a = np.repeat(depth, len(coords))
    b = np.tile(coords[:, 0], len(depth))
    c = np.tile(coords[:, 1], len(depth))
    index = _moved((a, b, c), axis)
    old = np.asarray(labels[index])
    changed = old != 0
    index = tuple(i[changed] for i in index)
    return Edit(index, old[changed], np.zeros(int(changed.sum()), labels.dtype))  # type: ignore[arg-type]


def still_valid(edit: Edit, labels: np.ndarray) -> Edit:
    """The part of ``edit`` whose voxels still hold their old values in ``labels``.

    An edit computed in the background must not overwrite what the user painted meanwhile.
    """
    if edit.size == 0:
        return edit
    current = np.asarray(labels[edit.index])
    same = current == edit.old
    if same.all():
        return edit
    return Edit(tuple(i[same] for i in edit.index), edit.old[same], edit.new[same])  # type: ignore[arg-type]
