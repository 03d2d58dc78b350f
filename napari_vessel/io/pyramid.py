"""OME-Zarr pyramids: plan the lower resolutions of a stack and write them chunk by chunk.

Each level halves y and x of the one before (z too while the voxels stay near-isotropic, see
:func:`plan_levels`) until y and x fit in :data:`SMALLEST` voxels. A level is computed from the
level before it, one output chunk at a time, so memory holds one chunk and the 2 x 2 x 2 region
it comes from, whatever the stack's size. Images are averaged (``"mean"``); labels take the
maximum (``"max"``): a binary mask stays 0/1 and a vessel one voxel wide still shows at the
coarsest level, where a mean would round it away and nearest-neighbour would keep only every
other one. Levels are written into an image made by :func:`~napari_vessel.io.zarr.create_zarr`,
each marked complete and added to the ``multiscales`` metadata only once written, so the metadata
never lists a level that is not all there.
"""

from __future__ import annotations

import itertools
import math
from pathlib import Path
from typing import Any

import numpy as np

from napari_vessel.errors import InputError
from napari_vessel.io.zarr import CHUNKS, mark_complete
from napari_vessel.progress import CancelToken, Progress, no_progress

__all__ = ["SMALLEST", "plan_levels", "level_shape", "downsample", "write_pyramid"]

#: Default size (voxels in y and x) the smallest level fits in: one screen tile.
SMALLEST = 256

#: z is halved with y and x when it stays at most this much coarser than they are afterwards.
ISOTROPY = math.sqrt(2)

_METHODS = ("mean", "max")


def plan_levels(shape: Any, spacing_zyx: Any, *, smallest: int = SMALLEST,
                max_levels: int | None = None) -> list[tuple[int, int, int]]:
    """The downsampling factor (z, y, x) of each level below level 0, from the level before it.

    y and x are halved (an axis of one voxel is kept) until both fit in ``smallest`` voxels. z is
    halved too when its voxel would then be at most :data:`ISOTROPY` times the y/x voxel: a stack
    with 2 µm slices and 0.5 µm pixels keeps its slices for two levels, then halves all three.

    Parameters
    ----------
    shape : (int, int, int)
        Level 0 (z, y, x).
    spacing_zyx : (float, float, float)
        Voxel size of level 0.
    smallest : int
        Stop once y and x are both at most this.
    max_levels : int, optional
        At most this many levels below level 0.

    Returns
    -------
    list of (int, int, int)
        One factor per level below level 0 (empty when level 0 already fits).
    """
    if isinstance(smallest, bool) or not isinstance(smallest, (int, np.integer)) or smallest < 1:
        raise InputError(f"the smallest pyramid level must be a positive number of voxels, "
                         f"not {smallest!r}")
    size = [int(s) for s in shape]
    spacing = [float(s) for s in spacing_zyx]
    factors: list[tuple[int, int, int]] = []
    while max(size[1], size[2]) > smallest and (max_levels is None or len(factors) < max_levels):
        fy, fx = (2 if size[1] > 1 else 1), (2 if size[2] > 1 else 1)
        yx = math.sqrt(spacing[1] * fy * spacing[2] * fx)
        fz = 2 if size[0] > 1 and 2 * spacing[0] <= ISOTROPY * yx * (1 + 1e-9) else 1
        factor = (fz, fy, fx)
        factors.append(factor)
        size = list(level_shape(size, factor))
        spacing = [s * f for s, f in zip(spacing, factor, strict=True)]
    return factors


