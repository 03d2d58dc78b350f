"""Typed results of the vessel graph: :class:`Node`, :class:`Segment`, :class:`Morphometrics`,
:class:`VesselGraph` (with its NetworkX view and table rows)."""

from __future__ import annotations

import math
from dataclasses import asdict, dataclass, fields
from typing import Any

import numpy as np

from napari_vessel.errors import InputError
from napari_vessel.graph.params import GraphParams
from napari_vessel.io.volume import check_spacing

__all__ = ["Node", "Segment", "Morphometrics", "VesselGraph", "NODE_KINDS", "PAPER_METRICS"]

#: Kinds of node: a branch point (3 or more branches), a free end, the anchor of a closed loop.
NODE_KINDS = ("junction", "end", "loop")
#: Paper 001's four graph metrics (section 2.4, figure 6b), as :class:`Morphometrics` fields.
PAPER_METRICS = ("n_segments", "n_dangling", "n_short", "n_incorrect_bifurcations")


def _vector(value: Any, name: str) -> tuple[float, float, float]:
    out = tuple(float(v) for v in value)
    if len(out) != 3:
        raise InputError(f"{name} must have 3 values (z, y, x), not {len(out)}")
    return out


@dataclass(frozen=True)
class Node:
    """A junction, end point or loop anchor of the vessel graph.

    Attributes
    ----------
    id : int
    position_um : tuple of 3 float
        Position (z, y, x) in µm; voxel ``(k, j, i)`` has its centre at ``(k dz, j dy, i dx)``.
    degree : int
        Number of segment ends at the node (a closed loop counts twice).
    kind : {"junction", "end", "loop"}
    radius_um : float
        Vessel radius at the node (the inscribed sphere of a junction).
    touches_border : bool
        The vessel around the node reaches a face of the volume.
    """

    id: int
    position_um: tuple[float, float, float]
    degree: int
    kind: str
    radius_um: float
    touches_border: bool

    def __post_init__(self) -> None:
        if self.kind not in NODE_KINDS:
            raise InputError(f"node kind {self.kind!r} is not one of {', '.join(NODE_KINDS)}")
        if int(self.degree) < 1:
            raise InputError(f"node {self.id} has degree {self.degree}; a node needs a segment")
        object.__setattr__(self, "position_um", _vector(self.position_um, "position_um"))


@dataclass(frozen=True, eq=False)
class Segment:
    """A vessel segment between two nodes (the same node for a closed loop).

    Attributes
    ----------
    id : int
    node_start, node_end : int
        Node ids; the path runs from ``node_start`` to ``node_end``.
    path : ndarray of float, shape (N, 3), read-only
        Centreline points (z, y, x) in voxel coordinates of the input labels (fractional along
        an axis that was resampled to isotropic voxels), from node to node.
    length_um : float
        Length along the (smoothed, see ``GraphParams.smooth_um``) centreline, in µm.
    radius_mean_um, radius_min_um, radius_max_um : float
        Vessel radius along the centreline (end points excluded), from the distance transform.
    tortuosity : float
        ``length_um`` / chord (straight distance between the ends); NaN for a closed loop.
    direction : tuple of 3 float
        Unit vector (z, y, x) in µm space from ``node_start`` to ``node_end``; NaN for a loop.
    touches_border : bool
        The vessel around some point of the segment reaches a face of the volume.
    """

    id: int
    node_start: int
    node_end: int
    path: np.ndarray
    length_um: float
    radius_mean_um: float
    radius_min_um: float
    radius_max_um: float
    tortuosity: float
    direction: tuple[float, float, float]
    touches_border: bool

    def __post_init__(self) -> None:
        path = np.array(self.path, dtype=float)
        if path.ndim != 2 or path.shape[1] != 3 or len(path) < 2:
            raise InputError(f"segment {self.id}: path must have shape (N >= 2, 3), not {path.shape}")
        path.setflags(write=False)
        object.__setattr__(self, "path", path)
        object.__setattr__(self, "direction", _vector(self.direction, "direction"))
        if not (self.length_um >= 0 and self.radius_min_um <= self.radius_mean_um + 1e-6
                <= self.radius_max_um + 2e-6):
            raise InputError(f"segment {self.id}: inconsistent length or radii")

    @property
    def is_loop(self) -> bool:
        """True when the segment starts and ends at the same node."""
        return self.node_start == self.node_end


def _json_number(value: Any) -> Any:
    return None if isinstance(value, float) and not math.isfinite(value) else value


