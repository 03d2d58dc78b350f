"""Sliding-window tiling and blending, independent of any network or device.

The volume is extended by reflection (paper 000, section 4.3: "reflection padding is applied to
the test images before slicing") and covered by overlapping patches. Each patch prediction is
weighted by an importance map (Gaussian, or constant = plain averaging as in the paper) and the
weighted sum is divided by the summed weights.

Coordinates are *padded* coordinates: padded index ``q`` shows source index ``q - pad_before``,
mirrored at the borders. Patches are never materialised as a padded copy of the whole volume:
each region is gathered from the source (NumPy, dask or Zarr) through reflected indices, so a
lazy volume is read block by block. The output is cut into blocks; every block is finished from
all the patches that touch it, so the block-wise result equals the single-block (in-memory) one.
"""

from __future__ import annotations

import itertools
import math
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np

from napari_vessel.errors import InputError
from napari_vessel.progress import CancelToken, Progress, no_progress

__all__ = [
    "TilePlan",
    "plan_tiles",
    "tile_starts",
    "importance_weights",
    "reflect_indices",
    "read_region",
    "run_tiles",
    "patch_work",
]


def _round_up(value: int, multiple: int) -> int:
    return int(math.ceil(value / multiple) * multiple)


def tile_starts(total: int, patch: int, overlap: float) -> list[int]:
    """Evenly spread patch starts covering ``[0, total)`` with at least ``overlap`` overlap.

    Parameters
    ----------
    total, patch : int
        Extent to cover and patch length (``patch <= total``).
    overlap : float
        Fraction of the patch shared by neighbours, in [0, 1).

    Examples
    --------
    >>> tile_starts(10, 4, 0.0)
    [0, 3, 6]
    """
    if patch >= total:
        return [0]
    stride = max(1, int(patch * (1.0 - overlap)))
    count = int(math.ceil((total - patch) / stride)) + 1
    return sorted({int(round(v)) for v in np.linspace(0, total - patch, count)})


@dataclass(frozen=True)
class TilePlan:
    """Where the patches go (all in padded coordinates).

    Attributes
    ----------
    shape : tuple of int
        Source volume shape (Z, Y, X).
    patch : tuple of int
        Patch size actually used (after rounding to the network's multiple and shrinking to a
        small volume).
    pad_before : tuple of int
        Reflected voxels before the source along each axis.
    padded_shape : tuple of int
        Extent covered by the patches.
    starts : tuple of tuple of int
        Patch starts per axis; the patches are their Cartesian product.
    """

    shape: tuple[int, int, int]
    patch: tuple[int, int, int]
    pad_before: tuple[int, int, int]
    padded_shape: tuple[int, int, int]
    starts: tuple[tuple[int, ...], tuple[int, ...], tuple[int, ...]]

    @property
    def n_tiles(self) -> int:
        """Number of patches."""
        return int(np.prod([len(s) for s in self.starts]))


def plan_tiles(shape: Sequence[int], patch: Sequence[int], overlap: float = 0.25,
               multiple: Sequence[int] = (1, 1, 1), margin: Sequence[int] | None = None
               ) -> TilePlan:
    """Choose patch size, reflection padding and patch positions for a volume.

    Parameters
    ----------
    shape : (int, int, int)
        Volume shape (Z, Y, X).
    patch : (int, int, int)
        Requested patch size; rounded up to ``multiple`` and, along an axis where the volume is
        smaller, shrunk to the volume's size rounded up to ``multiple`` (e.g. 10 slices with a
        32-slice patch and multiple 4 use one 12-slice patch).
    overlap : float
        Fraction of a patch shared with its neighbour, in [0, 1).
    multiple : (int, int, int)
        Every patch size must be a multiple of these (the network's down-sampling).
    margin : (int, int, int), optional
        Reflected context added at both ends of axes that need several patches, so border voxels
        are also seen from the middle of a patch. Default none: a border voxel then sees what a
        pass over the whole volume would show it, and the volume costs fewer patches.
    """
    if not 0.0 <= overlap < 1.0:
        raise InputError(f"overlap must be in [0, 1), not {overlap}; 0.25 is a good start")
    if len(shape) != 3 or len(patch) != 3 or min(int(p) for p in patch) < 1:
        raise InputError(f"patch size {tuple(patch)} must be three positive numbers (z, y, x)")
    sizes, befores, totals, starts = [], [], [], []
    for axis in range(3):
        length, m = int(shape[axis]), int(multiple[axis])
        p = min(_round_up(int(patch[axis]), m), _round_up(length, m))
        if length <= p:
            total, before = p, (p - length) // 2
        else:
            extra = 0 if margin is None else int(margin[axis])
            total, before = length + 2 * extra, extra
        sizes.append(p)
        befores.append(before)
        totals.append(total)
        starts.append(tuple(tile_starts(total, p, overlap)))
    return TilePlan(tuple(int(s) for s in shape), tuple(sizes), tuple(befores), tuple(totals),
                    tuple(starts))


