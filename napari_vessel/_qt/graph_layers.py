"""Layers of the Vessel analysis dock: the centreline graph over the labels, and centring on it.

:class:`GraphLayers` shows a :class:`~napari_vessel.graph.VesselGraph` as three layers on the grid
of the labels it came from (their scale and translation), updated in place by a re-analysis:

- the centrelines as a Vectors layer, one short vector per step of each segment's path, coloured
  by the segment's mean radius. A vector is drawn in a 2D slice when it starts in that slice, so
  a slice shows the pieces of centreline that pass through it (with thick slices, napari's dims
  margins, the pieces of the slab are projected); the 3D view shows them all;
- the junctions (and the anchors of closed loops) as a Points layer;
- the end points as another Points layer, in another colour.

Every layer carries ``metadata[OUTPUT_KEY]`` (:data:`~napari_vessel._qt._common.OUTPUT_KEY`: no
input for the other docks) and the name of its labels layer. Re-analysing updates the three
layers (or adds them again if the user deleted one), so they never pile up; the user's layers are
never touched.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import numpy as np

from napari_vessel._qt._common import OUTPUT_KEY, name_metadata, output_name

__all__ = ["GraphLayers", "Grid", "centre_on", "ROLES"]

#: Role of each graph layer (``metadata["graph_role"]``) -> suffix of its name.
ROLES = {"centrelines": "centrelines", "junctions": "junctions", "ends": "end points"}
JUNCTION_COLOUR = "#ff3fa4"
END_COLOUR = "#ffd23f"
RADIUS_COLORMAP = "turbo"
#: The two Points layers: role, node kinds, colour.
NODE_LAYERS = (("junctions", ("junction", "loop"), JUNCTION_COLOUR), ("ends", ("end",), END_COLOUR))


class Grid:
    """Where a labels layer's voxels are in the world: its name, scale and translation (z, y, x).

    Parameters
    ----------
    name : str
    scale, translate : sequence of 3 float
    """

    def __init__(self, name: str, scale: Sequence[float], translate: Sequence[float]) -> None:
        self.name = str(name)
        self.scale = tuple(float(s) for s in scale)
        self.translate = tuple(float(t) for t in translate)

    def to_world(self, voxel_zyx: Sequence[float]) -> np.ndarray:
        """World coordinates of a (fractional) voxel position."""
        return np.asarray(self.translate) + np.asarray(self.scale) * np.asarray(voxel_zyx, float)


def segment_vectors(graph: Any) -> tuple[np.ndarray, dict[str, np.ndarray]]:
    """Vectors (shape (N, 2, 3): start, step; voxels) along every segment, and their features."""
    starts, steps, ids, radii = [], [], [], []
    for seg in graph.segments:
        path = np.asarray(seg.path, float)
        starts.append(path[:-1])
        steps.append(np.diff(path, axis=0))
        ids.append(np.full(len(path) - 1, seg.id))
        radii.append(np.full(len(path) - 1, seg.radius_mean_um))
    if not starts:
        return np.zeros((0, 2, 3)), {"segment_id": np.zeros(0, int), "radius_um": np.zeros(0)}
    data = np.stack([np.concatenate(starts), np.concatenate(steps)], axis=1)
    return data, {"segment_id": np.concatenate(ids), "radius_um": np.concatenate(radii)}


def _node_points(graph: Any, kinds: Sequence[str]) -> tuple[np.ndarray, dict, np.ndarray]:
    nodes = [n for n in graph.nodes if n.kind in kinds]
    spacing = np.asarray(graph.spacing_zyx, float)
    coords = (np.array([n.position_um for n in nodes], float).reshape(-1, 3) / spacing)
    features = {"node_id": np.array([n.id for n in nodes], int),
                "kind": np.array([n.kind for n in nodes], dtype=object),
                "degree": np.array([n.degree for n in nodes], int),
                "radius_um": np.array([n.radius_um for n in nodes], float)}
    # a marker about the vessel's radius, in voxels of the finest in-plane axis: visible on a
    # capillary, not hiding the graph on a thick vessel
    size = features["radius_um"] / min(spacing[1:]) + 2.0
    return coords, features, np.clip(size, 4.0, 9.0)


class GraphLayers:
    """The three layers showing one vessel graph; :meth:`show` replaces them.

    Parameters
    ----------
    viewer : napari.Viewer

    Attributes
    ----------
    layers : dict
        Role (``"centrelines"``, ``"junctions"``, ``"ends"``) -> layer, for the graph shown.
    """

    def __init__(self, viewer: Any) -> None:
        self.viewer = viewer
        self.layers: dict[str, Any] = {}

    def remove(self) -> None:
        """Remove the layers shown (those the user deleted already are skipped)."""
        for layer in self.layers.values():
            if layer in self.viewer.layers:
                self.viewer.layers.remove(layer)
        self.layers = {}

    def show(self, graph: Any, grid: Grid) -> dict[str, Any]:
        """Show ``graph`` on ``grid`` in place of the previous graph.

        The layers of the previous graph are updated in place when all three are still in the
        viewer (removing a layer costs napari about 0.2 s; the user's choices of visibility and
        opacity are kept), else removed and added again. The layer the user had selected stays
        selected (so painting can go on).
        """
        active = self.viewer.layers.selection.active
        if self.layers and all(layer in self.viewer.layers for layer in self.layers.values()):
            self._update(graph, grid)
        else:
            self.remove()
            self._add(graph, grid)
        if active is not None and active in self.viewer.layers:
            self.viewer.layers.selection.active = active
        return self.layers

    def _names(self, grid: Grid) -> dict[str, str]:
        others = [layer for layer in self.viewer.layers if layer not in self.layers.values()]
        return {role: output_name(grid.name, suffix, others) for role, suffix in ROLES.items()}

    @staticmethod
    def _metadata(role: str, grid: Grid) -> dict:
        return {OUTPUT_KEY: "vessel-graph", "graph_role": role, "graph_source": grid.name,
                **name_metadata(grid.name, ROLES[role])}

    def _add(self, graph: Any, grid: Grid) -> None:
        names = self._names(grid)
        common = {"scale": grid.scale, "translate": grid.translate, "projection_mode": "all"}
        data, features, limits = _vector_data(graph)
        vectors = self.viewer.add_vectors(
            data, features=features, edge_color="radius_um", edge_colormap=RADIUS_COLORMAP,
            edge_width=1.0, length=1.0, vector_style="line", name=names["centrelines"],
            metadata=self._metadata("centrelines", grid), **common)
        vectors.edge_contrast_limits = limits
        self.layers["centrelines"] = vectors
        for role, kinds, colour in NODE_LAYERS:
            coords, feats, size = _node_points(graph, kinds)
            self.layers[role] = self.viewer.add_points(
                coords, features=feats, size=size, face_color=colour, border_color="black",
                border_width=0.1, name=names[role], metadata=self._metadata(role, grid),
                **common)

    def _update(self, graph: Any, grid: Grid) -> None:
        names = self._names(grid)
        vectors = self.layers["centrelines"]
        data, features, limits = _vector_data(graph)
        vectors.data = data
        vectors.features = features
        vectors.edge_color = "radius_um"
        vectors.edge_contrast_limits = limits
        for role, kinds, colour in NODE_LAYERS:
            coords, feats, size = _node_points(graph, kinds)
            points = self.layers[role]
            points.data = coords
            points.features = feats
            points.size = size
            points.face_color = colour
            points.border_color = "black"
        for role, layer in self.layers.items():
            layer.scale, layer.translate = grid.scale, grid.translate
            layer.name = names[role]
            layer.metadata = self._metadata(role, grid)


def _vector_data(graph: Any) -> tuple[np.ndarray, dict, tuple[float, float]]:
    data, features = segment_vectors(graph)
    radii = features["radius_um"]
    low, high = (float(radii.min()), float(radii.max())) if len(radii) else (0.0, 1.0)
    high = high if high > low else low + 1.0
    # the thinnest vessels map to turbo's bright blue, not to its near-black end
    return data, features, (low - 0.15 * (high - low), high)


def centre_on(viewer: Any, grid: Grid, voxel_zyx: Sequence[float]) -> np.ndarray:
    """Move the view to a voxel of the labels: camera centre and the slice shown (all dims).

    Returns the world position (z, y, x).
    """
    world = grid.to_world(voxel_zyx)
    point = np.asarray(viewer.dims.point, float)
    offset = len(point) - 3  # the labels' axes are the last three of the viewer
    point[offset:] = world
    viewer.dims.point = tuple(point)
    scene = getattr(viewer, "scene", None)  # napari >= 0.9 (viewer.camera before)
    camera = scene.camera if scene is not None else viewer.camera
    camera.center = tuple(point[d] for d in viewer.dims.displayed)
    return world
