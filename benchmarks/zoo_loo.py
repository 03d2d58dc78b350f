"""Leave-one-volume-out evaluation of any trainable registry model on the six VesselNN volumes.

The protocol of ``loo_eval.py`` for the whole model zoo: for each volume, train the architecture
(``--arch``, e.g. vcnet, dbac, ddmac, deepvess, vesselnn) on the other five with
:func:`napari_vessel.training.train.train` (its paper's loss, 2D models on slices), choose the
threshold on those five (best mean F1 of the final probability, predicted by the plugin's
inference engine), then score the held-out volume: F1, average precision, clDice, sensitivity,
specificity and precision at that threshold. Models with a paper post-processing (the cascades'
hysteresis) also get the F1 of that post-processing (``f1_post``).

``--save-dir`` keeps every fold's probability maps (float16) so that ``--compose A B`` can score
the average of two models' maps (the cascade ensemble of DBAC and DDMAC, paper 003 eq. 9) without
training again: per fold, the threshold is chosen on the averaged maps of the five training
volumes and applied to the averaged held-out map.

The JSON (``--json``) has ``rows`` (one per held-out volume), ``mean`` and the settings; pass it
to ``napari-vessel train --scores`` to put it in a model card.

    python benchmarks/zoo_loo.py --arch vcnet --steps 300 --threads 1 --json vcnet_loo.json
    python benchmarks/zoo_loo.py --compose dbac ddmac --save-dir folds --json ensemble_loo.json
"""

from __future__ import annotations

import argparse
import json
import time
from pathlib import Path

import numpy as np
import torch

from napari_vessel.evaluation.metrics import average_precision, cldice, precision, sensitivity, specificity
from napari_vessel.evaluation.metrics import dice as f1_score
from napari_vessel.models import registry
from napari_vessel.training.data import load_pairs
from napari_vessel.training.loo import leave_one_out
from napari_vessel.training.train import (
    TrainConfig,
    choose_threshold,
    default_patch_size,
    predict_volume,
    train,
)

METRICS = ("f1", "ap", "cldice", "sensitivity", "specificity", "precision")


def score(prob: np.ndarray, labels: np.ndarray, level: float, post: dict | None = None) -> dict:
    """Scores of a held-out probability map at ``level`` (and with ``post``, when given)."""
    pred = prob > level
    row = {"f1": f1_score(pred, labels), "ap": average_precision(prob, labels),
           "cldice": cldice(pred, labels), "sensitivity": sensitivity(pred, labels),
           "specificity": specificity(pred, labels), "precision": precision(pred, labels)}
    if post:
        from napari_vessel.postprocess.labels import Postprocessing

        row["f1_post"] = f1_score(Postprocessing.from_dict(post).apply(prob) > 0, labels)
    return row


def save_maps(folder: Path, held: str, probs: dict) -> None:
    """A fold's probability maps on every volume, float16."""
    folder.mkdir(parents=True, exist_ok=True)
    np.savez_compressed(folder / f"{held}.probs.npz",
                        **{k: v.astype(np.float16) for k, v in probs.items()})


def run_arch(args: argparse.Namespace, pairs: list) -> tuple[list[dict], dict]:
    """Train and score one fold per volume; returns the rows and the training settings."""
    spec = registry.get(args.arch)
    overrides = json.loads(args.config)
    overrides["patch_size"] = tuple(overrides.get("patch_size") or default_patch_size(spec))
    cfg = TrainConfig(steps=args.steps, seed=args.seed, checkpoint_every=0, **overrides)
    rows = []
    for held, training in leave_one_out(pairs, only=args.only or None):
        start = time.monotonic()
        torch.manual_seed(args.seed)
        model = spec.builder(**spec.config)
        result = train(model, training, cfg, spec=spec)
        prob = predict_volume(result.model, held.image, spec=spec)
        if args.save_dir:
            save_maps(Path(args.save_dir) / spec.name, held.name, {**result.probs, held.name: prob})
        row = {"volume": held.name, **score(prob, held.labels, result.threshold,
                                            spec.postprocessing),
               "threshold": result.threshold,
               "train_f1": float(np.mean(list(result.train_f1.values()))),
               "final_loss": float(np.mean(result.losses[-20:])), "steps": result.steps,
               "minutes": (time.monotonic() - start) / 60}
        rows.append(row)
        print(json.dumps(row), flush=True)
    return rows, cfg.to_dict(with_extra=False)


