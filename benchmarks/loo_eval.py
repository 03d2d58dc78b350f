"""Leave-one-volume-out evaluation of the supervised recipe on the six VesselNN volumes.

For each volume: train on the other five (same settings as the shipped model), choose the threshold
on those five, then score the held-out volume (F1 at that threshold, average precision, clDice).
With ``--threshold-method otsu`` the held-out volume is instead thresholded at a level computed
from its own probability map (no labels); the F1 at the fixed level is still reported.
``--save-dir`` keeps every fold's weights (and maps) so that ``--reuse`` can score other
thresholds or test-time flips (``--tta``) without training again; the fixed level then comes from
the saved training-volume maps, as the training run chose it.
With ``--level-rule`` every fold also fits the model card's level rule
(:func:`napari_vessel.training.calibrate.fit_level_rule`) on the same training-volume maps and
labels, and the held-out volume is thresholded at the rule's level for its own map
(``Postprocessing(threshold=fixed, rule=rule).resolve(prob)``); ``f1_fixed`` keeps the F1 at
the fixed level.
Prints a Markdown table and writes it as JSON with ``--json``.

    python benchmarks/loo_eval.py --data ../shared/data/vesselnn --steps 600 --json loo.json
"""

from __future__ import annotations

import argparse
import json
import time
from pathlib import Path

import numpy as np
import torch
from safetensors.torch import load_file

from napari_vessel.evaluation.metrics import average_precision, cldice
from napari_vessel.evaluation.metrics import dice as f1_score
from napari_vessel.models.tvnet import build_tvnet, config_for_widths
from napari_vessel.postprocess.labels import Postprocessing
from napari_vessel.training.calibrate import fit_level_rule
from napari_vessel.training.data import load_pairs, synthetic_pairs, training_pipeline
from napari_vessel.training.loo import leave_one_out
from napari_vessel.training.train import (
    TrainConfig,
    _central,
    choose_threshold,
    predict_volume,
    train,
)

#: Label-free threshold methods (``skimage.filters.threshold_*``) for ``--threshold-method``.
THRESHOLD_METHODS = ("otsu", "li", "triangle", "yen", "isodata")


def auto_threshold(prob: np.ndarray, method: str = "otsu") -> float:
    """A level computed from the probability map itself, without labels (use ``prob > level``)."""
    from skimage import filters

    if float(prob.min()) == float(prob.max()):
        return float(prob.min())
    return float(getattr(filters, f"threshold_{method}")(prob.astype(np.float32)))


def save_fold(folder: Path, held: str, model: torch.nn.Module, probs: dict) -> None:
    """Weights of one fold and the probability maps it gives on every volume (float16)."""
    from safetensors.torch import save_file

    folder.mkdir(parents=True, exist_ok=True)
    state = {k: v.detach().contiguous().clone() for k, v in model.state_dict().items()}
    save_file(state, str(folder / f"{held}.safetensors"))
    np.savez_compressed(folder / f"{held}.probs.npz",
                        **{k: v.astype(np.float16) for k, v in probs.items()})


def predict_flips(model: torch.nn.Module, image: np.ndarray) -> np.ndarray:
    """Mean probability over the four in-plane flips (test-time augmentation)."""
    total = np.zeros(image.shape, np.float32)
    for axes in ((), (1,), (2,), (1, 2)):
        flipped = np.ascontiguousarray(np.flip(image, axes)) if axes else image
        prob = predict_volume(model, flipped)
        total += np.flip(prob, axes) if axes else prob
    return total / 4


