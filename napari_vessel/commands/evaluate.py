"""``napari-vessel evaluate``: score segmentations against reference labels, as a Markdown table."""

from __future__ import annotations

import argparse
import csv
import sys
from pathlib import Path

import numpy as np

from napari_vessel.errors import InputError
from napari_vessel.evaluation.metrics import COLUMNS, evaluate, format_table, mean_row
from napari_vessel.io.common import atomic_path, check_can_write
from napari_vessel.io.stacks import load_volume
from napari_vessel.io.volume import check_spacing

NAME = "evaluate"
HELP = "score segmentations against reference labels (AP, Dice/F1, ..., clDice, HD95)"
DESCRIPTION = """\
Compare predicted labels with reference labels, pair by pair (the first --pred with the first
--ref, and so on), and print a Markdown table like the papers' tables: AP (when probability maps
are given), Dice/F1, Jaccard, precision, sensitivity, specificity, accuracy, MCC, clDice and HD95,
one row per pair and a mean row. Non-zero voxels are vessel. HD95 is in µm when the voxel size is
known (from --spacing or the reference file), otherwise in voxels.

With --graph, the vessel graphs of both label stacks are built too (as `napari-vessel graph` does,
default parameters, same voxel size; 1 µm with a warning when it is unknown) and the table gets
paper 001's length correlation (lc) and the differences prediction - reference of the graph
morphometrics: d_total_length_um, d_n_segments, d_n_junctions, d_n_end_points and
d_mean_diameter_um (µm). See docs/graph.md.

examples:
  napari-vessel evaluate --pred seg1.tif seg2.tif --ref gt1.tif gt2.tif
  napari-vessel evaluate --pred seg.tif --prob prob.tif --ref gt.tif --spacing 2 1 1 --csv scores.csv
  napari-vessel evaluate --prob prob.tif --threshold 0.4 --ref gt.tif
  napari-vessel evaluate --pred seg.tif --ref gt.tif --graph --spacing 5 1 1
"""


def add_arguments(parser: argparse.ArgumentParser) -> None:
    """Add the ``evaluate`` options to ``parser``."""
    parser.add_argument("--pred", nargs="+", default=None, metavar="FILE",
                        help="predicted label stacks (non-zero = vessel)")
    parser.add_argument("--ref", nargs="+", required=True, metavar="FILE",
                        help="reference label stacks, in the same order as --pred")
    parser.add_argument("--prob", nargs="+", default=None, metavar="FILE",
                        help="probability maps for AP, in the same order; without --pred the "
                             "labels are prob > --threshold")
    parser.add_argument("--threshold", type=float, default=0.5, metavar="T",
                        help="threshold for --prob when no --pred is given (default 0.5)")
    parser.add_argument("--spacing", nargs=3, type=float, default=None, metavar=("Z", "Y", "X"),
                        help="voxel size in µm for HD95 and --graph (default: from the reference "
                             "file)")
    parser.add_argument("--graph", action="store_true",
                        help="also compare the vessel graphs: LC and differences in total length, "
                             "segments, junctions, end points and mean diameter")
    parser.add_argument("--csv", default=None, metavar="FILE", help="also write the table as CSV")
    parser.add_argument("--overwrite", action="store_true", help="replace an existing --csv file")


def _read(path: str) -> tuple[np.ndarray, tuple[float, float, float] | None]:
    """Voxels of ``path`` and its voxel size (None when the file does not give it)."""
    volume = load_volume(path, lazy=False)
    return volume.to_numpy(), (volume.spacing_zyx if volume.spacing_known else None)


def _check_labels(array: np.ndarray, path: str) -> None:
    if array.dtype.kind == "f" and np.any((array != 0) & (array != 1)):
        raise InputError(
            f"{path} holds values other than 0 and 1, like a probability map; pass it with "
            "--prob (and --threshold), or threshold it first"
        )


def _check_probability(prob: np.ndarray, path: str) -> None:
    """A probability map holds values in [0, 1]; anything else is another kind of image."""
    finite = np.isfinite(prob)
    if not finite.all():
        raise InputError(f"{path} holds NaN or infinite values; it is not a probability map")
    lo, hi = float(prob.min()), float(prob.max())
    if lo < 0.0 or hi > 1.0:
        raise InputError(f"{path} holds values from {lo:g} to {hi:g}, outside [0, 1], so it is "
                         "not a probability map (an image or labels?); pass the probability map "
                         "that segment writes (*_prob.tif), or labels with --pred")


