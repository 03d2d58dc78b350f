"""Leave-one-out fold weights of ``loo_eval.py`` scored on the "other microscope" phantoms.

A recipe can gain on the six volumes it is tuned on and lose on stacks from elsewhere. This runs
the fold weights kept with ``loo_eval.py --save-dir`` on the two shifted phantoms of the
fine-tuning benchmark (``bench_finetune.PHANTOMS``, never seen in training), each fold with its
own threshold, and prints the mean F1 and AP over the folds.

usage::

    python benchmarks/loo_phantoms.py FOLDS_DIR LOO.json [LOO2.json] [--depth-correct]
    python benchmarks/loo_phantoms.py --single napari_vessel/models/weights/tvnet.safetensors NEW.safetensors
"""

from __future__ import annotations

import argparse
import json
import sys

import numpy as np
from bench_finetune import PHANTOMS
from loo_table import thresholds


def other_microscopes(labels: str = "exact") -> list[tuple[str, np.ndarray, np.ndarray]]:
    """(label, raw image, labels) of stacks from microscopes no model here trained on.

    The two shifted phantoms of the fine-tuning benchmark, and three modalities added for the
    synthetic pretraining (not drawn by its generator): a confocal stack with strong background,
    a light-sheet-like stack with illumination stripes, and a two-photon stack at another voxel
    size with a strong gamma. ``labels="visible"`` scores against what a person would paint
    (``napari_vessel.data.phantom.visible_labels``) instead of the exact tubes; the images are the same.
    """
    from scipy import ndimage as ndi

    from napari_vessel.data.phantom import make_phantom, shifted, visible_labels

    if labels not in ("exact", "visible"):
        raise ValueError(f"labels={labels!r}: choose exact or visible")

    def truth(phantom, gain=1.0):
        if labels == "exact":
            return phantom.labels > 0
        p = phantom.params
        full = make_phantom(**{**p, "keep_signals": True})
        return visible_labels(full.labels, full.vessel_signal * gain, full.clean_signal * gain,
                              full.spacing_zyx, p["psf_um"], p["photons"], p["read_noise"]) > 0

    cases = []
    for label, geometry, shift in PHANTOMS:
        phantom = shifted(make_phantom((16, 256, 256), seed=geometry), **shift)
        cases.append((label, phantom.image, truth(phantom)))
    confocal = make_phantom((16, 256, 256), kind="confocal", seed=31, background=0.4, haze=0.5,
                            photons=20.0)
    cases.append(("C: confocal, strong background", confocal.image, truth(confocal)))
    sheet = make_phantom((16, 256, 256), seed=41, dtype="float32", depth_attenuation=0.2)
    rows = np.random.default_rng(7).random(256)
    stripes = 1.0 - 0.7 * ndi.gaussian_filter1d(rows, 1.0) / max(float(rows.max()), 1e-6)
    stripes = stripes[None, :, None].astype(np.float32)
    cases.append(("D: light-sheet stripes", sheet.image * stripes, truth(sheet, stripes)))
    fine = shifted(make_phantom((24, 256, 256), seed=53, spacing_zyx=(1.0, 0.5, 0.5)),
                   gamma=2.2)
    cases.append(("E: 0.5 µm pixels, gamma 2.2", fine.image, truth(fine)))
    return cases


def _single(paths: list[str], labels: str = "exact") -> int:
    """F1 / AP of whole trained models (their card's config, preprocessing and post-processing).

    Each model's labels come from its card's whole ``postprocessing`` (with its level rule, when
    it has one, resolved for each map) or else a plain threshold at the card's ``threshold``;
    each cell ends with the level used.
    """
    from pathlib import Path

    from safetensors.torch import load_file

    from napari_vessel.evaluation.metrics import average_precision
    from napari_vessel.models.card import ModelCard
    from napari_vessel.models.tvnet import build_tvnet
    from napari_vessel.postprocess.labels import Postprocessing
    from napari_vessel.preprocess import Pipeline
    from napari_vessel.training.data import normalise
    from napari_vessel.training.train import f1_score, predict_volume

    cases = other_microscopes(labels)
    print("| case | " + " | ".join(Path(p).stem for p in paths) + " |")
    print("|---|" + "---|" * len(paths))
    models = []
    for path in paths:
        card = ModelCard.read(Path(path).with_suffix(".json"))
        if card.config is None or card.preprocessing is None or (
                card.threshold is None and not card.postprocessing):
            raise SystemExit(f"{path}: its card needs config, preprocessing and a threshold or "
                             "postprocessing")
        if card.postprocessing:  # the card's whole recipe, its level rule included
            recipe = Postprocessing.from_dict({k: v for k, v in dict(card.postprocessing).items()
                                               if k != "function"})
        else:
            recipe = Postprocessing(threshold=card.threshold)
        model = build_tvnet(**card.config)
        model.load_state_dict(load_file(path))
        models.append((model.eval(), card, recipe))
    for label, raw, ref in cases:
        cells = []
        for model, card, recipe in models:
            pipeline = Pipeline.from_json(json.dumps(dict(card.preprocessing)))
            prob = predict_volume(model, normalise(raw, pipeline))
            resolved = recipe.resolve(prob)
            pred = resolved.apply(prob) > 0
            cells.append(f"{f1_score(pred, ref):.3f} / "
                         f"{average_precision(prob, ref):.3f} @{resolved.threshold:.3f}")
        print(f"| {label} | " + " | ".join(cells) + " |", flush=True)
    return 0


def main(argv: list[str] | None = None) -> int:
    import torch
    from safetensors.torch import load_file

    from napari_vessel.evaluation.metrics import average_precision
    from napari_vessel.models.tvnet import build_tvnet
    from napari_vessel.training.data import normalise, training_pipeline
    from napari_vessel.training.train import f1_score, predict_volume

    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("folds", nargs="?", help="the --save-dir folder of a loo_eval.py run")
    parser.add_argument("loo_json", nargs="*", help="its --json file(s): each fold's threshold")
    parser.add_argument("--single", nargs="+", metavar="WEIGHTS",
                        help="instead: score these trained TV-Net models (.safetensors with their "
                        "card beside), each with its card's post-processing (level rule "
                        "included) or threshold")
    parser.add_argument("--depth-correct", action="store_true",
                        help="the run used --depth-correct")
    parser.add_argument("--model", default="{}", help="its --model JSON (TV-Net settings)")
    parser.add_argument("--only", nargs="*", default=None, help="these folds (held-out names)")
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--labels", choices=("exact", "visible"), default="exact",
                        help="score against the exact tubes (default) or what a person would "
                        "paint (each vessel's blurred extent where it beats the noise)")
    args = parser.parse_args(argv)
    torch.set_num_threads(args.threads)
    if args.single:
        return _single(args.single, args.labels)
    levels = thresholds(args.loo_json)
    if not isinstance(levels, dict):
        parser.error("loo_json must be loo_eval.py JSON files (each fold has its own level)")
    folds = [name for name in levels if args.only is None or name in args.only]
    pipeline = training_pipeline(depth_correct=args.depth_correct)
    for label, raw, ref in other_microscopes(args.labels):
        image = normalise(raw, pipeline)
        f1s, aps = [], []
        for held in folds:
            model = build_tvnet(**json.loads(args.model))
            model.load_state_dict(load_file(f"{args.folds}/{held}.safetensors"))
            prob = predict_volume(model.eval(), image)
            f1s.append(f1_score(prob > levels[held], ref))
            aps.append(average_precision(prob, ref))
        print(f"{label}: F1 {np.mean(f1s):.3f}, AP {np.mean(aps):.3f} "
              f"(mean over {len(folds)} folds)", flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
