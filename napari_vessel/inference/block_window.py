"""Sliding window over blocks aligned to the patch grid: every patch is predicted exactly once.

:func:`napari_vessel.inference.sliding_window.run_tiles` finishes each output block from *all* the patches
that touch it, so a patch shared by two blocks is predicted twice. Here every patch belongs to
one block (the block holding its start) and a block's voxel range along each axis runs from its
first patch's start to the next block's first start. A patch then only reaches forward, into
the next block along each axis; the weighted sums it leaves there (the "spill") are saved to a
scratch folder and added when that block is done. Blocks run in raster order, so a block is
complete once its own patches are predicted; memory holds one block and its spill, whatever
the size of the volume. Coordinates are padded coordinates, as in :mod:`.sliding_window`.
"""

from __future__ import annotations

import itertools
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from napari_vessel.errors import InputError
from napari_vessel.inference.sliding_window import TilePlan, add_tiles, read_region
from napari_vessel.progress import CancelToken, Progress, no_progress

__all__ = ["BlockGrid", "block_grid", "run_blocks", "overhang_box", "FORWARD"]


@dataclass(frozen=True)
class BlockGrid:
    """Blocks along each axis as ``(lo, hi, owned patch starts)`` in padded coordinates.

    ``lo`` of a block is its first patch's start, ``hi`` the next block's ``lo`` (the padded
    extent for the last); the block's patches reach at most to the next block's ``hi``.
    """

    plan: TilePlan
    axes: tuple[tuple[tuple[int, int, tuple[int, ...]], ...], ...]

    @property
    def counts(self) -> tuple[int, int, int]:
        """Blocks per axis."""
        return tuple(len(a) for a in self.axes)

    def extent(self, axis: int, index: int) -> tuple[int, int]:
        """``(lo, end)`` of the voxels the patches of a block cover along ``axis``."""
        lo, hi, owned = self.axes[axis][index]
        return lo, max(hi, owned[-1] + self.plan.patch[axis])

    def box(self, index: Sequence[int]) -> tuple[list[int], list[int], list[int]]:
        """``(lo, hi, end)`` of block ``index`` (z, y, x): it finishes the voxels ``[lo, hi)``, its
        patches cover ``[lo, end)``."""
        spans = [self.extent(a, i) for a, i in enumerate(index)]
        return ([s[0] for s in spans], [self.axes[a][i][1] for a, i in enumerate(index)],
                [s[1] for s in spans])

    def tiles(self, index: Sequence[int]) -> Any:
        """The start corners of the patches block ``index`` owns."""
        return itertools.product(*(self.axes[a][i][2] for a, i in enumerate(index)))


def _groups(starts: Sequence[int], per_block: int, total: int) -> list[tuple]:
    groups = []
    for k in range(0, len(starts), per_block):
        owned = tuple(starts[k:k + per_block])
        hi = starts[k + per_block] if k + per_block < len(starts) else total
        groups.append((0 if k == 0 else owned[0], hi, owned))
    return groups