def level_shape(shape: Any, factor: Any) -> tuple[int, ...]:
    """Shape of the level below one of ``shape``: each axis divided by its factor, rounded up."""
    return tuple(-(-int(s) // int(f)) for s, f in zip(shape, factor, strict=True))


def downsample(block: np.ndarray, factor: Any, method: str) -> np.ndarray:
    """Reduce each ``factor``-sized window of ``block`` to one voxel by its mean or max.

    Parameters
    ----------
    block : ndarray, shape (Z, Y, X)
        A region starting on a window boundary.
    factor : (int, int, int)
        Window size per axis.
    method : {"mean", "max"}
        Mean for intensities (integer types are rounded), max for labels.

    Returns
    -------
    ndarray, shape :func:`level_shape` ``(block.shape, factor)``
        Same dtype as ``block``. Windows cut short at the far edges use the voxels they have.
    """
    if method not in _METHODS:
        raise InputError(f"downsampling method {method!r}: use 'mean' or 'max'")
    block = np.asarray(block)
    factor = tuple(int(f) for f in factor)
    out_shape = level_shape(block.shape, factor)
    pad = [(0, o * f - s) for o, f, s in zip(out_shape, factor, block.shape, strict=True)]
    windows = tuple(itertools.chain.from_iterable(zip(out_shape, factor, strict=True)))
    axes = tuple(range(1, 2 * block.ndim, 2))
    if method == "max":  # repeating the edge voxels does not change a maximum
        padded = np.pad(block, pad, mode="edge") if any(p[1] for p in pad) else block
        return padded.reshape(windows).max(axis=axes)
    padded = np.pad(block, pad) if any(p[1] for p in pad) else block
    total = padded.reshape(windows).sum(axis=axes, dtype=np.float64)
    counts = np.ones((1,) * block.ndim)
    for axis, (o, f, s) in enumerate(zip(out_shape, factor, block.shape, strict=True)):
        count = np.full(o, f, dtype=np.float64)
        count[-1] = s - (o - 1) * f
        counts = counts * count.reshape([-1 if a == axis else 1 for a in range(block.ndim)])
    mean = total / counts
    if block.dtype.kind in "iub":
        info = np.iinfo(block.dtype) if block.dtype.kind != "b" else None
        mean = np.rint(mean)
        if info is not None:
            mean = np.clip(mean, info.min, info.max)
    return mean.astype(block.dtype)


def write_pyramid(path: str | Path, *, method: str, smallest: int = SMALLEST,
                  max_levels: int | None = None, progress: Progress | None = None,
                  cancel: CancelToken | None = None) -> list[tuple[int, ...]]:
    """Add the lower resolutions to an OME-Zarr image whose level 0 is complete.

    Parameters
    ----------
    path : str or Path
        An image made by :func:`~napari_vessel.io.zarr.create_zarr` (one level, marked
        complete), usually still under its temporary name.
    method : {"mean", "max"}
        ``"mean"`` for intensities and probabilities, ``"max"`` for labels.
    smallest, max_levels
        As in :func:`plan_levels`.
    progress : callable(float, str), optional
        Told the fraction of the levels' chunks written.
    cancel : CancelToken, optional
        Checked between chunks.

    Returns
    -------
    list of tuple of int
        The shape of every level, level 0 first.
    """
    import zarr

    if method not in _METHODS:
        raise InputError(f"downsampling method {method!r}: use 'mean' or 'max'")
    progress = progress or no_progress
    group = zarr.open_group(str(path), mode="r+")
    attrs = dict(group.attrs)
    multiscales = attrs["multiscales"]
    datasets = multiscales[0]["datasets"]
    if len(datasets) != 1:
        raise InputError(f"{path} already has {len(datasets)} levels; write the pyramid once")
    previous = group[datasets[0]["path"]]
    spacing = [float(s) for s in datasets[0]["coordinateTransformations"][0]["scale"]]
    factors = plan_levels(previous.shape, spacing, smallest=smallest, max_levels=max_levels)
    shapes = [tuple(int(s) for s in previous.shape)]
    for factor in factors:
        shapes.append(level_shape(shapes[-1], factor))
    total = sum(_n_chunks(shape) for shape in shapes[1:]) or 1
    done = 0
    for k, factor in enumerate(factors, start=1):
        shape = shapes[k]
        chunks = tuple(min(c, s) for c, s in zip(CHUNKS, shape, strict=True))
        array = group.create_array(str(k), shape=shape, dtype=previous.dtype, chunks=chunks,
                                   config={"write_empty_chunks": True},
                                   overwrite=True)  # an unlisted level left by a stopped run
        for out in _chunk_regions(shape, chunks):
            if cancel is not None:
                cancel.check()
            source = tuple(slice(o.start * f, min(o.stop * f, s)) for o, f, s
                           in zip(out, factor, previous.shape, strict=True))
            array[out] = downsample(np.asarray(previous[source]), factor, method)
            done += 1
            progress(done / total, f"pyramid level {k}/{len(factors)}")
        mark_complete(array)
        spacing = [s * f for s, f in zip(spacing, factor, strict=True)]
        datasets.append({"path": str(k), "coordinateTransformations": [
            {"type": "scale", "scale": spacing}]})
        multiscales[0].update({"datasets": datasets, "type": method, "metadata": {
            "method": "napari_vessel.io.pyramid.downsample", "description":
            f"{method} over 2x windows in y and x (z too while near-isotropic)"}})
        group.attrs["multiscales"] = multiscales  # listed only once all there
        previous = array
    return shapes


def _n_chunks(shape: tuple[int, ...]) -> int:
    chunks = [min(c, s) for c, s in zip(CHUNKS, shape, strict=True)]
    return math.prod(-(-s // c) for s, c in zip(shape, chunks, strict=True))


def _chunk_regions(shape: tuple[int, ...], chunks: tuple[int, ...]) -> Any:
    counts = [-(-s // c) for s, c in zip(shape, chunks, strict=True)]
    for coords in np.ndindex(*counts):
        yield tuple(slice(i * c, min((i + 1) * c, s))
                    for i, c, s in zip(coords, chunks, shape, strict=True))