def load_fold(folder: Path, held: str, model: torch.nn.Module) -> torch.nn.Module:
    """Weights saved by :func:`save_fold`."""
    from safetensors.torch import load_file

    model.load_state_dict(load_file(str(folder / f"{held}.safetensors")))
    return model.eval()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--data", default="../shared/data/vesselnn")
    parser.add_argument("--steps", type=int, default=600)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--only", nargs="*", help="held-out volumes to run (default: all)")
    parser.add_argument("--config", default="{}", help="JSON overrides of TrainConfig")
    parser.add_argument("--model", default="{}", help="JSON overrides of TVNetConfig")
    parser.add_argument("--widths", help="TV-Net widths, four or five comma-separated "
                        "(models.tvnet.config_for_widths); overrides --model")
    parser.add_argument("--init", help="start every fold from these weights (e.g. a synthetic "
                        "pretraining by 'napari-vessel train --synthetic N')")
    parser.add_argument("--synthetic", type=int, default=0,
                        help="mix N synthetic volumes into every fold's training patches")
    parser.add_argument("--json", help="write the per-volume results here")
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--save-dir", help="keep each fold's weights and probability maps here "
                        "(outside the repository), for post-hoc thresholds and test-time flips")
    parser.add_argument("--reuse", help="load each fold's weights from this --save-dir folder "
                        "instead of training")
    parser.add_argument("--threshold-method", choices=THRESHOLD_METHODS,
                        help="threshold each held-out map by this label-free method of its own "
                        "histogram (default: the fixed level chosen on the training volumes)")
    parser.add_argument("--level-rule", action="store_true",
                        help="fit the card's level rule on each fold's training volumes and "
                        "threshold the held-out volume at the rule's level for its map")
    parser.add_argument("--tta", action="store_true", help="average the four in-plane flips")
    parser.add_argument("--depth-correct", action="store_true",
                        help="add the depth-attenuation correction to the preprocessing")
    args = parser.parse_args()
    if args.level_rule and args.threshold_method:
        parser.error("--level-rule and --threshold-method choose the level in two ways; give one")
    torch.set_num_threads(args.threads)
    pairs = load_pairs(args.data, pipeline=training_pipeline(args.depth_correct))
    overrides = json.loads(args.config)
    if "patch_size" in overrides:
        overrides["patch_size"] = tuple(overrides["patch_size"])
    cfg = TrainConfig(steps=args.steps, seed=args.seed, **overrides)
    predict = predict_flips if args.tta else predict_volume
    model_config = json.loads(args.model)
    if args.widths:
        model_config = config_for_widths([int(w) for w in args.widths.split(",")]).to_dict()
    init = load_file(args.init) if args.init else None
    extra = (synthetic_pairs(args.synthetic, seed=args.seed,
                             pipeline=training_pipeline(args.depth_correct))
             if args.synthetic else [])
    rows = []
    maps: dict = {}  # (fold weights file, volume) -> probability map: folds that share weights
    # (one synthetic pretraining for every fold) predict each volume once

    def fold_predict(model, pair, weights_key):
        key = (weights_key, pair.name)
        if weights_key is None or key not in maps:
            maps[key] = predict(model, pair.image)
        return maps[key]

    for held, training in leave_one_out(pairs, only=args.only or None):
        start = time.monotonic()
        torch.manual_seed(args.seed)
        model = build_tvnet(**model_config)
        if init is not None:
            model.load_state_dict(init)
        weights_key = None
        if args.reuse:
            weights_key = str((Path(args.reuse) / f"{held.name}.safetensors").resolve())
            model = load_fold(Path(args.reuse), held.name, model)
            saved = Path(args.reuse) / f"{held.name}.probs.npz"
            if saved.exists():  # the level of the training run (no flips), as a card stores it
                with np.load(saved) as saved_maps:  # not `maps`: that is fold_predict's cache
                    train_probs = [saved_maps[p.name].astype(np.float32) for p in training]
            else:
                train_probs = [fold_predict(model, p, weights_key) for p in training]
            train_labels = [p.labels for p in training]
            fixed, scores = choose_threshold(train_probs, train_labels)
            train_f1 = float(np.mean(scores))
        else:
            result = train(model, training, cfg, extra_pairs=extra)
            model, fixed = result.model, result.threshold
            train_f1 = float(np.mean(list(result.train_f1.values())))
            # the maps (of the central crop, with cfg.threshold_crop) the threshold was chosen on
            train_probs = [result.probs[p.name] for p in training]
            train_labels = [_central(p, cfg.threshold_crop)[1] for p in training]
        rule = None
        if args.level_rule:
            rule, rule_train_f1, _ = fit_level_rule(train_probs, train_labels, fixed=fixed)
        prob = fold_predict(model, held, weights_key)
        if args.save_dir:
            probs = {p.name: (prob if p is held else predict(model, p.image)) for p in pairs}
            save_fold(Path(args.save_dir), held.name, model, probs)
        fraction = None
        if rule is not None:
            recipe = Postprocessing(threshold=fixed, rule=rule).resolve(prob)
            level = recipe.threshold
            fraction = recipe.notes["level_from"]["fraction"]
        elif args.threshold_method is not None:
            level = auto_threshold(prob, args.threshold_method)
        else:
            level = fixed
        pred = prob > level
        tp = np.count_nonzero(pred & held.labels)
        row = {"volume": held.name, "f1": f1_score(pred, held.labels),
               "precision": tp / max(1, np.count_nonzero(pred)),
               "sensitivity": tp / max(1, np.count_nonzero(held.labels)),
               "ap": average_precision(prob, held.labels), "cldice": cldice(pred, held.labels),
               "threshold": level, "f1_fixed": f1_score(prob > fixed, held.labels),
               "fixed_threshold": fixed, "train_f1": train_f1,
               "minutes": (time.monotonic() - start) / 60}
        if rule is not None:
            row.update(level=level, fraction=fraction, rule=rule.to_dict(),
                       train_f1_rule=rule_train_f1)
        rows.append(row)
        print(json.dumps(row), flush=True)
    # with --level-rule: also the F1 at the fold's fixed level and the vessel fraction read
    extra_head = " F1 fixed | fixed | fraction |" if args.level_rule else ""
    print(f"\n| held-out volume | F1 | AP | clDice | threshold |{extra_head}\n|---|---|---|---|---|"
          + "---|" * extra_head.count("|"))
    for r in rows:
        extra_cells = (f" {r['f1_fixed']:.3f} | {r['fixed_threshold']:.3f} | {r['fraction']:.3f} |"
                       if args.level_rule else "")
        print(f"| {r['volume']} | {r['f1']:.3f} | {r['ap']:.3f} | {r['cldice']:.3f} | "
              f"{r['threshold']:.3f} |{extra_cells}")
    mean = {k: float(np.mean([r[k] for r in rows]))
            for k in ("f1", "ap", "cldice", "f1_fixed", "precision", "sensitivity")}
    extra_mean = f" {mean['f1_fixed']:.3f} | | |" if args.level_rule else ""
    print(f"| **mean** | **{mean['f1']:.3f}** | {mean['ap']:.3f} | {mean['cldice']:.3f} | |"
          f"{extra_mean}")
    if args.json:
        with open(args.json, "w") as fh:
            json.dump({"rows": rows, "mean": mean, "steps": args.steps, "config": overrides,
                       "model": model_config, "tta": args.tta, "init": args.init,
                       "synthetic": args.synthetic,
                       "threshold_method": args.threshold_method,
                       "level_rule": args.level_rule,
                       "depth_correct": args.depth_correct}, fh, indent=1)


if __name__ == "__main__":
    main()
