"""``napari-vessel benchmark``: every model on a folder of annotated stacks, one comparison table."""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

from napari_vessel.errors import InputError
from napari_vessel.io.common import atomic_path, check_can_write

NAME = "benchmark"
HELP = "compare the models on your annotated stacks: scores, seconds, voxels/s, memory"
DESCRIPTION = """\
Run every model that can run (the networks with trained weights and the classical methods; the
others are listed as skipped) on every image/label pair of a folder, the same way as
'napari-vessel segment' (the model's preprocessing, threshold or post-processing), and print a
Markdown table with one row per model: the mean over the volumes of AP, F1 (Dice), sensitivity,
specificity, Jaccard, MCC, clDice and HD95, seconds per volume, voxels per second and the peak
rise of resident memory. The folder holds images/NAME.tif and labels/NAME.tif (non-zero =
vessel), as 'napari-vessel data' writes them.

examples:
  napari-vessel benchmark --data ~/vesselnn
  napari-vessel benchmark --data ~/vesselnn --models tvnet frangi --per-volume --out table.md
  napari-vessel benchmark --data ~/vesselnn --json rows.json --spacing 5 1 1
  napari-vessel benchmark --data ~/vesselnn --models tvnet frangi --graph
"""


def add_arguments(parser: argparse.ArgumentParser) -> None:
    """Add the ``benchmark`` options to ``parser``."""
    parser.add_argument("--data", required=True, metavar="DIR",
                        help="folder with images/ and labels/ of matching TIFF files")
    parser.add_argument("--models", nargs="+", default=None, metavar="NAME",
                        help="models to compare (default: every model that can run)")
    parser.add_argument("--device", default="auto", choices=("auto", "cpu", "cuda", "mps"),
                        help="where to run the networks (default auto: CUDA, then MPS, then CPU)")
    parser.add_argument("--spacing", type=float, nargs=3, default=None, metavar=("Z", "Y", "X"),
                        help="voxel size in µm of every stack (default: from the files)")
    parser.add_argument("--per-volume", action="store_true",
                        help="also print one row per model and volume")
    parser.add_argument("--out", default=None, metavar="FILE", help="also write the Markdown here")
    parser.add_argument("--json", default=None, metavar="FILE",
                        help="write every row (per volume and mean) as JSON")
    parser.add_argument("--overwrite", action="store_true",
                        help="replace existing --out / --json files")
    parser.add_argument("--graph", action="store_true",
                        help="also compare the vessel graphs with the references': paper 001's "
                        "length correlation (LC) and the differences of total length, segments, "
                        "junctions, end points and mean diameter (docs/graph.md)")
    parser.add_argument("--quiet", action="store_true", help="no progress bar")


def _check_target(path: str | None, overwrite: bool) -> None:
    """Fail before the long run when an output cannot be written (or exists, without
    --overwrite)."""
    if path:
        check_can_write(Path(path).expanduser().resolve(), overwrite=overwrite)


def _write_text(path: str, text: str, overwrite: bool) -> None:
    """Write ``text`` to ``path`` atomically (nothing half-written on failure)."""
    with atomic_path(Path(path).expanduser(), overwrite=overwrite) as tmp:
        tmp.write_text(text, encoding="utf-8")


def run(args: argparse.Namespace) -> int:
    """Compare the models on ``args.data`` and print the table; returns the exit code."""
    from napari_vessel.evaluation.comparison import (
        choose_models,
        compare,
        format_markdown,
        load_folder,
        to_json,
    )
    from napari_vessel.io.volume import check_spacing
    from napari_vessel.progress import tqdm_progress

    _check_target(args.out, args.overwrite)
    _check_target(args.json, args.overwrite)
    spacing = check_spacing(args.spacing, 3) if args.spacing is not None else None
    runnable, skipped = choose_models(args.models)  # fail early on a bad name
    if not runnable:
        raise InputError("none of the chosen models can run: they have no trained weights; "
                         "add a classical one (frangi, morph-acwe)")
    pairs = load_folder(args.data, spacing_zyx=spacing)
    if skipped:
        print(f"skipping (no trained weights): {', '.join(i['model'] for i in skipped)}",
              file=sys.stderr)
    print(f"comparing {len(runnable)} model(s) on {len(pairs)} volume(s) from {args.data} ...",
          file=sys.stderr)
    with tqdm_progress("benchmark", disable=args.quiet) as progress:
        result = compare(pairs, args.models, device=args.device, progress=progress,
                         graph=args.graph)
    command = ["napari-vessel", *sys.argv[1:]] if sys.argv[1:2] == ["benchmark"] else None
    result.settings["command"] = command
    table = format_markdown(result, per_volume=args.per_volume)
    print(table, end="")
    if args.out:
        _write_text(args.out, table, args.overwrite)
        print(f"wrote {args.out}", file=sys.stderr)
    if args.json:
        _write_text(args.json, json.dumps(to_json(result), indent=2) + "\n", args.overwrite)
        print(f"wrote {args.json}", file=sys.stderr)
    return 0