@dataclass(frozen=True)
class Morphometrics:
    """Whole-volume numbers of a vessel graph.

    Densities are per volume of the whole stack (all voxels of the labels). Diameters are
    twice the radius at every centreline point, so long vessels weigh more than short ones;
    they are NaN when there is no centreline. The four graph metrics of paper 001 (section
    2.4) are ``n_segments``, ``n_dangling`` (segments with a free end: "disconnected at one
    end or both ends"), ``n_short`` (shorter than 6 µm) and ``n_incorrect_bifurcations``
    (junctions of more than three branches). ``n_filled_cavities`` and
    ``n_filled_cavity_voxels`` count the enclosed background cavities filled before thinning
    (``GraphParams.fill_cavities_um3``) and their voxels (of the labels' grid); the vessel
    numbers above are of the labels as given.
    """

    stack_volume_mm3: float
    vessel_voxels: int
    vessel_volume_fraction: float
    total_length_um: float
    length_density_mm_per_mm3: float
    n_segments: int
    n_junctions: int
    n_end_points: int
    n_loops: int
    branch_point_density_per_mm3: float
    mean_diameter_um: float
    diameter_p10_um: float
    diameter_p50_um: float
    diameter_p90_um: float
    n_dangling: int
    n_dangling_interior: int
    n_short: int
    n_incorrect_bifurcations: int
    note: str = ""
    n_filled_cavities: int = 0
    n_filled_cavity_voxels: int = 0

    def __post_init__(self) -> None:
        for f in fields(self):
            value = getattr(self, f.name)
            if f.name.startswith("n_") or f.name == "vessel_voxels":
                if int(value) != value or value < 0:
                    raise InputError(f"{f.name}={value!r} must be a count >= 0")
                object.__setattr__(self, f.name, int(value))
            elif f.name != "note":
                object.__setattr__(self, f.name, float(value))

    def to_dict(self) -> dict[str, Any]:
        """The numbers as a JSON-safe dict (NaN becomes None)."""
        return {k: _json_number(v) for k, v in asdict(self).items()}


@dataclass(frozen=True, eq=False)
class VesselGraph:
    """The vessel graph of a label volume, with its morphometrics.

    Attributes
    ----------
    nodes : tuple of Node
    segments : tuple of Segment
    shape : tuple of 3 int
        Shape (Z, Y, X) of the labels.
    spacing_zyx : tuple of 3 float
        Voxel size in µm.
    params : GraphParams
        The parameters used.
    summary : Morphometrics
    """

    nodes: tuple[Node, ...]
    segments: tuple[Segment, ...]
    shape: tuple[int, int, int]
    spacing_zyx: tuple[float, float, float]
    params: GraphParams
    summary: Morphometrics

    def __post_init__(self) -> None:
        object.__setattr__(self, "nodes", tuple(self.nodes))
        object.__setattr__(self, "segments", tuple(self.segments))
        object.__setattr__(self, "shape", tuple(int(n) for n in self.shape))
        object.__setattr__(self, "spacing_zyx", check_spacing(self.spacing_zyx, 3))
        ids = {n.id for n in self.nodes}
        if len(ids) != len(self.nodes):
            raise InputError("node ids must be unique")
        missing = {s.node_start for s in self.segments} | {s.node_end for s in self.segments}
        if missing - ids:
            raise InputError(f"segments refer to unknown nodes {sorted(missing - ids)[:5]}")

    def centerline_voxels(self) -> np.ndarray:
        """The voxels (int, shape (M, 3), unique) of the labels' grid that the centrelines pass."""
        if not self.segments:
            return np.zeros((0, 3), dtype=np.int64)
        points = np.rint(np.vstack([s.path for s in self.segments])).astype(np.int64)
        points = np.clip(points, 0, np.asarray(self.shape) - 1)
        return np.unique(points, axis=0)

    def node_rows(self) -> list[dict[str, Any]]:
        """One dict per node (µm), for tables and CSV."""
        return [{"id": n.id, "kind": n.kind, "degree": n.degree,
                 "z_um": n.position_um[0], "y_um": n.position_um[1], "x_um": n.position_um[2],
                 "radius_um": n.radius_um, "touches_border": n.touches_border}
                for n in self.nodes]

    def segment_rows(self) -> list[dict[str, Any]]:
        """One dict per segment (µm, no path), for tables and CSV."""
        return [{"id": s.id, "node_start": s.node_start, "node_end": s.node_end,
                 "length_um": s.length_um, "radius_mean_um": s.radius_mean_um,
                 "radius_min_um": s.radius_min_um, "radius_max_um": s.radius_max_um,
                 "tortuosity": s.tortuosity, "direction_z": s.direction[0],
                 "direction_y": s.direction[1], "direction_x": s.direction[2],
                 "touches_border": s.touches_border, "n_points": len(s.path)}
                for s in self.segments]

    def to_networkx(self) -> Any:
        """The graph as a :class:`networkx.MultiGraph` (parallel segments and loops kept).

        Node, edge and graph attributes are plain scalars (int, float, bool, str), so
        :func:`networkx.write_graphml` can write it. Nodes are the node ids with the
        :meth:`node_rows` fields; edges carry the :meth:`segment_rows` fields, with the segment
        id as edge key and as ``segment_id``; the graph carries the voxel size
        (``spacing_z_um``, ``spacing_y_um``, ``spacing_x_um``), the shape and ``units="um"``.
        """
        import networkx as nx

        graph = nx.MultiGraph(spacing_z_um=self.spacing_zyx[0], spacing_y_um=self.spacing_zyx[1],
                              spacing_x_um=self.spacing_zyx[2], shape_z=self.shape[0],
                              shape_y=self.shape[1], shape_x=self.shape[2], units="um")
        for row in self.node_rows():
            graph.add_node(row.pop("id"), **row)
        for row in self.segment_rows():
            key = row.pop("id")
            graph.add_edge(row["node_start"], row["node_end"], key=key, segment_id=key, **row)
        return graph
