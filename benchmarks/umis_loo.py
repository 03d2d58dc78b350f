"""Leave-one-volume-out evaluation of UMIS trained without labels on the six VesselNN volumes.

For each volume: train UMIS from scratch on the other five *without their labels* (the UMIS
compound loss), segment the held-out volume at the unsupervised threshold 0.5 and score it
against its labels (F1, AP, clDice, and the fraction of voxels called vessel). Labels are read
only for scoring. Prints a Markdown table and writes the rows as JSON (``--json``) in the form
``napari-vessel train --scores`` puts into a model card.

    python benchmarks/umis_loo.py --data ../shared/data/vesselnn --steps 400 --json umis_loo.json
"""

from __future__ import annotations

import argparse
import json
import time
from pathlib import Path

import numpy as np
import torch

from napari_vessel.evaluation.metrics import average_precision, cldice
from napari_vessel.evaluation.metrics import dice as f1_score
from napari_vessel.models.umis import SLIM_CONFIG, build_umis
from napari_vessel.models.weights import save_weights
from napari_vessel.training.data import load_pairs
from napari_vessel.training.loo import leave_one_out
from napari_vessel.training.train_unsupervised import (
    UnsupervisedConfig,
    predict_probability,
    train_unsupervised,
    umis_preprocessing,
)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--data", default="../shared/data/vesselnn")
    parser.add_argument("--steps", type=int, default=400)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--only", nargs="*", help="held-out volumes to run (default: all)")
    parser.add_argument("--config", default="{}", help="JSON overrides of UnsupervisedConfig")
    parser.add_argument("--json", help="write the per-volume results here")
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument("--threshold", type=float, default=0.5)
    parser.add_argument("--device", default="cpu",
                        help="cpu (default, reproducible), cuda, mps or auto")
    parser.add_argument("--save-dir", help="keep each fold's weights + card here (outside the "
                        "repository), e.g. as starting points of benchmarks/bench_finetune.py")
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    pairs = load_pairs(args.data)
    overrides = json.loads(args.config)
    if "patch_size" in overrides:
        overrides["patch_size"] = tuple(overrides["patch_size"])
    cfg = UnsupervisedConfig(steps=args.steps, seed=args.seed, **overrides)
    rows = []
    for held, training in leave_one_out(pairs, only=args.only or None):
        start = time.monotonic()
        torch.manual_seed(args.seed)
        model = build_umis(**SLIM_CONFIG)
        result = train_unsupervised(model, [p.image for p in training], cfg, device=args.device)
        prob = predict_probability(result.model, held.image, threads=args.threads)
        if args.save_dir:
            save_weights(result.model, Path(args.save_dir) / f"umis-loo-{held.name}.safetensors",
                         {"name": f"umis-loo-{held.name}", "architecture": "umis",
                          "config": dict(SLIM_CONFIG), "kind": "unsupervised",
                          "threshold": args.threshold, "preprocessing": umis_preprocessing(),
                          "trained_on": [p.name for p in training]})
        pred = prob > args.threshold
        row = {"volume": held.name, "f1": f1_score(pred, held.labels),
               "ap": average_precision(prob, held.labels), "cldice": cldice(pred, held.labels),
               "threshold": args.threshold, "vessel_fraction": float(pred.mean()),
               "label_fraction": float(held.labels.mean()),
               "minutes": (time.monotonic() - start) / 60}
        rows.append(row)
        print(json.dumps(row), flush=True)
    print("\n| held-out volume | F1 | AP | clDice | called vessel | labelled |\n|---|---|---|---|---|---|")
    for r in rows:
        print(f"| {r['volume']} | {r['f1']:.3f} | {r['ap']:.3f} | {r['cldice']:.3f} | "
              f"{r['vessel_fraction']:.3f} | {r['label_fraction']:.3f} |")
    mean = {k: float(np.mean([r[k] for r in rows])) for k in ("f1", "ap", "cldice")}
    print(f"| **mean** | **{mean['f1']:.3f}** | {mean['ap']:.3f} | {mean['cldice']:.3f} | | |")
    if args.json:
        with open(args.json, "w") as fh:
            json.dump({"rows": rows, "mean": mean, "steps": args.steps, "config": cfg.to_dict(),
                       "threshold": args.threshold}, fh, indent=1)


if __name__ == "__main__":
    main()
