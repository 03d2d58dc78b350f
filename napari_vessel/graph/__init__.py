"""The vessel graph: labels -> centreline graph -> morphometrics, comparison and exports.

No napari or Qt here. The Python entry points:

- :func:`vessel_graph` (labels, voxel size) -> :class:`VesselGraph` (nodes, segments, summary)
- :func:`compare_graphs` (prediction vs reference) -> :class:`GraphComparison` (paper 001's LC
  and the per-metric differences)
- :func:`write_graph` -> ``segments.csv``, ``nodes.csv``, ``graph.graphml``, ``summary.json``

See ``docs/graph.md`` for the definitions, parameters and measured tolerances.
"""

from __future__ import annotations

import importlib
from typing import Any

#: Public names loaded on first use (the command line imports only ``params``): name -> module.
_LAZY = {
    "vessel_graph": "extract",
    "GraphParams": "params",
    "SHORT_SEGMENT_UM": "params",
    "VesselGraph": "types",
    "Node": "types",
    "Segment": "types",
    "Morphometrics": "types",
    "PAPER_METRICS": "types",
    "compare_graphs": "compare",
    "length_correlation": "compare",
    "GraphComparison": "compare",
    "graph_scores": "compare",
    "GRAPH_METRICS": "compare",
    "GRAPH_COLUMNS": "compare",
    "write_graph": "export",
    "OUTPUT_FILES": "export",
}

__all__ = list(_LAZY)


def __getattr__(name: str) -> Any:
    if name in _LAZY:
        return getattr(importlib.import_module(f".{_LAZY[name]}", __name__), name)
    raise AttributeError(f"module 'napari_vessel.graph' has no attribute {name!r}")
