"""Vessel graphs of the six real VesselNN volumes: reference labels against the default model.

For each volume in ``--data`` (``images/`` and ``labels/`` TIFFs of the same names), the image is
segmented with the shipped default model (``napari_vessel.inference.run.segment``, its own
preprocessing and threshold), the vessel graphs of the reference labels and of the model's labels
are built with the default ``GraphParams`` at the same voxel size, and a Markdown table is printed:
per volume the reference's / model's total length (mm), segments, junctions, dangling segments and
mean radius (µm, half of ``Morphometrics.mean_diameter_um``), and LC (paper 001), F1 and clDice;
plus a mean row. This is paper 001's figure 6b kind of comparison.

The files do not give their voxel size and the dataset's README calls it uncertain (about 1 µm in
x and y, 5 µm in z from the source acquisitions' metadata; other sources say 0.5 x 0.5 x 1 µm); the
default here is 5 x 1 x 1 µm (z, y, x), change it with ``--spacing Z Y X``. The segmentation does
not depend on it (the default model's preprocessing does not use the voxel size).

usage::

    OMP_NUM_THREADS=1 python benchmarks/graph_real.py --data ../shared/data/vesselnn

Runs on one thread (``--threads`` to change). Exits 0 with a message when the folder is absent.
"""

from __future__ import annotations

import os

for _name in ("OMP_NUM_THREADS", "MKL_NUM_THREADS", "OPENBLAS_NUM_THREADS", "NUMBA_NUM_THREADS"):
    os.environ.setdefault(_name, "1")

import argparse  # noqa: E402
import json  # noqa: E402
import sys  # noqa: E402
import time  # noqa: E402
from pathlib import Path  # noqa: E402

import numpy as np  # noqa: E402

NAMES = ("burgess2014_bbbDisruption", "burgess2014_noisySparseVessels", "burgess2014_tgMouse",
         "poon2015_BBB_Leakage", "poon2015_plaqueVessels", "santos2015_lowContrastVessels")
#: Columns: key -> (title, format); ``pair`` columns show "reference / model".
PAIRED = {"length_mm": ("length (mm)", "{:.2f}"), "n_segments": ("segments", "{:.0f}"),
          "n_junctions": ("junctions", "{:.0f}"), "n_dangling": ("dangling", "{:.0f}"),
          "radius_um": ("mean radius (µm)", "{:.2f}")}
SINGLE = {"lc": ("LC", "{:.3f}"), "f1": ("F1", "{:.3f}"), "cldice": ("clDice", "{:.3f}")}


def graph_numbers(graph) -> dict[str, float]:
    """The table's numbers of one graph."""
    s = graph.summary
    return {"length_mm": s.total_length_um / 1000.0, "n_segments": s.n_segments,
            "n_junctions": s.n_junctions, "n_dangling": s.n_dangling,
            "n_end_points": s.n_end_points, "n_short": s.n_short,
            "radius_um": s.mean_diameter_um / 2.0}


def measure(name: str, data: Path, spacing: tuple[float, float, float], model: str | None,
            threads: int) -> dict:
    """Segment one volume and compare the two graphs; returns one row."""
    from napari_vessel.evaluation.metrics import cldice, dice
    from napari_vessel.graph import compare_graphs, vessel_graph
    from napari_vessel.inference.run import segment
    from napari_vessel.io.stacks import load_volume

    image = load_volume(data / "images" / f"{name}.tif", lazy=False)
    reference = load_volume(data / "labels" / f"{name}.tif", lazy=False).to_numpy() > 0
    started = time.perf_counter()
    _, labels, manifest = segment(image, model, spacing_zyx=spacing, device="cpu",
                                  threads=threads)
    seg_s = time.perf_counter() - started
    started = time.perf_counter()
    ref_graph = vessel_graph(reference, spacing)
    model_graph = vessel_graph(labels, spacing)
    graph_s = time.perf_counter() - started
    comparison = compare_graphs(model_graph, ref_graph, labels, reference)
    row = {"volume": name, "model": manifest.model.name,
           "threshold": manifest.parameters.threshold,
           "ref": graph_numbers(ref_graph), "pred": graph_numbers(model_graph),
           "lc": comparison.lc, "f1": dice(labels, reference), "cldice": cldice(labels, reference),
           "seconds": {"segment": round(seg_s, 1), "graphs": round(graph_s, 1)}}
    print(f"{name}: segmented in {seg_s:.0f} s, graphs in {graph_s:.0f} s", file=sys.stderr)
    return row


def mean(rows: list[dict]) -> dict:
    """The mean row (plain means over the volumes)."""
    return {"volume": "**mean**",
            **{side: {k: float(np.mean([r[side][k] for r in rows])) for k in rows[0][side]}
               for side in ("ref", "pred")},
            **{k: float(np.mean([r[k] for r in rows])) for k in SINGLE}}


def table(rows: list[dict]) -> str:
    """Markdown table: reference / model per graph number, then LC, F1, clDice."""
    head = ["volume", *(f"{title} ref / model" for title, _ in PAIRED.values()),
            *(title for title, _ in SINGLE.values())]
    lines = ["| " + " | ".join(head) + " |", "|" + "---|" * len(head)]
    for row in [*rows, mean(rows)]:
        cells = [row["volume"]]
        cells += [f"{fmt.format(row['ref'][k])} / {fmt.format(row['pred'][k])}"
                  for k, (_, fmt) in PAIRED.items()]
        cells += [fmt.format(row[k]) for k, (_, fmt) in SINGLE.items()]
        lines.append("| " + " | ".join(cells) + " |")
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--data", default="../shared/data/vesselnn",
                        help="folder with images/ and labels/ (default ../shared/data/vesselnn)")
    parser.add_argument("--spacing", nargs=3, type=float, default=(5.0, 1.0, 1.0),
                        metavar=("Z", "Y", "X"), help="voxel size in µm (default 5 1 1)")
    parser.add_argument("--model", default=None, help="registered model (default: the default)")
    parser.add_argument("--threads", type=int, default=1, help="CPU threads (default 1)")
    parser.add_argument("--json", default=None, metavar="FILE", help="also write the rows as JSON")
    args = parser.parse_args(argv)

    data = Path(args.data)
    missing = [n for n in NAMES if not (data / "images" / f"{n}.tif").is_file()
               or not (data / "labels" / f"{n}.tif").is_file()]
    if missing:
        print(f"skipped: {data} does not hold the six VesselNN volumes (images/ and labels/; "
              f"missing {', '.join(missing)})")
        return 0
    import torch

    torch.set_num_threads(args.threads)
    spacing = tuple(float(s) for s in args.spacing)
    rows = [measure(name, data, spacing, args.model, args.threads) for name in NAMES]
    print(f"model {rows[0]['model']} (threshold {rows[0]['threshold']:g}), voxel size "
          f"{' × '.join(f'{s:g}' for s in spacing)} µm (z, y, x), default GraphParams\n")
    print(table(rows))
    if args.json:
        Path(args.json).write_text(json.dumps({"spacing_zyx": spacing, "rows": rows,
                                               "mean": mean(rows)}, indent=1))
    return 0


if __name__ == "__main__":
    sys.exit(main())
