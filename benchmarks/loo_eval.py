"""Leave-one-volume-out evaluation of the supervised recipe on the six VesselNN volumes.

For each volume: train on the other five (same settings as the shipped model), choose the threshold
on those five, then score the held-out volume (F1 at that threshold, average precision, clDice).
Prints a Markdown table and writes it as JSON with ``--json``.

    python benchmarks/loo_eval.py --data ../shared/data/vesselnn --steps 600 --json loo.json
"""

from __future__ import annotations

import argparse
import json
import time

import numpy as np
import torch

from napari_vessel.models.tvnet import build_tvnet
from napari_vessel.training.data import load_pairs
from napari_vessel.training.train import TrainConfig, f1_score, predict_volume, train


def average_precision(prob: np.ndarray, labels: np.ndarray) -> float:
    """Area under the precision-recall curve (step interpolation, as scikit-learn)."""
    order = np.argsort(-prob.ravel(), kind="stable")
    hits = labels.ravel()[order]
    tp = np.cumsum(hits)
    precision = tp / np.arange(1, len(tp) + 1)
    return float((precision * hits).sum() / max(1, hits.sum()))


def cldice(pred: np.ndarray, labels: np.ndarray) -> float:
    """clDice (paper 004, eq. 1-2) with per-slice-free 3D skeletons."""
    from skimage.morphology import skeletonize

    sp, sl = skeletonize(pred) > 0, skeletonize(labels) > 0
    tprec = (sp & labels).sum() / max(1, sp.sum())
    tsens = (sl & pred).sum() / max(1, sl.sum())
    return float(2 * tprec * tsens / max(1e-9, tprec + tsens))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--data", default="../shared/data/vesselnn")
    parser.add_argument("--steps", type=int, default=600)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--only", nargs="*", help="held-out volumes to run (default: all)")
    parser.add_argument("--config", default="{}", help="JSON overrides of TrainConfig")
    parser.add_argument("--model", default="{}", help="JSON overrides of TVNetConfig")
    parser.add_argument("--json", help="write the per-volume results here")
    parser.add_argument("--threads", type=int, default=2)
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    pairs = load_pairs(args.data)
    overrides = json.loads(args.config)
    if "patch_size" in overrides:
        overrides["patch_size"] = tuple(overrides["patch_size"])
    cfg = TrainConfig(steps=args.steps, seed=args.seed, **overrides)
    rows = []
    for held in pairs:
        if args.only and held.name not in args.only:
            continue
        start = time.monotonic()
        torch.manual_seed(args.seed)
        model = build_tvnet(**json.loads(args.model))
        result = train(model, [p for p in pairs if p is not held], cfg)
        prob = predict_volume(result.model, held.image)
        pred = prob > result.threshold
        row = {"volume": held.name, "f1": f1_score(pred, held.labels),
               "ap": average_precision(prob, held.labels), "cldice": cldice(pred, held.labels),
               "threshold": result.threshold, "train_f1": float(np.mean(list(result.train_f1.values()))),
               "minutes": (time.monotonic() - start) / 60}
        rows.append(row)
        print(json.dumps(row), flush=True)
    print("\n| held-out volume | F1 | AP | clDice | threshold |\n|---|---|---|---|---|")
    for r in rows:
        print(f"| {r['volume']} | {r['f1']:.3f} | {r['ap']:.3f} | {r['cldice']:.3f} | "
              f"{r['threshold']:.3f} |")
    mean = {k: float(np.mean([r[k] for r in rows])) for k in ("f1", "ap", "cldice")}
    print(f"| **mean** | **{mean['f1']:.3f}** | {mean['ap']:.3f} | {mean['cldice']:.3f} | |")
    if args.json:
        with open(args.json, "w") as fh:
            json.dump({"rows": rows, "mean": mean, "steps": args.steps,
                       "config": overrides, "model": json.loads(args.model)}, fh, indent=1)


if __name__ == "__main__":
    main()
