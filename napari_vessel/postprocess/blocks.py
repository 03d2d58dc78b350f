"""The post-processing of :mod:`napari_vessel.postprocess.labels`, block by block, with the same answer.

For a probability map on disk (a Zarr array) larger than memory. Steps that only look at a voxel
(a threshold) run per block. Steps that need global connectivity (small-piece removal, hysteresis,
3D hole filling) label every block with SciPy, store the labels in a scratch Zarr array, join the
labels that touch across block faces (the structuring element's neighbours, corners included) with
a union of a sparse graph (:func:`scipy.sparse.csgraph.connected_components`), and then decide per
global component: its size, whether it holds a confident voxel, whether it touches the border.
Memory holds a block and one number per label. Hole filling per z slice works slab by slab.
"""

from __future__ import annotations

import itertools
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np
from scipy import ndimage as ndi

from napari_vessel.errors import InputError
from napari_vessel.postprocess.labels import Postprocessing, _structure, fill_holes, threshold
from napari_vessel.progress import CancelToken, Progress, no_progress

__all__ = ["postprocess_blocks", "block_slices"]


def block_slices(shape: tuple[int, ...], block: tuple[int, ...]) -> list[tuple[slice, ...]]:
    """The blocks of ``shape``, in raster order, each ``block`` large (smaller at the ends)."""
    ranges = [[slice(s, min(s + b, n)) for s in range(0, n, b)] for n, b in zip(shape, block,
                                                                               strict=True)]
    return list(itertools.product(*ranges))


def _half_offsets(structure: np.ndarray) -> list[tuple[int, ...]]:
    """One of each pair of opposite neighbour offsets of a 3x3x3 structuring element."""
    offsets = [tuple(int(v) - 1 for v in idx) for idx in zip(*np.nonzero(structure), strict=True)]
    return [o for o in offsets if o > (0, 0, 0)]


def _pairs(ext: np.ndarray, offsets: list[tuple[int, ...]]) -> np.ndarray:
    """Pairs of different non-zero labels that are neighbours in ``ext``, shape (N, 2)."""
    found = []
    for off in offsets:
        a = ext[tuple(slice(max(0, -d), n - max(0, d)) for d, n in zip(off, ext.shape,
                                                                        strict=True))]
        b = ext[tuple(slice(max(0, d), n - max(0, -d)) for d, n in zip(off, ext.shape,
                                                                        strict=True))]
        touch = (a != 0) & (b != 0) & (a != b)
        if touch.any():
            found.append(np.stack([a[touch], b[touch]], axis=1))
    return np.unique(np.concatenate(found), axis=0) if found else np.empty((0, 2), np.int64)


def _components(read_mask: Callable, shape: tuple[int, ...], block: tuple[int, ...],
                structure: np.ndarray, store: Path,
                mark: Callable[[tuple[slice, ...], np.ndarray], np.ndarray] | None,
                cancel: CancelToken | None) -> tuple[Any, np.ndarray, np.ndarray, np.ndarray]:
    """Label the mask globally: (block labels on disk, component of each label, voxels per
    component, components holding a ``mark``-ed label)."""
    import zarr
    from scipy.sparse import coo_matrix
    from scipy.sparse.csgraph import connected_components

    dtype = np.uint32 if int(np.prod(shape)) < 2**32 - 1 else np.uint64
    ids = zarr.open_array(str(store), mode="w", shape=shape, chunks=block, dtype=dtype,
                          zarr_format=2)
    sizes, marked, offset = [np.zeros(1)], [], 0
    for sl in block_slices(shape, block):
        if cancel is not None:
            cancel.check()
        local, count = ndi.label(read_mask(sl), structure=structure)
        sizes.append(np.bincount(local.ravel(), minlength=count + 1)[1:])
        local = local.astype(dtype)
        local[local > 0] += dtype(offset)
        ids[sl] = local
        if mark is not None:
            marked.append(np.asarray(mark(sl, local), dtype=np.int64))
        offset += count
    edges = [np.empty((0, 2), np.int64)]
    offsets = _half_offsets(structure)
    for sl in block_slices(shape, block):  # join labels across the faces before each block
        if cancel is not None:
            cancel.check()
        ext = ids[tuple(slice(max(0, s.start - 1), s.stop) for s in sl)]
        edges.append(_pairs(ext, offsets).astype(np.int64))
    pairs = np.concatenate(edges)
    graph = coo_matrix((np.ones(len(pairs), np.int8), (pairs[:, 0], pairs[:, 1])),
                       shape=(offset + 1, offset + 1))
    _, component = connected_components(graph, directed=False)
    voxels = np.bincount(component, weights=np.concatenate(sizes))
    hit = np.zeros(len(voxels), dtype=bool)
    for labels in marked:
        hit[component[labels[labels > 0]]] = True
    return ids, component, voxels, hit


