"""Vessel-aware label edits: clean up components and fill holes (paths and MIP painting: refine_paths).

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

from napari_vessel.errors import InputError
from napari_vessel.io.volume import check_3d
from napari_vessel.postprocess.labels import hole_mask

__all__ = ["Edit", "apply_edit", "check_same_grid", "erase_small_components", "keep_components_at",
           "erase_component_at", "fill_holes_with_nearest_label"]


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


def erase_small_components(labels: Any, min_size: int, connectivity: int = 1) -> Edit:
    """Erase connected components with fewer than ``min_size`` voxels, as an undoable edit.

    Unlike :func:`napari_vessel.postprocess.labels.remove_small` (which returns new labels, joins
    any non-zero voxels and connects through corners by default), touching components of
    different label values stay separate and the default connectivity is the faces only.

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
        Neighbours that connect (see :func:`erase_small_components`).
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


def fill_holes_with_nearest_label(labels: Any, per_slice: bool = False) -> Edit:
    """Fill background regions enclosed by labels, each voxel with its nearest label's value.

    An undoable edit for hand refinement; :func:`napari_vessel.postprocess.labels.fill_holes`
    (the post-processing step) instead returns new labels with the holes set to the largest value.

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
    holes = hole_mask(foreground, per_slice=per_slice)
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
