"""Skeleton -> clean vessel graph: skan's paths, merged junction clusters, pruned spurs.

skan (:class:`skan.csr.Skeleton`) splits the one-voxel-thick skeleton into paths between end
points and junction voxels. Thinning leaves small clusters of junction voxels where vessels meet
and short spurs where the mask has bumps; :func:`clean_graph` merges the clusters
(``merge_radius_factor``), prunes the spurs (``prune_um``, ``prune_radius_factor``) and joins the
two segments that meet at any node left with two branches.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import numba
import numpy as np

from napari_vessel.graph.params import GraphParams
from napari_vessel.progress import CancelToken

__all__ = ["Piece", "skeleton_paths", "point_paths", "clean_graph"]


@dataclass
class Piece:
    """A segment while the graph is cleaned: end node ids, points (grid voxels) and radii (µm)."""

    u: int
    v: int
    points: np.ndarray  # (n, 3) float, working-grid voxel coordinates, from u to v
    radii: np.ndarray  # (n,) float32

    def length(self, spacing: np.ndarray) -> float:
        """Length of the polyline in µm."""
        return float(np.linalg.norm(np.diff(self.points, axis=0) * spacing, axis=1).sum())


def skeleton_paths(skeleton: np.ndarray, spacing: Sequence[float]
                   ) -> tuple[np.ndarray, np.ndarray, list[np.ndarray]]:
    """The voxel coordinates (N, 3), pixel-graph degrees (N,) and paths (voxel ids) of a skeleton."""
    return point_paths(np.argwhere(skeleton), skeleton.shape, spacing)


def point_paths(points: np.ndarray, shape: Sequence[int], spacing: Sequence[float]
                ) -> tuple[np.ndarray, np.ndarray, list[np.ndarray]]:
    """:func:`skeleton_paths` of the skeleton whose voxels are ``points`` (N, 3, in C order).

    skan's pixel graph (:func:`skan.csr.pixel_graph`) pads and scans the whole skeleton image
    (about 1 s for 2 x 10⁸ voxels); here the same graph (the same nodes in C order, 26-neighbour
    edges weighted by skan's own distances) is built from the points alone, and skan does the
    rest as in :class:`skan.csr.Skeleton`: the minimum spanning tree of junction clusters and
    the paths. When those skan internals are missing (another skan version) the skeleton image
    is made and given to :class:`skan.csr.Skeleton`.
    """
    points = np.asarray(points, dtype=np.int64).reshape(-1, 3)
    empty = np.zeros((0, 3), np.int64), np.zeros(0, np.int64), []
    shape = tuple(int(n) for n in shape)
    flat = np.ravel_multi_index(tuple(points.T), shape) if len(points) else np.zeros(0, np.int64)
    rows, cols, steps = _pixel_edges(flat, np.asarray(shape, np.int64))
    if len(rows) == 0:  # skan needs at least two neighbouring voxels
        return empty
    try:
        from scipy import sparse
        from skan.csr import PathGraph, _mst_junctions
        from skan.nputil import _raveled_offsets_and_distances
    except ImportError:  # pragma: no cover - another skan: the dense route
        from skan.csr import Skeleton

        image = np.zeros(shape, dtype=bool)
        image[tuple(points.T)] = True
        skel = Skeleton(image, spacing=np.asarray(spacing, float), keep_images=False)
        return (np.asarray(skel.coordinates, dtype=np.int64), np.asarray(skel.degrees),
                [np.asarray(skel.path(i), dtype=np.int64) for i in range(skel.n_paths)])
    spacing = np.ones(3, dtype=float) * np.asarray(spacing, float)
    offsets, distances = _raveled_offsets_and_distances((3, 3, 3), connectivity=3,
                                                        spacing=spacing)
    by_step = np.zeros(27, dtype=float)
    by_step[np.asarray(offsets) + 13] = distances  # raveled in a 3 x 3 x 3 box: step index - 13
    m = len(points)
    graph = sparse.coo_matrix((by_step[steps], (rows, cols)), shape=(m, m)).tocsr()
    graph = _mst_junctions(graph)
    paths = PathGraph.from_graph(adj=graph, node_coordinates=points, spacing=spacing).paths
    return points, np.diff(graph.indptr), [
        np.asarray(paths.indices[paths.indptr[i]:paths.indptr[i + 1]], dtype=np.int64)
        for i in range(paths.shape[0])]


@numba.njit(cache=True)
def _neighbour_ids(flat, i, ny, nx, nz, out_ids, out_steps):
    """The node ids of the 26-neighbours of node ``i`` among the sorted flat indices ``flat``
    and their step indices (9 (dz + 1) + 3 (dy + 1) + dx + 1); returns how many."""
    z, rest = divmod(flat[i], ny * nx)
    y, x = divmod(rest, nx)
    step = -1
    found = 0
    for dz in range(-1, 2):
        for dy in range(-1, 2):
            for dx in range(-1, 2):
                step += 1
                zz, yy, xx = z + dz, y + dy, x + dx
                if step == 13 or not (0 <= zz < nz and 0 <= yy < ny and 0 <= xx < nx):
                    continue
                target = (zz * ny + yy) * nx + xx
                j = np.searchsorted(flat, target)
                if j < len(flat) and flat[j] == target:
                    out_ids[found] = j
                    out_steps[found] = step
                    found += 1
    return found


@numba.njit(cache=True)
def _pixel_edges(flat, shape):
    """Both directions of every 26-neighbour pair of the sorted flat indices ``flat``: (row,
    column, step index); two passes, so memory is 24 bytes an edge."""
    nz, ny, nx = shape[0], shape[1], shape[2]
    ids = np.empty(26, np.int64)
    steps_of = np.empty(26, np.int64)
    total = 0
    for i in range(len(flat)):
        total += _neighbour_ids(flat, i, ny, nx, nz, ids, steps_of)
    rows = np.empty(total, np.int64)
    cols = np.empty(total, np.int64)
    steps = np.empty(total, np.int64)
    k = 0
    for i in range(len(flat)):
        found = _neighbour_ids(flat, i, ny, nx, nz, ids, steps_of)
        for m in range(found):
            rows[k], cols[k], steps[k] = i, ids[m], steps_of[m]
            k += 1
    return rows, cols, steps


class _UnionFind:
    def __init__(self) -> None:
        self.parent: dict[int, int] = {}

    def find(self, a: int) -> int:
        self.parent.setdefault(a, a)
        while self.parent[a] != a:
            self.parent[a] = self.parent[self.parent[a]]
            a = self.parent[a]
        return a

    def union(self, a: int, b: int) -> None:
        ra, rb = self.find(a), self.find(b)
        if ra != rb:
            self.parent[max(ra, rb)] = min(ra, rb)


def _degrees(pieces: dict[int, Piece]) -> dict[int, int]:
    degree: dict[int, int] = {}
    for p in pieces.values():
        degree[p.u] = degree.get(p.u, 0) + 1
        degree[p.v] = degree.get(p.v, 0) + 1
    return degree


def _merge_clusters(pieces: dict[int, Piece], positions: dict[int, np.ndarray],
                    node_radius: dict[int, float], degree: np.ndarray, spacing: np.ndarray,
                    factor: float) -> None:
    """Merge junctions joined by a short segment into one node at their centroid (in place).

    Bridges are taken shortest first; two clusters merge only if every junction of the union
    lies within ``factor`` times the union's largest radius (or one voxel diagonal) of its
    centroid, so a chain of close junctions along a thick vessel does not grow into one node.
    """
    touching = float(np.linalg.norm(spacing)) * (1 + 1e-6)  # neighbouring voxels, diagonal included
    groups = _UnionFind()
    members: dict[int, list[int]] = {}
    bridges = []
    for key, p in pieces.items():
        if p.u != p.v and degree[p.u] >= 3 and degree[p.v] >= 3:
            length = p.length(spacing)
            if length <= max(touching, factor * max(node_radius[p.u], node_radius[p.v])):
                bridges.append((length, key))
    merged = []
    for _, key in sorted(bridges):
        p = pieces[key]
        ru, rv = groups.find(p.u), groups.find(p.v)
        if ru == rv:
            merged.append(key)
            continue
        union = members.get(ru, [ru]) + members.get(rv, [rv])
        points = np.array([positions[n] for n in union]) * spacing
        reach = max(touching, factor * max(node_radius[n] for n in union))
        if np.linalg.norm(points - points.mean(axis=0), axis=1).max() <= reach:
            groups.union(ru, rv)
            members.pop(ru, None)
            members.pop(rv, None)
            members[groups.find(ru)] = union
            merged.append(key)
    for key in merged:
        del pieces[key]
    for root, group in members.items():
        positions[root] = np.mean([positions[n] for n in group], axis=0)
        node_radius[root] = max(node_radius[n] for n in group)
    for p in pieces.values():
        p.u, p.v = groups.find(p.u), groups.find(p.v)
        _attach_ends(p, positions, node_radius)


def _attach_ends(p: Piece, positions: dict[int, np.ndarray], node_radius: dict[int, float]) -> None:
    """Make the polyline start and end exactly at its nodes' positions."""
    start, end = positions[p.u], positions[p.v]
    if np.any(np.abs(p.points[0] - start) > 1e-9):
        p.points = np.vstack([start, p.points])
        p.radii = np.r_[np.float32(node_radius[p.u]), p.radii]
    if np.any(np.abs(p.points[-1] - end) > 1e-9):
        p.points = np.vstack([p.points, end])
        p.radii = np.r_[p.radii, np.float32(node_radius[p.v])]


def _oriented(p: Piece, start: int) -> tuple[int, np.ndarray, np.ndarray]:
    """(other end, points, radii) of ``p`` walked away from node ``start``."""
    if p.u == start:
        return p.v, p.points, p.radii
    return p.u, p.points[::-1], p.radii[::-1]


def _join_two_way_nodes(pieces: dict[int, Piece]) -> None:
    """Join the two segments at every node with exactly two branches (a loop keeps its node)."""
    ends: dict[int, list[int]] = {}
    for key, p in pieces.items():
        ends.setdefault(p.u, []).append(key)
        ends.setdefault(p.v, []).append(key)
    for node in list(ends):
        keys = ends.get(node, [])
        if len(keys) != 2 or keys[0] == keys[1]:
            continue  # not two-way, or an isolated loop closed at this node
        a, b = pieces.pop(keys[0]), pieces.pop(keys[1])
        a_end, a_pts, a_rad = _oriented(a, node)
        b_end, b_pts, b_rad = _oriented(b, node)
        joined = Piece(a_end, b_end, np.vstack([a_pts[::-1], b_pts[1:]]),
                       np.r_[a_rad[::-1], b_rad[1:]].astype(np.float32))
        pieces[keys[0]] = joined
        for end, old in ((a_end, keys[0]), (b_end, keys[1])):
            ends[end] = [keys[0] if k == old else k for k in ends[end]]
        del ends[node]


def _prune_spurs(pieces: dict[int, Piece], node_radius: dict[int, float], spacing: np.ndarray,
                 params: GraphParams) -> bool:
    """Remove terminal segments shorter than their threshold, shortest first; True if any went.

    A spur goes only while its junction still has three or more branches, so pruning never
    cuts a vessel in two and a star of spurs keeps its two longest arms.
    """
    degree = _degrees(pieces)
    spurs = []
    for key, p in pieces.items():
        if p.u == p.v:
            continue
        for tip, hub in ((p.u, p.v), (p.v, p.u)):
            if degree[tip] == 1 and degree[hub] >= 3:
                limit = params.prune_um + params.prune_radius_factor * node_radius[hub]
                length = p.length(spacing)
                if length < limit:
                    spurs.append((length, key, hub))
    removed = False
    for _, key, hub in sorted(spurs):
        if degree[hub] >= 3:
            del pieces[key]
            degree[hub] -= 1
            removed = True
    return removed


def clean_graph(coords: np.ndarray, degree: np.ndarray, paths: list[np.ndarray],
                radii: np.ndarray, spacing: Sequence[float], params: GraphParams,
                cancel: CancelToken | None = None
                ) -> tuple[dict[int, np.ndarray], dict[int, float], list[Piece]]:
    """Turn skan's paths into a clean graph.

    Parameters
    ----------
    coords : ndarray of int, shape (N, 3)
        Skeleton voxel coordinates on the working grid.
    degree : ndarray of int, shape (N,)
        Number of skeleton neighbours of each voxel.
    paths : list of ndarray of int
        Voxel ids of each path, from one end (or junction) voxel to the other.
    radii : ndarray of float, shape (N,)
        Vessel radius (µm) at each skeleton voxel.
    spacing : sequence of 3 float
        Working-grid voxel size (µm).
    params : GraphParams

    Returns
    -------
    positions : dict
        Node id -> position (working-grid voxel coordinates, float).
    node_radius : dict
        Node id -> radius (µm).
    pieces : list of Piece
        The segments, each starting at node ``u`` and ending at node ``v``.
    """
    spacing = np.asarray(spacing, dtype=float)
    pieces = {i: Piece(int(ids[0]), int(ids[-1]), coords[ids].astype(float),
                       radii[ids].astype(np.float32)) for i, ids in enumerate(paths)}
    used = {n for p in pieces.values() for n in (p.u, p.v)}
    positions = {n: coords[n].astype(float) for n in used}
    node_radius = {n: float(radii[n]) for n in used}
    _merge_clusters(pieces, positions, node_radius, degree, spacing, params.merge_radius_factor)
    _join_two_way_nodes(pieces)
    while True:
        if cancel is not None:
            cancel.check()
        if not _prune_spurs(pieces, node_radius, spacing, params):
            break
        _join_two_way_nodes(pieces)
    return positions, node_radius, list(pieces.values())