def block_grid(plan: TilePlan, block_shape: Sequence[int]) -> BlockGrid:
    """Group the patches of ``plan`` into blocks of about ``block_shape`` voxels.

    Along each axis a block holds as many consecutive patches as fit in ``block_shape`` (at
    least one), more where patches overlap so much that one would reach two blocks ahead.

    Raises
    ------
    InputError
        A block smaller than a patch along some axis.
    """
    if len(tuple(block_shape)) != 3:
        raise InputError(f"block size {tuple(block_shape)} must be three numbers (z, y, x)")
    axes = []
    for a in range(3):
        block, patch, starts = int(block_shape[a]), plan.patch[a], plan.starts[a]
        if block < patch:
            raise InputError(
                f"block size {tuple(int(b) for b in block_shape)} is smaller than a patch "
                f"{plan.patch} along {'zyx'[a]}; give blocks at least one patch large")
        gaps = np.diff(starts) if len(starts) > 1 else np.array([patch])
        per_block = max(1, (block - patch) // max(1, int(gaps.max())) + 1)
        while True:
            groups = _groups(starts, per_block, plan.padded_shape[a])
            reach_ok = all(g[2][-1] + patch <= nxt[1] for g, nxt in zip(groups, groups[1:],
                                                                          strict=False))
            if reach_ok or per_block >= len(starts):
                break
            per_block += 1
        axes.append(tuple(groups))
    return BlockGrid(plan, tuple(axes))


def _spill_name(dest: tuple[int, ...], src: tuple[int, ...]) -> str:
    return "spill-{}-{}-{}-from-{}-{}-{}.npy".format(*dest, *src)


def run_blocks(plan: TilePlan, source: Any, predict_batch: Callable[[np.ndarray], np.ndarray], *,
               weights: np.ndarray, out: Any, block_shape: Sequence[int], scratch: str | Path,
               batch_size: int = 1, check_region: Callable[[np.ndarray], None] | None = None,
               progress: Progress | None = None, cancel: CancelToken | None = None) -> Any:
    """Predict every patch once, block by block, and write the blended result into ``out``.

    Parameters
    ----------
    plan, source, predict_batch, weights, batch_size, check_region, progress, cancel
        As in :func:`napari_vessel.inference.sliding_window.run_tiles`.
    out : array-like, shape ``plan.shape``
        Where the result goes (a Zarr array for volumes larger than memory); written block by
        block, each voxel once.
    block_shape : (int, int, int)
        About how many padded voxels a block's patches cover (see :func:`block_grid`).
    scratch : str or Path
        Folder for the partial sums carried between blocks (created; emptied as blocks finish).

    Returns
    -------
    The filled ``out``. The blend equals :func:`run_tiles`'s up to float rounding (sums are
    added in another order).
    """
    progress = progress or no_progress
    grid = block_grid(plan, block_shape)
    scratch = Path(scratch)
    scratch.mkdir(parents=True, exist_ok=True)
    count, total = [0], plan.n_tiles

    def step(n: int) -> None:
        count[0] += n
        progress(count[0] / total, f"patch {count[0]}/{total}")

    for index in itertools.product(*(range(n) for n in grid.counts)):
        lo, hi, end = grid.box(index)
        shape = tuple(e - s for s, e in zip(lo, end, strict=True))
        sums = np.zeros((2, *shape), dtype=np.float32)  # weighted predictions, weights
        for file in sorted(scratch.glob(_spill_name(index, ("*",) * 3).replace("*-*-*", "*"))):
            spill = np.load(file)
            sums[(slice(None), *(slice(0, n) for n in spill.shape[1:]))] += spill
            file.unlink()
        region = read_region(source, plan, lo, end)
        if check_region is not None:
            check_region(region)
        add_tiles(region, grid.tiles(index), lo, plan.patch, predict_batch, weights, sums[0], sums[1],
                  batch_size=batch_size, cancel=cancel, done=step)
        del region
        _write_block(plan, sums, lo, hi, out)
        _save_spill(grid, sums, index, lo, hi, scratch)
    return out


def _write_block(plan: TilePlan, sums: np.ndarray, lo: list[int], hi: list[int], out: Any) -> None:
    """Write the finished voxels ``[lo, hi)`` that belong to the source into ``out``."""
    keep, target = [], []
    for a in range(3):
        s0 = max(lo[a], plan.pad_before[a])
        s1 = min(hi[a], plan.pad_before[a] + plan.shape[a])
        if s1 <= s0:
            return
        keep.append(slice(s0 - lo[a], s1 - lo[a]))
        target.append(slice(s0 - plan.pad_before[a], s1 - plan.pad_before[a]))
    keep_t = tuple(keep)
    out[tuple(target)] = sums[(0, *keep_t)] / sums[(1, *keep_t)]


#: Steps to the (up to 7) following blocks a block's patches reach: +1 along some axes.
FORWARD = tuple(s for s in itertools.product((0, 1), repeat=3) if any(s))


def overhang_box(shape: Sequence[int], lo: Sequence[int], hi: Sequence[int],
                 step: Sequence[int]) -> tuple[slice, slice, slice]:
    """Where, in a block's sums of spatial ``shape`` (its extent from ``lo``), lie the voxels of
    the block ``step`` ahead (:data:`FORWARD`); they start at that block's ``lo``."""
    return tuple(slice(hi[a] - lo[a], shape[a]) if step[a] else slice(0, hi[a] - lo[a])
                 for a in range(3))


def _save_spill(grid: BlockGrid, sums: np.ndarray, index: tuple[int, ...], lo: list[int],
                hi: list[int], scratch: Path) -> None:
    """Save what the block's patches left in each following block (its origin is that block's lo)."""
    for step in FORWARD:
        dest = tuple(i + d for i, d in zip(index, step, strict=True))
        if any(d >= n for d, n in zip(dest, grid.counts, strict=True)):
            continue
        part = sums[(slice(None), *overhang_box(sums.shape[1:], lo, hi, step))]
        if part.size and part[1].any():
            np.save(scratch / _spill_name(dest, index), part)