def _graph_scores(labels: np.ndarray, reference: np.ndarray, spacing_zyx, name: str) -> dict:
    """LC and the ``d_*`` differences of the two graphs (notes go to stderr)."""
    from napari_vessel.graph.compare import graph_scores

    scores, notes = graph_scores(labels, reference, spacing_zyx)
    for note in notes:
        print(f"note: {name}: {note}", file=sys.stderr)
    return scores


def _write_csv(path: str, rows: list[dict], overwrite: bool) -> None:
    from napari_vessel.graph.compare import GRAPH_COLUMNS

    keys = ["name"] + [k for k in (*COLUMNS, *GRAPH_COLUMNS) if any(k in row for row in rows)]
    with atomic_path(Path(path).expanduser(), overwrite=overwrite) as tmp, \
            open(tmp, "w", newline="", encoding="utf-8") as handle:
        writer = csv.DictWriter(handle, fieldnames=keys, extrasaction="ignore")
        writer.writeheader()
        writer.writerows(rows)


def run(args: argparse.Namespace) -> int:
    """Score every (prediction, reference) pair and print the table; returns the exit code."""
    refs = list(args.ref)
    preds = list(args.pred) if args.pred else None
    probs = list(args.prob) if args.prob else None
    if preds is None and probs is None:
        raise InputError("give the predictions with --pred (labels) or --prob (probability maps)")
    for flag, files in (("--pred", preds), ("--prob", probs)):
        if files is not None and len(files) != len(refs):
            raise InputError(
                f"{len(files)} file(s) after {flag} but {len(refs)} after --ref; give one "
                "reference per prediction, in the same order"
            )
    if args.csv:  # before the work: an existing file is only replaced with --overwrite
        check_can_write(Path(args.csv).expanduser().resolve(), overwrite=args.overwrite)
    spacing = check_spacing(args.spacing, 3) if args.spacing is not None else None

    rows: list[dict] = []
    n_in_voxels = 0
    for i, ref_path in enumerate(refs):
        reference, ref_spacing = _read(ref_path)
        prob = _read(probs[i])[0] if probs else None
        if prob is not None:
            _check_probability(prob, probs[i])
        if preds:
            labels, _ = _read(preds[i])
            _check_labels(labels, preds[i])
        else:
            labels = prob > args.threshold
        name = Path(preds[i] if preds else probs[i]).name
        for what, array in (("prediction", labels), ("probability map", prob)):
            if array is not None and array.shape != reference.shape:
                raise InputError(
                    f"{name}: {what} {array.shape} and reference {Path(ref_path).name} "
                    f"{reference.shape} differ in shape; pair files of the same stack"
                )
        voxel = spacing or ref_spacing
        n_in_voxels += voxel is None
        print(f"scoring {name} against {Path(ref_path).name} ...", file=sys.stderr)
        row = {"name": name, **evaluate(labels, reference, prob, voxel)}
        if args.graph:
            if voxel is None:
                print(f"warning: {Path(ref_path).name} does not give its voxel size; graphs "
                      "measured at 1 × 1 × 1 µm (give --spacing Z Y X for lengths in µm)",
                      file=sys.stderr)
            row.update(_graph_scores(labels, reference, voxel or (1.0, 1.0, 1.0), name))
        rows.append(row)

    table_rows = rows + [mean_row(rows)] if len(rows) > 1 else rows
    print(format_table(table_rows))
    if n_in_voxels == 0:
        print("\nHD95 in µm.")
    else:
        which = "" if n_in_voxels == len(rows) else " for the pairs whose voxel size is unknown"
        print(f"\nHD95 in voxels{which} (give --spacing Z Y X for µm).")
    if args.graph:
        unit = "µm" if n_in_voxels == 0 else "µm (1 µm voxels where the voxel size is unknown)"
        print("lc: length correlation of the vessel graphs (paper 001); d_*: prediction - "
              f"reference of the graph morphometrics, lengths and diameters in {unit}.")
    if args.csv:
        _write_csv(args.csv, table_rows, args.overwrite)
        print(f"wrote {args.csv}", file=sys.stderr)
    return 0
