"""``napari-vessel graph``: the centreline graph and morphometrics of a label stack, as files."""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

from napari_vessel.errors import InputError

NAME = "graph"
HELP = "vessel graph and morphometrics of a label stack: CSV, GraphML and a JSON summary"
DESCRIPTION = """\
Turn vessel labels into a centreline graph (junctions, end points and the segments between them)
and measure it in µm: length, radius, tortuosity and direction per segment; vessel volume
fraction, length density, branch-point density, diameters and paper 001's graph metrics (segments,
dangling segments, segments < 6 µm, junctions of more than three branches) for the stack.
Every label > 0 is vessel. Anisotropic stacks are resampled to near-isotropic voxels before
thinning, so lengths are right in µm. Writes, in the output folder:
  segments.csv     one row per segment (µm), with the voxel size
  nodes.csv        one row per junction / end point (µm), with the voxel size
  graph.graphml    the graph for networkx, Gephi, Cytoscape...
  summary.json     morphometrics, graph metrics, voxel size, parameters and the run manifest
A folder that already holds files is refused unless --overwrite is given (then only these four
files are replaced). See docs/graph.md for the definitions.

examples:
  napari-vessel graph seg_labels.tif -o graph_out
  napari-vessel graph seg_labels.tif -o graph_out --spacing 3 1 1 --prune-um 5 --overwrite
"""


def add_arguments(parser: argparse.ArgumentParser) -> None:
    """Add the ``graph`` options to ``parser``."""
    from napari_vessel.graph.params import GraphParams

    default = GraphParams()
    parser.add_argument("labels", help="3D label stack (TIFF, OME-TIFF, Zarr); > 0 is vessel")
    parser.add_argument("-o", "--out", required=True, metavar="OUTDIR",
                        help="output folder (created when missing)")
    parser.add_argument("--spacing", type=float, nargs=3, default=None, metavar=("Z", "Y", "X"),
                        help="voxel size in µm (default: from the file; 1 µm with a warning "
                             "when the file has none)")
    parser.add_argument("--prune-um", type=float, default=default.prune_um, metavar="L",
                        help="remove end branches reaching less than L µm beyond the wall of "
                             f"the vessel they leave (default {default.prune_um:g})")
    parser.add_argument("--min-object-voxels", type=int, default=default.min_object_voxels,
                        metavar="N", help="drop vessel pieces of fewer voxels "
                                          f"(default {default.min_object_voxels})")
    parser.add_argument("--fill-cavities-um3", type=float, default=default.fill_cavities_um3,
                        metavar="V", help="fill background cavities enclosed in the vessels up to "
                        f"V µm³ before thinning (default {default.fill_cavities_um3:g}; 0: none)")
    parser.add_argument("--channel", type=int, default=None, help="channel of a multi-channel file")
    parser.add_argument("--frame", type=int, default=None, metavar="N",
                        help="time point of a time series")
    parser.add_argument("--overwrite", action="store_true",
                        help="write into a folder that already holds files")
    parser.add_argument("--quiet", action="store_true", help="no progress bar")


def _check_outdir(out: Path, overwrite: bool) -> None:
    if out.exists() and not out.is_dir():
        raise InputError(f"{out} is a file; give a folder for the graph files with -o")
    if out.is_dir() and any(out.iterdir()) and not overwrite:
        raise InputError(f"{out} is not empty; choose a new folder, or add --overwrite to "
                         "replace the graph files in it")


def run(args: argparse.Namespace) -> int:
    """Build the graph of ``args.labels`` and write its files; returns the exit code."""
    from napari_vessel.graph import GraphParams
    from napari_vessel.io.stacks import load_volume

    out = Path(args.out).expanduser()
    _check_outdir(out, args.overwrite)
    params = GraphParams(prune_um=args.prune_um, min_object_voxels=args.min_object_voxels,
                         fill_cavities_um3=args.fill_cavities_um3)
    volume = load_volume(args.labels, channel=args.channel, frame=args.frame,
                         spacing=args.spacing, lazy=False)
    if not volume.spacing_known:
        print(f"warning: {args.labels} does not give its voxel size; using "
              f"{' × '.join(f'{s:g}' for s in volume.spacing_zyx)} µm (give --spacing Z Y X "
              "for lengths in µm)", file=sys.stderr)
    print(f"graph of {args.labels} {volume.shape} at "
          f"{' × '.join(f'{s:g}' for s in volume.spacing_zyx)} µm ...", file=sys.stderr)
    write_and_report(volume.data, volume.spacing_zyx, out, params, {
        "command": ["napari-vessel", *sys.argv[1:]] if sys.argv[1:2] == ["graph"] else None,
        "input": str(args.labels), "spacing_known": bool(volume.spacing_known)},
        overwrite=args.overwrite, quiet=args.quiet)
    return 0


def write_and_report(labels, spacing_zyx, out: Path, params, manifest: dict, *,
                     overwrite: bool = False, quiet: bool = False):
    """Build the graph of ``labels``, write its files to ``out`` and print the summary.

    Shared by ``graph`` and ``segment --graph``; ``manifest`` gets the voxel size, the time
    taken and the library versions. Returns the :class:`~napari_vessel.graph.VesselGraph`.
    """
    import networkx
    import skan

    from napari_vessel import __version__
    from napari_vessel.graph import vessel_graph, write_graph
    from napari_vessel.progress import tqdm_progress

    start = time.perf_counter()
    with tqdm_progress("graph", disable=quiet) as progress:
        graph = vessel_graph(labels, spacing_zyx, params, progress=progress)
    seconds = time.perf_counter() - start
    manifest = {**manifest, "voxel_size_um": list(spacing_zyx), "seconds": round(seconds, 3),
                "versions": {"napari-vessel": __version__, "skan": skan.__version__,
                             "networkx": networkx.__version__}}
    write_graph(graph, out, manifest, overwrite=overwrite)
    s = graph.summary
    if s.note:
        print(f"note: {s.note}", file=sys.stderr)
    print(f"{s.n_segments} segments, {s.n_junctions} junctions, total length "
          f"{s.total_length_um:.1f} µm ({s.length_density_mm_per_mm3:.1f} mm/mm³), "
          f"vessel fraction {s.vessel_volume_fraction:.2%}; dangling {s.n_dangling}, "
          f"short (< 6 µm) {s.n_short}, incorrect bifurcations {s.n_incorrect_bifurcations}")
    print(f"wrote segments.csv, nodes.csv, graph.graphml, summary.json to {out} in "
          f"{seconds:.1f} s", file=sys.stderr)
    return graph