def importance_weights(patch: Sequence[int], blending: str = "gaussian",
                       sigma_scale: float = 0.125, floor: float = 1e-3) -> np.ndarray:
    """Weight of each patch voxel in the blend.

    ``"gaussian"``: separable Gaussian centred on the patch with sigma ``sigma_scale * size`` per
    axis, peak 1, clipped below at ``floor`` so border voxels still count; ``"constant"``: ones
    (plain averaging, paper 000, section 4.3).

    Returns
    -------
    ndarray of float32, shape ``patch``
    """
    if blending == "constant":
        return np.ones(tuple(patch), dtype=np.float32)
    if blending != "gaussian":
        raise InputError(f"blending must be 'gaussian' or 'constant', not {blending!r}")
    weights = np.ones((1, 1, 1), dtype=np.float64)
    for axis, size in enumerate(patch):
        centre = (size - 1) / 2
        sigma = max(sigma_scale * size, 1e-6)
        profile = np.exp(-((np.arange(size) - centre) ** 2) / (2 * sigma**2))
        shape = [1, 1, 1]
        shape[axis] = size
        weights = weights * profile.reshape(shape)
    weights /= weights.max()
    return np.maximum(weights, floor).astype(np.float32)


def reflect_indices(start: int, stop: int, length: int, pad_before: int) -> np.ndarray:
    """Source indices of padded positions ``start..stop-1`` (mirror without repeating the edge).

    Matches ``numpy.pad(mode="reflect")``, also for padding wider than the axis.
    """
    q = np.arange(start, stop) - pad_before
    if length == 1:
        return np.zeros_like(q)
    period = 2 * (length - 1)
    q = np.mod(q, period)
    return np.where(q >= length, period - q, q)


def read_region(source: Any, plan: TilePlan, lo: Sequence[int], hi: Sequence[int]) -> np.ndarray:
    """The padded region ``[lo, hi)`` of ``source`` as float32, reading only what it needs.

    Works for anything that slices like NumPy (NumPy, dask, Zarr): the bounding box of the needed
    source indices is read once, then the mirrored positions are gathered from it.
    """
    index = [reflect_indices(lo[a], hi[a], plan.shape[a], plan.pad_before[a]) for a in range(3)]
    box = tuple(slice(int(i.min()), int(i.max()) + 1) for i in index)
    data = np.asarray(source[box])
    local = [i - b.start for i, b in zip(index, box, strict=True)]
    return np.ascontiguousarray(data[np.ix_(*local)], dtype=np.float32)


def _block_ranges(total: int, block: int) -> list[tuple[int, int]]:
    return [(s, min(s + block, total)) for s in range(0, total, block)]


def _touching_blocks(plan: TilePlan, block_shape: Sequence[int] | None) -> list[tuple]:
    """Output blocks of :func:`run_tiles`: per axis ``(lo, hi, starts of the patches touching it)``."""
    block_shape = tuple(plan.padded_shape) if block_shape is None else tuple(block_shape)
    per_axis_blocks = []
    for a in range(3):
        blocks = []
        for b0, b1 in _block_ranges(plan.padded_shape[a], max(1, int(block_shape[a]))):
            # only blocks that hold source voxels matter
            s0, s1 = plan.pad_before[a], plan.pad_before[a] + plan.shape[a]
            if b1 <= s0 or b0 >= s1:
                continue
            touching = [s for s in plan.starts[a] if s < b1 and s + plan.patch[a] > b0]
            blocks.append((max(b0, s0), min(b1, s1), touching))
        per_axis_blocks.append(blocks)
    return list(itertools.product(*per_axis_blocks))


