"""Comparison of two vessel graphs: paper 001's length correlation (LC) and metric differences."""

from __future__ import annotations

import math
from dataclasses import dataclass, fields
from typing import Any

import numpy as np

from napari_vessel.errors import InputError
from napari_vessel.graph.grid import vessel_mask
from napari_vessel.graph.types import Morphometrics, VesselGraph

__all__ = ["GraphComparison", "compare_graphs", "length_correlation", "graph_scores",
           "GRAPH_METRICS", "GRAPH_COLUMNS"]

#: Morphometrics whose difference ``pred - ref`` the score tables report (``d_NAME`` columns).
GRAPH_METRICS = ("total_length_um", "n_segments", "n_junctions", "n_end_points",
                 "mean_diameter_um")
#: The columns :func:`graph_scores` returns, in table order.
GRAPH_COLUMNS = ("lc", *(f"d_{name}" for name in GRAPH_METRICS))


def _flat(voxels: np.ndarray, shape: tuple[int, ...]) -> np.ndarray:
    return np.ravel_multi_index(tuple(voxels.T), shape) if len(voxels) else np.zeros(0, np.int64)


def _check_pair(pred: VesselGraph, ref: VesselGraph) -> None:
    for name, graph in (("pred", pred), ("ref", ref)):
        if not isinstance(graph, VesselGraph):
            raise InputError(f"{name} must be a VesselGraph (from vessel_graph), not "
                             f"{type(graph).__name__}")
    if pred.shape != ref.shape:
        raise InputError(f"the prediction's graph is of a {pred.shape} stack and the reference's "
                         f"of a {ref.shape} stack; compare graphs of the same stack")
    if not np.allclose(pred.spacing_zyx, ref.spacing_zyx, rtol=1e-6):
        raise InputError(f"voxel sizes differ: {pred.spacing_zyx} vs {ref.spacing_zyx} µm; "
                         "build both graphs with the same voxel size")


def length_correlation(pred: VesselGraph, ref: VesselGraph, pred_labels: Any,
                       ref_labels: Any) -> float:
    """Length correlation LC of paper 001 (Tahir et al., BME Frontiers 2021, section 4.5).

    ``LC(S, S_G) = #((g(S) ∩ S_G) ∪ (S ∩ g(S_G))) / #(g(S) ∪ g(S_G))``, where ``S`` and
    ``S_G`` are the predicted and reference segmentations (voxel sets), ``g`` gives the 3D
    vascular skeleton computed in the form of a graph and ``#`` counts voxels. Here ``g(S)`` is
    the set of voxels of the labels' grid that the graph's centrelines pass through
    (:meth:`VesselGraph.centerline_voxels`, after pruning). The numerator counts the centreline
    voxels of either graph that lie inside the other segmentation: LC is 1 when each
    centreline runs inside the other segmentation, and falls as centreline (length) of one is
    missing from the other. The paper derives it from the length metric of Gegúndez-Arias et
    al. (its reference 26).

    When neither graph has a centreline (denominator 0), LC is 1.0 if the two masks are equal
    and 0.0 otherwise (the rule of :mod:`napari_vessel.evaluation.metrics`).

    Parameters
    ----------
    pred, ref : VesselGraph
        Graphs of the prediction and of the reference, same shape and voxel size.
    pred_labels, ref_labels : array_like, shape of the graphs
        The labels the graphs were built from (> 0 is vessel).

    Returns
    -------
    float in [0, 1]
    """
    _check_pair(pred, ref)
    s_pred, s_ref = vessel_mask(pred_labels), vessel_mask(ref_labels)
    for name, mask in (("prediction", s_pred), ("reference", s_ref)):
        if mask.shape != pred.shape:
            raise InputError(f"the {name} labels {mask.shape} are not the {pred.shape} stack "
                             "of the graphs; pass the labels each graph was built from")
    g_pred = _flat(pred.centerline_voxels(), pred.shape)
    g_ref = _flat(ref.centerline_voxels(), ref.shape)
    denominator = np.union1d(g_pred, g_ref).size
    if denominator == 0:
        return 1.0 if np.array_equal(s_pred, s_ref) else 0.0
    inside_ref = g_pred[s_ref.ravel()[g_pred]]
    inside_pred = g_ref[s_pred.ravel()[g_ref]]
    return float(np.union1d(inside_ref, inside_pred).size / denominator)


