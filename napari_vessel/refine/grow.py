"""A click on a vessel the labels miss adds it: the bright region grown from the click.

This is the positive prompt of interactive correction (the way nnInteractive and micro-sam take
points): :func:`add_vessel_at` snaps the click to the brightest voxel within a micrometre or two
(a click slightly beside a thin vessel still lands on it), estimates the local background (the
median of a ball around the click, in µm, so anisotropic voxels are respected) and the local peak
(the snapped voxel), and grows the connected region brighter than halfway between the two,
within that ball. The voxels of the region that are not labelled yet become vessel. The image is
lightly smoothed first (a Gaussian of :data:`SMOOTH_UM`), so single noisy voxels neither stop
nor leak the growth.

The click is refused when the spot is not clearly brighter than its surroundings (a peak less
than :data:`MIN_CONTRAST` robust standard deviations above the background): there is no vessel
to add there.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from typing import Any

import numpy as np
from scipy import ndimage as ndi

from napari_vessel.errors import InputError
from napari_vessel.io.volume import check_3d, check_spacing
from napari_vessel.refine.edits import (
    Edit,
    _check_connectivity,
    _check_labels,
    _check_point,
    _check_value,
    check_same_grid,
)

__all__ = ["add_vessel_at", "SNAP_UM", "SMOOTH_UM", "MIN_CONTRAST"]

#: A click moves to the brightest voxel within this distance (µm) before growing.
SNAP_UM = 1.5
#: Standard deviation (µm) of the Gaussian that smooths the image before growing.
SMOOTH_UM = 0.5
#: The snapped peak must exceed the local background by this many robust standard deviations.
MIN_CONTRAST = 3.0


def _check_radius(radius_um: Any) -> float:
    try:
        radius = float(radius_um)
    except (TypeError, ValueError):
        radius = math.nan
    if not math.isfinite(radius) or radius <= 0:
        raise InputError(f"radius {radius_um!r} µm must be a positive number of micrometres")
    return radius


def _ball(shape: tuple[int, ...], centre: Sequence[int], spacing: np.ndarray,
          radius: float) -> np.ndarray:
    """Voxels of a crop of ``shape`` whose centre is within ``radius`` µm of ``centre``."""
    grid = np.ogrid[tuple(slice(0, n) for n in shape)]
    dist2 = sum(((g - c) * s) ** 2 for g, c, s in zip(grid, centre, spacing, strict=True))
    return np.asarray(dist2 <= radius * radius)


def add_vessel_at(labels: Any, image: Any, point: Any,
                  spacing_zyx: Sequence[float] = (1.0, 1.0, 1.0), *, radius_um: float = 10.0,
                  value: int = 1, connectivity: int = 1, cancel: Any = None) -> Edit:
    """Add the vessel under a click: the bright region connected to it, within ``radius_um``.

    Parameters
    ----------
    labels : ndarray of int or bool, shape (Z, Y, X)
        The labels to add to; voxels already labelled (non-zero) are left as they are.
    image : array, shape (Z, Y, X)
        The stack on the same voxels (a NumPy, dask or zarr array: only a box around the click
        is read). NaN voxels (a masked region) are never added and do not count as background.
    point : array_like of 3 float
        The clicked voxel (z, y, x), in voxel coordinates of ``labels``.
    spacing_zyx : sequence of 3 float
        Voxel size in µm; the snap distance, the smoothing and the ball are measured in µm.
    radius_um : float
        The region grows at most this far from the snapped click (µm); the median of this ball
        is the local background.
    value : int
        The label value of the added voxels.
    connectivity : {1, 2, 3}
        Neighbours that connect while growing: 1 = 6 face neighbours, 3 = all 26.
    cancel : CancelToken, optional
        Checked between the steps.

    Returns
    -------
    Edit
        The unlabelled voxels of the grown region set to ``value`` (empty when the vessel is
        already labelled there).

    Raises
    ------
    InputError
        The click is outside the stack or on a masked (NaN) voxel, labels and image differ in
        shape, a parameter is not possible, or the clicked spot is not brighter than its
        surroundings (no vessel there).

    Examples
    --------
    >>> import numpy as np
    >>> image = np.zeros((9, 21, 21), np.float32)
    >>> image[4, 9:12, :] = 1.0  # a vessel along x
    >>> edit = add_vessel_at(np.zeros(image.shape, np.uint8), image, (4, 10, 10), radius_um=5)
    >>> sorted(set(edit.index[2].tolist())) == list(range(5, 16))
    True
    """
    labels = _check_labels(labels)
    check_3d(image, "image")
    check_same_grid(labels, image)
    spacing = np.asarray(check_spacing(spacing_zyx), float)
    radius = _check_radius(radius_um)
    value = _check_value(labels, value, "label value")
    _check_connectivity(connectivity)
    p = _check_point(point, labels.shape)

    # a box around the click, large enough for the ball and the smoothing's margin
    sigma = SMOOTH_UM / spacing
    reach = np.ceil(radius / spacing + 3 * sigma).astype(int) + 1
    box = tuple(slice(max(c - r, 0), min(c + r + 1, n))
                for c, r, n in zip(p, reach, labels.shape, strict=True))
    crop = np.asarray(image[box], dtype=np.float32)
    if crop.ndim != 3:
        raise InputError(f"the image has shape {tuple(image.shape)}; a one-channel 3D stack "
                         "(z, y, x) is needed to add a vessel")
    local = tuple(c - s.start for c, s in zip(p, box, strict=True))
    finite = np.isfinite(crop)  # NaN marks a masked region: never vessel, never background
    if not finite[local]:
        raise InputError(f"the image is masked (NaN) at {p}; click on a vessel outside the mask")
    if not finite.all():
        crop = np.where(finite, crop, np.float32(np.median(crop[finite])))
    smooth = ndi.gaussian_filter(crop, sigma, mode="nearest")
    if cancel is not None:
        cancel.check()

    # snap to the brightest voxel near the click
    near = _ball(crop.shape, local, spacing, SNAP_UM) & finite  # holds the clicked voxel
    candidates = np.flatnonzero(near)
    brightness = smooth.ravel()[candidates]
    best = candidates[brightness == brightness.max()]  # on a flat top, the one nearest the click
    offsets = (np.stack(np.unravel_index(best, crop.shape), 1) - np.asarray(local)) * spacing
    seed_flat = best[int(np.argmin((offsets ** 2).sum(axis=1)))]
    seed = tuple(int(i) for i in np.unravel_index(seed_flat, crop.shape))
    peak = float(smooth[seed])

    # the local background and its spread, from the ball around the snapped click
    ball = _ball(crop.shape, seed, spacing, radius) & finite
    values = smooth[ball]
    background = float(np.median(values))
    spread = 1.4826 * float(np.median(np.abs(values - background)))
    if not peak > background + MIN_CONTRAST * spread:
        where = tuple(int(c + s.start) for c, s in zip(seed, box, strict=True))
        raise InputError(
            f"no vessel at {p}: the brightest spot near the click ({where}, {peak:.4g}) is not "
            f"clearly brighter than its surroundings (median {background:.4g} within "
            f"{radius:g} µm); click on the vessel itself, or raise the radius for a wide vessel")
    level = background + 0.5 * (peak - background)

    # the connected region brighter than the level, within the ball
    bright = (smooth >= level) & ball
    structure = ndi.generate_binary_structure(3, connectivity)
    pieces, _count = ndi.label(bright, structure=structure)
    region = pieces == pieces[seed]
    if cancel is not None:
        cancel.check()
    add = region & (labels[box] == 0)
    offset = tuple(s.start for s in box)
    return Edit.from_mask(labels, add, value, offset)
