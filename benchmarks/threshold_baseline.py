"""What a single intensity threshold can do on the labelled volumes: the bar a model must clear.

For each preprocessing (the training pipeline, with and without the depth-attenuation correction)
the preprocessed intensity is thresholded at every level of a grid, and three F1 figures are
reported per volume:

- **oracle**: the best level of that volume, chosen *with* its labels (an upper bound);
- **LOO level**: the level with the best mean F1 on the *other* volumes (leave-one-volume-out,
  as the networks' thresholds are chosen);
- **Otsu**: Otsu's level of the volume's own histogram (label-free).

usage::

    python benchmarks/threshold_baseline.py --data ../shared/data/vesselnn
"""

from __future__ import annotations

import argparse
import sys

import numpy as np


def f1_curve(image: np.ndarray, labels: np.ndarray, levels: np.ndarray) -> np.ndarray:
    """F1 of ``image > level`` against ``labels`` for every level (one histogram pass)."""
    order = np.searchsorted(levels, image.ravel(), side="left")  # voxel > levels[:order]
    counts = np.bincount(order, minlength=len(levels) + 1)
    hits = np.bincount(order, weights=labels.ravel().astype(np.float64),
                       minlength=len(levels) + 1)
    above = counts[::-1].cumsum()[::-1][1:]  # voxels strictly above each level
    true_above = hits[::-1].cumsum()[::-1][1:]
    return 2 * true_above / np.maximum(above + labels.sum(), 1)


def main(argv: list[str] | None = None) -> int:
    from skimage.filters import threshold_otsu

    from napari_vessel.training.data import load_pairs, training_pipeline

    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--data", default="../shared/data/vesselnn")
    args = parser.parse_args(argv)
    levels = np.linspace(0.0, 0.8, 321)
    for depth in (False, True):
        pairs = load_pairs(args.data, pipeline=training_pipeline(depth_correct=depth))
        curves = [f1_curve(p.image, p.labels, levels) for p in pairs]
        print(f"\npreprocessing: slice-median subtraction{', depth correction' if depth else ''}"
              ", 1-99.5 percentile normalisation")
        print("| volume | oracle F1 (level) | LOO level F1 (level) | Otsu F1 (level) |")
        print("|---|---|---|---|")
        rows = []
        for i, (pair, curve) in enumerate(zip(pairs, curves, strict=True)):
            others = np.mean([c for j, c in enumerate(curves) if j != i], axis=0)
            loo = int(np.argmax(others))
            otsu = float(threshold_otsu(pair.image))
            otsu_f1 = float(f1_curve(pair.image, pair.labels, np.array([otsu]))[0])
            rows.append((curve.max(), curve[loo], otsu_f1))
            print(f"| {pair.name} | {curve.max():.3f} ({levels[np.argmax(curve)]:.3f}) | "
                  f"{curve[loo]:.3f} ({levels[loo]:.3f}) | {otsu_f1:.3f} ({otsu:.3f}) |")
        mean = np.mean(rows, axis=0)
        print(f"| **mean** | **{mean[0]:.3f}** | **{mean[1]:.3f}** | **{mean[2]:.3f}** |")
    return 0


if __name__ == "__main__":
    sys.exit(main())
