"""``vessel_graph``: labels + voxel size -> :class:`~napari_vessel.graph.types.VesselGraph`."""

from __future__ import annotations

import math
from collections.abc import Sequence
from typing import Any

import numpy as np

from napari_vessel.errors import InputError
from napari_vessel.graph.grid import (
    crop_box,
    drop_small,
    fill_cavities,
    grid_shape,
    grid_spacing,
    radii_at,
    resample,
    vessel_mask,
)
from napari_vessel.graph.measure import measure_segment, morphometrics, near_border
from napari_vessel.graph.params import GraphParams
from napari_vessel.graph.thin import thin_points
from napari_vessel.graph.topology import clean_graph, point_paths
from napari_vessel.graph.types import Node, VesselGraph
from napari_vessel.io.volume import check_spacing
from napari_vessel.progress import CancelToken, Progress, no_progress, scaled

__all__ = ["vessel_graph"]


def _empty(shape: Sequence[int], spacing: Sequence[float], params: GraphParams,
           vessel_voxels: int, note: str) -> VesselGraph:
    summary = morphometrics([], [], np.zeros(0), shape, spacing, vessel_voxels, note)
    return VesselGraph((), (), tuple(shape), tuple(spacing), params, summary)


def vessel_graph(labels: Any, spacing_zyx: Sequence[float], params: GraphParams | None = None, *,
                 progress: Progress | None = None, cancel: CancelToken | None = None) -> VesselGraph:
    """Centreline graph and morphometrics of a 3D vessel label volume.

    The steps: every label > 0 is vessel; the mask is cropped to its bounding box and pieces
    smaller than ``params.min_object_voxels`` are dropped; enclosed background cavities up to
    ``params.fill_cavities_um3`` µm³ are filled (thinning would keep each as a shell of loops
    and short segments; counted in ``summary.n_filled_cavities``); coarse axes are resampled to
    near-isotropic voxels by shape-based interpolation (``params.isotropic``); the mask is
    thinned (:func:`~napari_vessel.graph.thin.thin`: Lee's directional 3D thinning with exact
    simple-point tests); skan splits the
    skeleton into paths; junction clusters are merged and spurs pruned
    (:class:`~napari_vessel.graph.params.GraphParams`); radii come from the Euclidean distance
    transform with the voxel size; everything is mapped back to the input's voxels and µm.

    Parameters
    ----------
    labels : array_like, shape (Z, Y, X)
        Vessel labels: integers or booleans (> 0 is vessel, several label values are merged),
        or floats holding whole numbers. A dask array is computed into a boolean mask (one byte
        per voxel); the mask must fit in memory.
    spacing_zyx : sequence of 3 float
        Voxel size in µm (z, y, x).
    params : GraphParams, optional
        Clean-up and measurement parameters (defaults when omitted).
    progress : callable(fraction, message), optional
        Progress callback. Thinning is one call and reports only before and after.
    cancel : CancelToken, optional
        Checked between steps (and between slices, chunks and sweeps); raises
        :class:`~napari_vessel.errors.Cancelled`.

    Returns
    -------
    VesselGraph
        Nodes, segments, shape, voxel size, parameters and the summary. Labels with no vessel
        give a graph with no segments whose ``summary.note`` says so.

    Raises
    ------
    InputError
        Not a 3D array, NaN/infinite or fractional float labels, bad voxel size or parameters,
        or a working grid larger than ``params.max_voxels``.

    Notes
    -----
    skan compiles its Numba kernels on the first call in a process (about 2 s); a GUI must call
    this from a worker thread.
    """
    params = GraphParams() if params is None else params
    if not isinstance(params, GraphParams):
        raise InputError(f"params must be a GraphParams, not {type(params).__name__}")
    spacing = check_spacing(spacing_zyx, 3)
    report = progress or no_progress
    mask = vessel_mask(labels)
    shape = tuple(int(n) for n in mask.shape)
    vessel_voxels = int(np.count_nonzero(mask))
    report(0.02, "checking the labels")
    box = crop_box(mask)
    if box is None:
        report(1.0, "no vessel")
        return _empty(shape, spacing, params, 0, "no vessel in the labels (every value is <= 0)")
    crop = mask[box]
    grid = grid_spacing(spacing, params.isotropic)
    work_shape = grid_shape(crop.shape, spacing, grid)
    if math.prod(work_shape) > params.max_voxels:
        raise InputError(
            f"the vessels span {crop.shape} voxels, {work_shape} after resampling to "
            f"{grid} µm voxels: {math.prod(work_shape):,} voxels, more than max_voxels="
            f"{params.max_voxels:,}; crop the stack into parts, or raise max_voxels if the "
            "machine has the memory (about 3 bytes a voxel plus 25 a vessel voxel)")
    crop, n_dropped = drop_small(crop, params.min_object_voxels)
    if not crop.any():
        report(1.0, "no vessel")
        return _empty(shape, spacing, params, vessel_voxels,
                      f"all {n_dropped} vessel pieces are smaller than min_object_voxels="
                      f"{params.min_object_voxels}; no graph")
    _check(cancel)
    report(0.03, "filling enclosed cavities")
    crop, *filled = fill_cavities(crop, spacing, params.fill_cavities_um3)
    _check(cancel)
    fine = resample(crop, spacing, grid, scaled(progress, 0.05, 0.3), cancel)
    _check(cancel)
    report(0.3, "thinning")
    # the resampled mask is ours: thin it in place (not when it is the crop, needed for radii)
    skeleton = thin_points(fine, cancel, overwrite=fine is not crop)
    _check(cancel)
    report(0.6, "tracing the graph")
    coords, degree, paths = point_paths(skeleton, fine.shape, grid)
    del skeleton
    del fine
    scale = np.asarray(grid) / np.asarray(spacing)
    radii = radii_at(crop, spacing, coords * scale, params.max_radius_um,
                     scaled(progress, 0.65, 0.9), cancel)
    del crop
    positions, node_radius, pieces = clean_graph(coords, degree, paths, radii, grid, params, cancel)
    _check(cancel)
    report(0.9, "measuring segments")
    graph = _assemble(positions, node_radius, pieces, box, spacing, grid, shape, params,
                      vessel_voxels, tuple(filled))
    report(1.0, f"{len(graph.segments)} segments")
    return graph


