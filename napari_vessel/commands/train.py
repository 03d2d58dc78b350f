"""``napari-vessel train``: train a supervised network on labelled volumes and save it with its card."""

from __future__ import annotations

import argparse
import json
import shlex
import sys
import time
from pathlib import Path

from ..errors import InputError

NAME = "train"
HELP = "train a supervised network (TV-Net) on labelled volumes; writes weights + model card"
DESCRIPTION = """\
Train a supervised vessel network on a folder with images/ and labels/ (matching TIFF names), e.g.
the public VesselNN volumes, with balanced BCE + 3D total variation + soft Dice (+ optional
soft-clDice), heavy augmentation and a fixed seed. The probability threshold is chosen on the
training volumes. The weights (.safetensors) and a JSON model card with the exact command are
written to --out; put them in the user models folder to use them in napari.

examples:
  napari-vessel train --data vesselnn --steps 800 --out models/
  napari-vessel train --data vesselnn --leave-out poon2015_BBB_Leakage --steps 600
  napari-vessel train --data vesselnn --loo --steps 600     (six runs; prints the table)
"""


def add_arguments(parser: argparse.ArgumentParser) -> None:
    """Options of the train command."""
    parser.add_argument("--model", default="tvnet", help="architecture (default: tvnet)")
    parser.add_argument("--data", required=True, help="folder with images/ and labels/")
    parser.add_argument("--out", default=".", help="output folder (default: current)")
    parser.add_argument("--name", help="model name (default: the architecture name)")
    parser.add_argument("--steps", type=int, default=800, help="optimiser steps (default 800)")
    parser.add_argument("--minutes", type=float, help="stop after this many minutes at most")
    parser.add_argument("--seed", type=int, default=0, help="random seed (default 0)")
    parser.add_argument("--phantoms", type=int, default=0,
                        help="add N synthetic 2PM phantoms to the training patches (default 0)")
    parser.add_argument("--cldice", type=float, default=None, help="soft-clDice weight")
    parser.add_argument("--widths", help="channels per level, e.g. 4,8,16,32")
    parser.add_argument("--norm", choices=("batch", "instance", "group"), help="normalisation")
    parser.add_argument("--threads", type=int, default=0, help="CPU threads (0: all)")
    parser.add_argument("--scores", help="JSON from benchmarks/loo_eval.py to put in the card")
    group = parser.add_mutually_exclusive_group()
    group.add_argument("--leave-out", action="append", default=[], metavar="NAME",
                       help="hold out this volume (repeatable) and report its scores")
    group.add_argument("--loo", action="store_true",
                       help="leave-one-volume-out: one run per volume, print the table")
    parser.add_argument("--quiet", action="store_true", help="no progress bar")


def _phantom_pairs(n: int, seed: int) -> list:
    from ..phantom import make_phantom
    from ..training.data import Pair, normalise

    pairs = []
    for i in range(n):
        ph = make_phantom((16, 192, 192), kind="2pm", seed=seed * 1000 + i)
        pairs.append(Pair(f"phantom{i}", normalise(ph.image), ph.labels > 0))
    return pairs


def _build(args: argparse.Namespace):
    from ..models.tvnet import TVNetConfig, build_tvnet

    if args.model != "tvnet":
        raise InputError(f"unknown trainable architecture {args.model!r}; choose 'tvnet'")
    config = TVNetConfig().to_dict()
    if args.widths:
        widths = [int(w) for w in args.widths.split(",")]
        if len(widths) != 4:
            raise InputError("--widths needs four comma-separated integers, e.g. 4,8,16,32")
        config["widths"] = widths
    if args.norm:
        config["norm"] = args.norm
    config.pop("extra", None)
    return build_tvnet(**config), config


def _score(model, pair, threshold: float) -> dict:
    from ..training.train import f1_score, predict_volume

    prob = predict_volume(model, pair.image)
    return {"f1": round(f1_score(prob > threshold, pair.labels), 4)}


