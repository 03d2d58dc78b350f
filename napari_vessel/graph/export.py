"""Files of a vessel graph: segments and nodes as CSV, the graph as GraphML, the summary as JSON."""

from __future__ import annotations

import csv
import json
import os
from pathlib import Path
from typing import Any

from napari_vessel.errors import InputError
from napari_vessel.graph.types import PAPER_METRICS, VesselGraph
from napari_vessel.io.outputs import publish_set

__all__ = ["write_graph", "OUTPUT_FILES"]

#: The files :func:`write_graph` writes, in the order they are published (the summary last).
OUTPUT_FILES = ("segments.csv", "nodes.csv", "graph.graphml", "summary.json")


def _write_csv(path: Path, rows: list[dict[str, Any]], fieldnames: list[str],
               spacing: tuple[float, float, float]) -> None:
    extra = dict(zip(("spacing_z_um", "spacing_y_um", "spacing_x_um"), spacing, strict=True))
    with open(path, "w", newline="", encoding="utf-8") as handle:
        writer = csv.DictWriter(handle, fieldnames=fieldnames + list(extra))
        writer.writeheader()
        for row in rows:
            writer.writerow({**row, **extra})


_SEGMENT_FIELDS = ["id", "node_start", "node_end", "length_um", "radius_mean_um", "radius_min_um",
                   "radius_max_um", "tortuosity", "direction_z", "direction_y", "direction_x",
                   "touches_border", "n_points"]
_NODE_FIELDS = ["id", "kind", "degree", "z_um", "y_um", "x_um", "radius_um", "touches_border"]


def write_graph(graph: VesselGraph, outdir: str | os.PathLike, manifest: dict | None = None, *,
                overwrite: bool = False) -> dict[str, Path]:
    """Write a vessel graph's files into ``outdir`` (created when missing).

    Files (see :data:`OUTPUT_FILES`): ``segments.csv`` (one row per segment, µm),
    ``nodes.csv`` (one row per node, µm), ``graph.graphml`` (:meth:`VesselGraph.to_networkx`,
    readable by :func:`networkx.read_graphml`, Gephi, Cytoscape) and ``summary.json`` (the
    morphometrics, paper 001's four graph metrics, voxel size, shape, parameters and
    ``manifest``). Every file carries the voxel size: the CSVs in ``spacing_*_um`` columns,
    the GraphML as graph attributes, the JSON as ``voxel_size_um``.

    The files are published as one set (:func:`napari_vessel.io.outputs.publish_set`): all are
    written under temporary names beside their places first; only then is an earlier
    ``summary.json`` removed, the files renamed into place and ``summary.json`` renamed last. A
    folder with a ``summary.json`` holds a complete, matching set; a failed run leaves the
    earlier set as it was. Other files in ``outdir`` are left alone.

    Parameters
    ----------
    graph : VesselGraph
    outdir : str or PathLike
    manifest : dict, optional
        How the graph was made (input file, command, versions...), stored in ``summary.json``.
    overwrite : bool
        Replace existing files of a previous run; without it they raise :class:`InputError`.

    Returns
    -------
    dict
        File name -> path written.
    """
    import networkx as nx

    if not isinstance(graph, VesselGraph):
        raise InputError(f"write_graph needs a VesselGraph, not {type(graph).__name__}")
    out = Path(outdir).expanduser()
    if out.exists() and not out.is_dir():
        raise InputError(f"{out} is a file; give a folder for the graph files")
    paths = {name: out / name for name in OUTPUT_FILES}
    existing = [str(p) for p in paths.values() if p.exists()]
    if existing and not overwrite:
        raise InputError(f"{', '.join(existing)} already exist(s); pass --overwrite to replace "
                         "them (overwrite=True in Python), or choose another folder")
    try:
        json.dumps(manifest, default=str)
    except (TypeError, ValueError) as err:
        raise InputError(f"the manifest cannot be written as JSON: {err}") from err
    spacing = graph.spacing_zyx
    summary = {
        "voxel_size_um": list(spacing),
        "shape": list(graph.shape),
        "summary": graph.summary.to_dict(),
        "paper_001_graph_metrics": {k: getattr(graph.summary, k) for k in PAPER_METRICS},
        "params": graph.params.to_dict(),
        "files": list(OUTPUT_FILES),
        "manifest": manifest or {},
    }

    def write(tmp: dict[str, Path]) -> None:
        _write_csv(tmp["segments.csv"], graph.segment_rows(), _SEGMENT_FIELDS, spacing)
        _write_csv(tmp["nodes.csv"], graph.node_rows(), _NODE_FIELDS, spacing)
        nx.write_graphml(graph.to_networkx(), tmp["graph.graphml"])
        tmp["manifest"].write_text(json.dumps(summary, indent=2, default=str) + "\n",
                                   encoding="utf-8")

    publish_set({**{k: v for k, v in paths.items() if k != "summary.json"},
                 "manifest": paths["summary.json"]}, write)
    return paths