def _check(cancel: CancelToken | None) -> None:
    if cancel is not None:
        cancel.check()


def _assemble(positions: dict, node_radius: dict, pieces: list, box: tuple, spacing: Sequence[float],
              grid: Sequence[float], shape: tuple, params: GraphParams,
              vessel_voxels: int, filled: tuple[int, int]) -> VesselGraph:
    """Renumber nodes and segments, map them to the input's voxels and measure them."""
    offset = np.array([s.start for s in box], dtype=float)
    scale = np.asarray(grid, dtype=float) / np.asarray(spacing, dtype=float)
    degree: dict[int, int] = {}
    for p in pieces:
        degree[p.u] = degree.get(p.u, 0) + 1
        degree[p.v] = degree.get(p.v, 0) + 1
    ids = {old: new for new, old in enumerate(sorted(degree))}
    loops = {p.u for p in pieces if p.u == p.v and degree[p.u] == 2}
    nodes = []
    for old, new in ids.items():
        vox = offset + positions[old] * scale
        r = np.float32(node_radius[old])
        kind = "loop" if old in loops else ("end" if degree[old] == 1 else "junction")
        nodes.append(Node(id=new, position_um=tuple(vox * spacing), degree=degree[old], kind=kind,
                          radius_um=float(r), touches_border=bool(
                              near_border(vox[None], np.array([r]), shape, spacing)[0])))
    order = sorted(pieces, key=lambda p: (ids[p.u], ids[p.v], len(p.points)))
    segments = [measure_segment(i, ids[p.u], ids[p.v], offset + p.points * scale, p.radii, shape,
                                spacing, params.smooth_um) for i, p in enumerate(order)]
    point_radii = np.concatenate([p.radii for p in order]) if order else np.zeros(0)
    note = "" if segments else "thinning left no centreline (the vessel pieces are too small)"
    summary = morphometrics(nodes, segments, point_radii, shape, spacing, vessel_voxels, note,
                            filled)
    return VesselGraph(tuple(nodes), tuple(segments), shape, tuple(spacing), params, summary)