@dataclass(frozen=True)
class GraphComparison:
    """A predicted graph against a reference graph.

    Attributes
    ----------
    lc : float
        Length correlation (:func:`length_correlation`).
    pred, ref : Morphometrics
        The two summaries.
    differences : dict
        ``pred - ref`` for every number of :class:`Morphometrics` (NaN where either is NaN),
        e.g. ``differences["n_dangling"]`` or ``differences["total_length_um"]``.
    """

    lc: float
    pred: Morphometrics
    ref: Morphometrics
    differences: dict[str, float]

    def __post_init__(self) -> None:
        if not (0.0 <= float(self.lc) <= 1.0):
            raise InputError(f"lc={self.lc!r} must lie in [0, 1]")
        object.__setattr__(self, "differences", dict(self.differences))

    def to_dict(self) -> dict[str, Any]:
        """JSON-safe dict: ``lc``, ``pred``, ``ref`` and ``differences`` (NaN becomes None)."""
        diff = {k: (None if math.isnan(v) else v) for k, v in self.differences.items()}
        return {"lc": self.lc, "pred": self.pred.to_dict(), "ref": self.ref.to_dict(),
                "differences": diff}


def compare_graphs(pred: VesselGraph, ref: VesselGraph, pred_labels: Any,
                   ref_labels: Any) -> GraphComparison:
    """Compare the graph of a prediction with the graph of its reference.

    Parameters
    ----------
    pred, ref : VesselGraph
        From :func:`~napari_vessel.graph.vessel_graph` on the two label volumes, with the same
        voxel size (and best with the same parameters).
    pred_labels, ref_labels : array_like
        Those label volumes: LC (paper 001) needs the segmentations as well as the skeletons.

    Returns
    -------
    GraphComparison
        LC and the per-metric differences ``pred - ref`` (paper 001's four graph metrics are
        ``n_segments``, ``n_dangling``, ``n_short`` and ``n_incorrect_bifurcations``).
    """
    lc = length_correlation(pred, ref, pred_labels, ref_labels)
    differences = {f.name: float(getattr(pred.summary, f.name)) - float(getattr(ref.summary, f.name))
                   for f in fields(Morphometrics) if f.name != "note"}
    return GraphComparison(lc=lc, pred=pred.summary, ref=ref.summary, differences=differences)


def graph_scores(labels: Any, reference: Any, spacing_zyx: Any) -> tuple[dict[str, Any], list[str]]:
    """LC and the ``d_*`` differences of the graphs of a segmentation and its reference.

    The one place the score tables (``napari-vessel evaluate --graph`` and ``benchmark
    --graph``) get their graph columns from.

    Parameters
    ----------
    labels, reference : array_like, shape (Z, Y, X)
        The segmentation and the reference labels (non-zero = vessel).
    spacing_zyx : (float, float, float)
        Voxel size in µm.

    Returns
    -------
    scores : dict
        :data:`GRAPH_COLUMNS`: ``lc`` (paper 001) and ``d_NAME`` = prediction - reference for
        each of :data:`GRAPH_METRICS` (counts as int).
    notes : list of str
        The graphs' own notes (e.g. empty labels), prefixed with "prediction" or "reference".
    """
    from napari_vessel.graph.extract import vessel_graph

    pred_graph = vessel_graph(labels, spacing_zyx)
    ref_graph = vessel_graph(reference, spacing_zyx)
    notes = [f"{what} graph: {graph.summary.note}"
             for what, graph in (("prediction", pred_graph), ("reference", ref_graph))
             if graph.summary.note]
    result = compare_graphs(pred_graph, ref_graph, labels, reference)
    scores: dict[str, Any] = {"lc": result.lc}
    for key in GRAPH_METRICS:
        value = result.differences[key]
        scores[f"d_{key}"] = int(value) if key.startswith("n_") else value
    return scores, notes
