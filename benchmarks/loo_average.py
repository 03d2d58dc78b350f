"""Leave-one-out score of averaged maps: several models' saved folds, optionally with the intensity.

Reads the fold maps that ``loo_eval.py``, ``umis_loo.py`` or ``zoo_loo.py`` saved with
``--save-dir`` (``HELD.probs.npz`` or ``probs-HELD.npz``: the map of every volume from the model
trained without HELD), averages them per fold, chooses the level on the five training volumes and
scores the held-out one, as the single models are scored. ``--intensity W`` adds, with the same
weight as each model, a soft threshold ``sigmoid((I - L) / W)`` of the depth-corrected intensity,
where L is the intensity level with the best mean F1 on the training volumes of the fold.

usage::

    python benchmarks/loo_average.py FOLDS_A FOLDS_B [...] [--intensity 0.03]
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

import numpy as np
from threshold_baseline import f1_curve


def fold_maps(folder: Path, held: str) -> np.lib.npyio.NpzFile:
    """The maps saved for the fold that held out ``held``."""
    for name in (f"{held}.probs.npz", f"probs-{held}.npz"):
        if (folder / name).is_file():
            return np.load(folder / name)
    raise SystemExit(f"{folder} has no saved maps for the fold without {held}")


def main(argv: list[str] | None = None) -> int:
    from napari_vessel.training.data import load_pairs, training_pipeline
    from napari_vessel.training.loo import leave_one_out
    from napari_vessel.training.train import choose_threshold, f1_score

    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("folders", nargs="*", type=Path, help="--save-dir folders of LOO runs")
    parser.add_argument("--data", default="../shared/data/vesselnn")
    parser.add_argument("--intensity", type=float, default=None, metavar="W",
                        help="also average a soft intensity threshold of this width")
    args = parser.parse_args(argv)
    if not args.folders and args.intensity is None:
        parser.error("give at least one folder or --intensity")
    pairs = load_pairs(args.data, pipeline=training_pipeline(depth_correct=True))
    levels = np.linspace(0.0, 0.8, 321)
    curves = {p.name: f1_curve(p.image, p.labels, levels) for p in pairs}
    rows = []
    for held, train in leave_one_out(pairs):
        maps = [fold_maps(folder, held.name) for folder in args.folders]
        terms = {p.name: [m[p.name].astype(np.float32) for m in maps] for p in pairs}
        if args.intensity is not None:
            level = levels[np.argmax(np.mean([curves[p.name] for p in train], axis=0))]
            for p in pairs:
                terms[p.name].append(1 / (1 + np.exp(-(p.image - level) / args.intensity)))
        mean = {name: np.mean(values, axis=0) for name, values in terms.items()}
        chosen, _ = choose_threshold([mean[p.name] for p in train], [p.labels for p in train])
        rows.append((held.name, f1_score(mean[held.name] > chosen, held.labels), chosen))
    print("| held-out volume | F1 | level |\n|---|---|---|")
    for name, f1, level in rows:
        print(f"| {name} | {f1:.3f} | {level:.3f} |")
    print(f"| **mean** | **{np.mean([r[1] for r in rows]):.3f}** | |")
    return 0


if __name__ == "__main__":
    sys.exit(main())
