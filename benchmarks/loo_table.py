"""One leave-one-volume-out table of every model, with the papers' metrics.

Each model's leave-one-out run (``loo_eval.py``, ``umis_loo.py``, ``zoo_loo.py``) keeps the
probability map of every held-out volume, predicted by weights that never saw it, and the
threshold chosen without it. This script thresholds those maps at their fold's level and scores
them against the labels with :func:`napari_vessel.evaluation.metrics.evaluate` (AP, F1, sensitivity,
specificity, Jaccard, MCC, clDice, HD95), so every model is scored by the same code. Labels are
read only here.

    python benchmarks/loo_table.py --data ../shared/data/vesselnn \\
        --entry tvnet "/tmp/loo/tvnet/{volume}.probs.npz" /tmp/loo/tvnet.json \\
        --entry umis "/tmp/umis/loo/probs-{volume}.npz" 0.5

An entry is NAME, a path pattern with ``{volume}`` (``.npz`` holding the map under the volume's
name, or ``.npy``), and the thresholds: a number, or leave-one-out JSON files / JSON-lines logs
whose rows give ``volume`` and ``threshold``.
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path

import numpy as np

from napari_vessel.evaluation.metrics import evaluate
from napari_vessel.training.data import load_pairs

COLUMNS = (("ap", "AP"), ("dice", "F1"), ("sensitivity", "Sens"), ("specificity", "Spec"),
           ("jaccard", "Jaccard"), ("mcc", "MCC"), ("cldice", "clDice"), ("hd95", "HD95 (voxels)"))


def thresholds(sources: list[str]) -> dict[str, float] | float:
    """A fixed level, or volume -> the fold's level from JSON files or JSON-lines logs."""
    if len(sources) == 1:
        try:
            return float(sources[0])
        except ValueError:
            pass
    found: dict[str, float] = {}
    for source in sources:
        text = Path(source).read_text()
        try:
            data = json.loads(text)
            rows = data.get("rows", []) if isinstance(data, dict) else data
        except ValueError:
            rows = [json.loads(line) for line in text.splitlines() if line.startswith("{")]
        found.update({r["volume"]: float(r["threshold"]) for r in rows})
    return found


def load_map(pattern: str, volume: str) -> np.ndarray:
    """The held-out probability map of one volume."""
    path = Path(pattern.format(volume=volume))
    if path.suffix == ".npy":
        return np.load(path).astype(np.float32)
    with np.load(path) as maps:
        return maps[volume].astype(np.float32)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--data", default="../shared/data/vesselnn")
    parser.add_argument("--entry", nargs="+", action="append", required=True,
                        metavar="NAME PATTERN LEVELS", help="a model's leave-one-out maps")
    parser.add_argument("--json", help="write every row here")
    args = parser.parse_args()
    pairs = load_pairs(args.data)
    rows = []
    for name, pattern, *levels in args.entry:
        level = thresholds(levels)
        for pair in pairs:
            prob = load_map(pattern, pair.name)
            t = level if isinstance(level, float) else level[pair.name]
            scores = evaluate(prob > t, pair.labels, prob)
            rows.append({"model": name, "volume": pair.name, "threshold": t, **scores})
            print(json.dumps(rows[-1]), flush=True)
    names = list(dict.fromkeys(r["model"] for r in rows))
    print("\n| model | " + " | ".join(h for _, h in COLUMNS) + " |")
    print("|---|" + "---|" * len(COLUMNS))
    for name in names:
        mine = [r for r in rows if r["model"] == name]
        cells = [f"{np.mean([r[k] for r in mine]):.3f}" for k, _ in COLUMNS]
        print(f"| {name} | " + " | ".join(cells) + " |")
    print("\nF1 per held-out volume:\n")
    print("| model | " + " | ".join(p.name for p in pairs) + " | mean |")
    print("|---|" + "---|" * (len(pairs) + 1))
    for name in names:
        f1 = {r["volume"]: r["dice"] for r in rows if r["model"] == name}
        print(f"| {name} | " + " | ".join(f"{f1[p.name]:.3f}" for p in pairs)
              + f" | **{np.mean(list(f1.values())):.3f}** |")
    if args.json:
        Path(args.json).write_text(json.dumps(rows, indent=1))


if __name__ == "__main__":
    main()