def run_compose(args: argparse.Namespace, pairs: list) -> list[dict]:
    """Score the average of two models' saved fold maps (no training)."""
    folders = [Path(args.save_dir) / name for name in args.compose]
    post = registry.get("cascade-ensemble").postprocessing if set(args.compose) == {
        "dbac", "ddmac"} else None
    rows = []
    for held, training in leave_one_out(pairs, only=args.only or None):
        maps = [np.load(folder / f"{held.name}.probs.npz") for folder in folders]
        mean = {p.name: np.mean([m[p.name].astype(np.float32) for m in maps], axis=0)
                for p in pairs}
        level, scores = choose_threshold([mean[p.name] for p in training],
                                         [p.labels for p in training])
        row = {"volume": held.name, **score(mean[held.name], held.labels, level, post),
               "threshold": level, "train_f1": float(np.mean(scores)), "minutes": 0.0}
        rows.append(row)
        print(json.dumps(row), flush=True)
    return rows


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--data", default="../shared/data/vesselnn")
    what = parser.add_mutually_exclusive_group(required=True)
    what.add_argument("--arch", help="a trainable registry model (napari-vessel models)")
    what.add_argument("--compose", nargs=2, metavar=("A", "B"),
                      help="average the saved fold maps of two models (needs --save-dir)")
    parser.add_argument("--steps", type=int, default=300)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--only", nargs="*", help="held-out volumes to run (default: all)")
    parser.add_argument("--config", default="{}", help="JSON overrides of TrainConfig")
    parser.add_argument("--json", help="write the per-volume results here")
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument("--save-dir", help="keep each fold's probability maps here (outside "
                        "the repository), per model name")
    args = parser.parse_args()
    if args.compose and not args.save_dir:
        parser.error("--compose needs --save-dir (the folder the two runs saved their maps in)")
    torch.set_num_threads(args.threads)
    pairs = load_pairs(args.data)
    if args.compose:
        rows, settings, name = run_compose(args, pairs), {}, "+".join(args.compose)
        protocol = (f"leave-one-volume-out on the six VesselNN volumes: the average of the "
                    f"{' and '.join(args.compose)} fold maps (each trained on five volumes), "
                    "threshold chosen on the averaged maps of those five, scored on the sixth")
    else:
        rows, settings = run_arch(args, pairs)
        name = args.arch
        protocol = (f"leave-one-volume-out on the six VesselNN volumes: {name} trained on five "
                    "(napari_vessel.training.train), threshold chosen on those five, scored on "
                    f"the sixth (python benchmarks/zoo_loo.py --arch {name} --steps {args.steps} "
                    f"--threads {args.threads})")
    keys = [k for k in (*METRICS, "f1_post") if rows and k in rows[0]]
    print(f"\n{name}\n| held-out volume | F1 | AP | clDice | threshold |\n|---|---|---|---|---|")
    for r in rows:
        print(f"| {r['volume']} | {r['f1']:.3f} | {r['ap']:.3f} | {r['cldice']:.3f} | "
              f"{r['threshold']:.3f} |")
    mean = {k: float(np.mean([r[k] for r in rows])) for k in keys}
    print(f"| **mean** | **{mean['f1']:.3f}** | {mean['ap']:.3f} | {mean['cldice']:.3f} | |")
    if args.json:
        with open(args.json, "w") as fh:
            steps = None if args.compose else args.steps  # composed: the members' runs
            json.dump({"rows": rows, "mean": mean, "model": name, "steps": steps,
                       "seed": args.seed, "config": settings, "protocol": protocol}, fh, indent=1)


if __name__ == "__main__":
    main()