def run(args: argparse.Namespace) -> int:
    """Train, then save ``NAME.safetensors`` + ``NAME.json`` in ``--out``."""
    import numpy as np
    import torch

    from ..models.weights import save_weights
    from ..progress import tqdm_progress
    from ..training.data import PREPROCESSING, load_pairs
    from ..training.train import TrainConfig, train

    if args.steps < 1:
        raise InputError("--steps must be at least 1")
    if args.threads:
        torch.set_num_threads(args.threads)
    command = "napari-vessel " + shlex.join(sys.argv[1:] if sys.argv[1:2] == ["train"]
                                            else ["train", *sys.argv[1:]])
    pairs = load_pairs(args.data)
    names = [p.name for p in pairs]
    unknown = [n for n in args.leave_out if n not in names]
    if unknown:
        raise InputError(f"--leave-out {unknown[0]!r} is not in {args.data}: {', '.join(names)}")
    extra = {} if args.cldice is None else {"cldice_weight": args.cldice}
    cfg = TrainConfig(steps=args.steps, seed=args.seed, minutes=args.minutes, **extra)
    phantoms = _phantom_pairs(args.phantoms, args.seed) if args.phantoms else []
    folds = [[n] for n in names] if args.loo else [list(args.leave_out)]
    out = Path(args.out)
    name = args.name or args.model
    scores: dict = {}
    start = time.monotonic()
    for fold in folds:
        torch.manual_seed(args.seed)
        model, config = _build(args)
        train_pairs = [p for p in pairs if p.name not in fold]
        label = f"train (without {', '.join(fold)})" if fold else "train"
        with tqdm_progress(label, disable=args.quiet) as progress:
            result = train(model, train_pairs, cfg, extra_pairs=phantoms, progress=progress,
                           checkpoint=out / f"{name}.checkpoint.safetensors")
        for held in (p for p in pairs if p.name in fold):
            scores[held.name] = _score(result.model, held, result.threshold)
            print(f"{held.name}: F1 {scores[held.name]['f1']:.3f} "
                  f"(threshold {result.threshold:.3f} from the training volumes)")
    if scores:
        scores["mean_f1"] = round(float(np.mean([s["f1"] for s in scores.values()])), 4)
        print(f"mean held-out F1: {scores['mean_f1']:.3f}")
    if args.scores:
        scores = {"leave_one_out": json.loads(Path(args.scores).read_text()), **scores}
    if args.loo:
        return 0
    card = {
        "name": name, "architecture": args.model, "config": config, "kind": "supervised",
        "description": f"TV-Net {config['widths']} trained on {len(train_pairs)} labelled volumes",
        "trained_on": [p.name for p in train_pairs] + [p.name for p in phantoms],
        "training": {"command": command, "seed": args.seed, "steps": result.steps,
                     "minutes": round(result.minutes, 2), "config": _plain(cfg),
                     "loss": "balanced BCE + tv*TV(Sobel) + dice*softDice + cldice*softclDice; "
                             "AdamW weight decay",
                     "final_loss": round(float(np.mean(result.losses[-50:])), 4),
                     "train_f1": {k: round(v, 4) for k, v in result.train_f1.items()}},
        "threshold": result.threshold, "scores": scores, "preprocessing": PREPROCESSING,
        "patch_size_zyx": [32, 512, 512], "parent": None,
    }
    path = save_weights(result.model, out / name, card)
    (out / f"{name}.checkpoint.safetensors").unlink(missing_ok=True)
    (out / f"{name}.checkpoint.json").unlink(missing_ok=True)
    print(f"wrote {path} and its card ({(time.monotonic() - start) / 60:.1f} min); "
          f"threshold {result.threshold:.3f}")
    return 0


def _plain(cfg) -> dict:
    from dataclasses import asdict

    data = asdict(cfg)
    data["patch_size"] = list(cfg.patch_size)
    data.pop("extra", None)
    return data