def postprocess_blocks(prob: Any, labels: Any, recipe: Postprocessing | None, *,
                       block: tuple[int, int, int], scratch: str | Path,
                       progress: Progress | None = None,
                       cancel: CancelToken | None = None) -> list[str]:
    """Write into ``labels`` what :meth:`~napari_vessel.postprocess.labels.Postprocessing.apply`
    gives for ``prob``, working on blocks of ``block`` voxels.

    Parameters
    ----------
    prob : array-like (e.g. Zarr), shape (Z, Y, X)
        Probability map; read block by block.
    labels : array-like (e.g. Zarr), shape (Z, Y, X), uint8
        Where the labels go (1 vessel, 0 background); written block by block.
    recipe : Postprocessing, optional
        The post-processing (None: a plain threshold at 0.5); one with a level rule must be
        resolved first (:meth:`~napari_vessel.postprocess.labels.Postprocessing.resolve`).
    block : (int, int, int)
        Block size; the result does not depend on it.
    scratch : str or Path
        Folder for the label scratch arrays (created).

    Returns
    -------
    list of str
        The steps done, in order (for the run manifest).
    """
    progress = progress or no_progress
    if recipe is None:
        recipe = Postprocessing()
    if not isinstance(recipe, Postprocessing):
        raise InputError(f"the post-processing must be a Postprocessing, not {type(recipe).__name__}; "
                         "read a card's JSON form with Postprocessing.from_dict")
    if recipe.rule is not None:
        raise InputError("the post-processing still has a level rule, whose level depends on the "
                         "whole volume's vessel fraction, which a block cannot know; resolve it "
                         "first with Postprocessing.resolve (e.g. recipe.resolve(fraction="
                         "fraction_above(prob, recipe.rule.probe)))")
    shape, block = tuple(int(s) for s in prob.shape), tuple(int(b) for b in block)
    scratch = Path(scratch)
    scratch.mkdir(parents=True, exist_ok=True)
    structure = _structure(3, recipe.connectivity)
    min_size = recipe.min_size
    hyst = recipe.method == "hysteresis"
    low, high = recipe.threshold, recipe.high
    steps = [f"hysteresis {low}/{high}" if hyst else f"threshold {low}"]
    progress(0.0, "labels")
    if not hyst and min_size <= 1:
        for sl in block_slices(shape, block):
            if cancel is not None:
                cancel.check()
            labels[sl] = threshold(np.asarray(prob[sl]), low)
    else:
        def mark(sl: tuple[slice, ...], local: np.ndarray) -> np.ndarray:
            return np.unique(local[threshold(np.asarray(prob[sl]), high) != 0])

        ids, component, voxels, confident = _components(
            lambda sl: threshold(np.asarray(prob[sl]), low), shape, block, structure,
            scratch / "pieces.zarr", mark if hyst else None, cancel)
        keep = voxels >= max(min_size, 1)
        if hyst:
            keep &= confident
        keep[component[0]] = False
        keep_label = keep[component].astype(np.uint8)
        for sl in block_slices(shape, block):
            labels[sl] = keep_label[np.asarray(ids[sl])]
        if min_size > 1:
            steps.append(f"remove pieces < {min_size} voxels (global)")
    progress(0.6, "holes")
    if recipe.fill_holes:
        steps.append(_fill(labels, shape, block, hyst, recipe.max_hole, scratch, cancel))
    progress(1.0, "done")
    return steps


def _fill(labels: Any, shape: tuple[int, ...], block: tuple[int, ...], per_slice: bool,
          max_hole: Any, scratch: Path, cancel: CancelToken | None) -> str:
    """Fill holes as :func:`~napari_vessel.postprocess.labels.fill_holes` does, in place."""
    if per_slice:  # each z slice alone: exact on slabs of whole slices
        for z0 in range(0, shape[0], block[0]):
            if cancel is not None:
                cancel.check()
            slab = slice(z0, min(z0 + block[0], shape[0]))
            labels[slab] = fill_holes(np.asarray(labels[slab]), per_slice=True,
                                      max_size=max_hole)
        return f"fill holes per z slice (up to {max_hole} voxels)"

    def border(sl: tuple[slice, ...], local: np.ndarray) -> np.ndarray:
        faces = [local.take(0, a) for a in range(3) if sl[a].start == 0]
        faces += [local.take(-1, a) for a in range(3) if sl[a].stop == shape[a]]
        return np.unique(np.concatenate([f.ravel() for f in faces])) if faces else np.empty(0)

    ids, component, _, outside = _components(
        lambda sl: np.asarray(labels[sl]) == 0, shape, block, ndi.generate_binary_structure(3, 1),
        scratch / "background.zarr", border, cancel)
    hole = ~outside
    hole[component[0]] = False
    hole_label = hole[component]
    for sl in block_slices(shape, block):
        part = np.asarray(labels[sl])
        labels[sl] = np.where(hole_label[np.asarray(ids[sl])], np.uint8(1), part)
    return "fill enclosed holes (3D, global)"