def patch_work(plan: TilePlan, block_shape: Sequence[int] | None = None) -> float:
    """Patch predictions :func:`run_tiles` makes with ``block_shape``, per distinct patch.

    1.0 means no patch is predicted twice; a block re-predicts every patch it shares with its
    neighbours, so small blocks cost more (:func:`napari_vessel.inference.block_window.run_blocks` predicts
    each patch once whatever the block).
    """
    runs = sum(int(np.prod([len(b[2]) for b in blk]))
               for blk in _touching_blocks(plan, block_shape))
    return runs / plan.n_tiles


def add_tiles(region: np.ndarray, tiles: Sequence[Sequence[int]], lo: Sequence[int],
              patch: Sequence[int], predict_batch: Callable[[np.ndarray], np.ndarray],
              weights: np.ndarray, acc: np.ndarray, norm: np.ndarray, *, batch_size: int,
              cancel: CancelToken | None = None,
              done: Callable[[int], None] | None = None) -> None:
    """Predict ``tiles`` (start corners) of ``region`` in batches and add them, weighted.

    ``acc`` and ``norm`` (the region's shape) receive ``prediction * weights`` and ``weights``;
    ``region``, ``acc`` and ``norm`` start at ``lo`` of the padded volume. ``done(n)`` is called
    after each batch of ``n`` patches; ``cancel`` is checked before each batch.
    """
    tiles = list(tiles)
    for first in range(0, len(tiles), batch_size):
        if cancel is not None:
            cancel.check()
        chunk = tiles[first:first + batch_size]
        slices = [tuple(slice(t[a] - lo[a], t[a] - lo[a] + patch[a]) for a in range(3))
                  for t in chunk]
        pred = predict_batch(np.stack([region[s] for s in slices]))
        for s, p in zip(slices, pred, strict=True):
            acc[s] += p * weights
            norm[s] += weights
        if done is not None:
            done(len(chunk))


def run_tiles(plan: TilePlan, source: Any, predict_batch: Callable[[np.ndarray], np.ndarray], *,
              weights: np.ndarray, batch_size: int = 1, out: Any = None,
              block_shape: Sequence[int] | None = None,
              check_region: Callable[[np.ndarray], None] | None = None,
              progress: Progress | None = None, cancel: CancelToken | None = None) -> Any:
    """Predict every patch, blend, and write the result (source shape) into ``out``.

    Parameters
    ----------
    plan : TilePlan
    source : array-like, shape ``plan.shape``
        NumPy, dask or Zarr array; read region by region.
    predict_batch : callable
        ``(B, pz, py, px) float32 -> (B, pz, py, px) float32`` probabilities.
    weights : ndarray, shape ``plan.patch``
        Importance map (:func:`importance_weights`).
    batch_size : int
        Patches per call of ``predict_batch``.
    out : array-like, optional
        Output (NumPy or Zarr), shape ``plan.shape``; a new float32 array when None.
    block_shape : (int, int, int), optional
        Output block size in padded voxels; None processes the volume as one block.
    check_region : callable, optional
        Called with every input region read (e.g. to reject NaNs).
    progress, cancel
        Called after / checked before every batch. On cancel, :class:`Cancelled` is raised and
        ``out`` may be partly written.

    Returns
    -------
    The filled ``out``.
    """
    progress = progress or no_progress
    if out is None:
        out = np.empty(plan.shape, dtype=np.float32)
    patch = plan.patch
    block_list = _touching_blocks(plan, block_shape)
    total = sum(int(np.prod([len(b[2]) for b in blk])) for blk in block_list)
    count = [0]

    def step(n: int) -> None:
        count[0] += n
        progress(count[0] / total, f"patch {count[0]}/{total}")

    for blk in block_list:
        lo = [min(b[2]) for b in blk]
        hi = [max(b[2]) + patch[a] for a, b in enumerate(blk)]
        region = read_region(source, plan, lo, hi)
        if check_region is not None:
            check_region(region)
        acc = np.zeros(region.shape, dtype=np.float32)
        norm = np.zeros(region.shape, dtype=np.float32)
        add_tiles(region, itertools.product(*(b[2] for b in blk)), lo, patch, predict_batch,
                  weights, acc, norm, batch_size=batch_size, cancel=cancel, done=step)
        # write the block's source part
        keep = tuple(slice(b[0] - lo[a], b[1] - lo[a]) for a, b in enumerate(blk))
        target = tuple(slice(b[0] - plan.pad_before[a], b[1] - plan.pad_before[a])
                       for a, b in enumerate(blk))
        out[target] = acc[keep] / norm[keep]
    return out
