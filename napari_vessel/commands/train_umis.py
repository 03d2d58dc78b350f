"""``napari-vessel train --model umis``: UMIS learns without labels (used by the train command).

It takes the train command's options (:func:`napari_vessel.commands.train.add_arguments`),
``--device`` included: UMIS trains and scores the held-out volumes on that device and saves its
weights from the CPU. The label folder is read only to *score* the result (held-out volumes
with ``--leave-out``); the network never sees a label and its threshold is the unsupervised 0.5.
"""

from __future__ import annotations

import argparse
import json
import shlex
import time
from pathlib import Path
from typing import Any

from napari_vessel.errors import InputError


def _scores(model: Any, pair: Any, threshold: float, threads: int | None,
            device: Any = "cpu") -> dict:
    from napari_vessel.evaluation.metrics import average_precision, cldice
    from napari_vessel.evaluation.metrics import dice as f1_score
    from napari_vessel.training.train_unsupervised import predict_probability

    prob = predict_probability(model, pair.image, threads=threads or None, device=device)
    pred = prob > threshold
    return {"f1": round(f1_score(pred, pair.labels), 4),
            "ap": round(average_precision(prob, pair.labels), 4),
            "cldice": round(cldice(pred, pair.labels), 4)}


def _loo_scores(path: str | None) -> dict:
    """A ``benchmarks/umis_loo.py --json`` file as the card's leave-one-out scores."""
    if not path:
        return {}
    try:
        loo = json.loads(Path(path).read_text(encoding="utf-8"))
    except (OSError, ValueError) as err:
        raise InputError(f"--scores {path} is not a readable JSON file: {err}") from err
    rows = loo.get("rows", []) if isinstance(loo, dict) else []
    out: dict = {"leave_one_volume_out": {
        r["volume"]: {k: round(float(r[k]), 4) for k in ("f1", "ap", "cldice") if k in r}
        for r in rows}}
    for key, value in (loo.get("mean") or {}).items():
        out[f"mean_{key}"] = round(float(value), 4)
    out["protocol"] = ("leave-one-volume-out on the six VesselNN volumes: trained without labels "
                       "on five, scored on the sixth at the threshold 0.5 "
                       f"(python benchmarks/umis_loo.py --steps {loo.get('steps')})")
    return out


def _command(args: argparse.Namespace) -> str:
    """The command line that repeats this run (from the parsed options, not ``sys.argv``)."""
    words = ["napari-vessel", "train", "--model", args.model, "--data", str(args.data),
             "--steps", str(args.steps), "--seed", str(args.seed)]
    for name in args.leave_out:
        words += ["--leave-out", name]
    for option in ("minutes", "batch_size", "lr", "threads", "scores", "name"):
        value = getattr(args, option, None)
        if value:
            words += [f"--{option.replace('_', '-')}", str(value)]
    if getattr(args, "patch_size", None):
        words += ["--patch-size", *map(str, args.patch_size)]
    if getattr(args, "device", "cpu") != "cpu":  # the default is left out, as before
        words += ["--device", str(args.device)]
    return shlex.join(words + ["--out", str(args.out)])


def run_unsupervised(args: argparse.Namespace, spec: Any) -> int:
    """Train UMIS on the folder's images (labels unused), save weights + card in ``--out``."""
    import numpy as np
    import torch

    from napari_vessel.devices import pick_device
    from napari_vessel.models.weights import save_weights
    from napari_vessel.progress import tqdm_progress
    from napari_vessel.training.data import load_pairs
    from napari_vessel.training.train_unsupervised import (
        UnsupervisedConfig,
        train_unsupervised,
        umis_preprocessing,
    )

    if args.loo:
        raise InputError("for UMIS run the leave-one-out as benchmarks/umis_loo.py (it scores "
                         "each fold at the unsupervised threshold); --scores puts it in the card")
    if args.widths or args.norm or args.cldice is not None or args.phantoms:
        raise InputError("--widths, --norm, --cldice and --phantoms are supervised options; UMIS "
                         "trains with its registered configuration and its own loss")
    device = pick_device(getattr(args, "device", "cpu"))  # a bad --device fails before any work
    if args.threads:
        torch.set_num_threads(args.threads)
    pairs = load_pairs(args.data)
    names = [p.name for p in pairs]
    unknown = [n for n in args.leave_out if n not in names]
    if unknown:
        raise InputError(f"--leave-out {unknown[0]!r} is not in {args.data}: {', '.join(names)}")
    overrides: dict = {}
    if getattr(args, "patch_size", None):
        overrides["patch_size"] = tuple(args.patch_size)
    for key in ("batch_size", "lr"):
        if getattr(args, key, None) is not None:
            overrides[key] = getattr(args, key)
    cfg = UnsupervisedConfig(steps=args.steps, seed=args.seed, minutes=args.minutes, **overrides)
    command = _command(args)
    torch.manual_seed(args.seed)
    config = dict(spec.config)
    model = spec.builder(**config)
    training = [p for p in pairs if p.name not in args.leave_out]
    out = Path(args.out)
    name = args.name or spec.name
    start = time.monotonic()
    with tqdm_progress("train UMIS (no labels)", disable=args.quiet) as progress:
        result = train_unsupervised(model, [p.image for p in training], cfg, progress=progress,
                                    checkpoint=str(out / f"{name}.checkpoint.safetensors"),
                                    device=device)
    threshold = 0.5
    scores: dict = {}
    for held in (p for p in pairs if p.name in args.leave_out):
        scores[held.name] = _scores(result.model, held, threshold, args.threads, device)
        print(f"{held.name}: F1 {scores[held.name]['f1']:.3f} (threshold 0.5, no labels used)")
    if scores:
        scores["mean_f1"] = round(float(np.mean([s["f1"] for s in scores.values()])), 4)
    scores.update(_loo_scores(args.scores))
    card = {
        "name": name, "architecture": spec.architecture, "config": config,
        "kind": "unsupervised", "trained_on": [p.name for p in training],
        "training": {"command": command, "seed": args.seed, "steps": result.steps,
                     "minutes": round(result.minutes, 2), "config": cfg.to_dict(),
                     "loss": "UMIS compound loss, paper 000 eq. 17-26 (no labels)",
                     "final_terms": {k: round(v, 4) for k, v in result.terms.items()}},
        "threshold": threshold, "scores": scores, "preprocessing": umis_preprocessing(),
    }
    path = save_weights(result.model.to("cpu"), out / name, card)
    for suffix in (".safetensors", ".json"):
        (out / f"{name}.checkpoint{suffix}").unlink(missing_ok=True)
    print(f"wrote {path} and its card ({(time.monotonic() - start) / 60:.1f} min)")
    return 0
