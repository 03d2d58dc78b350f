"""``napari-vessel train``: train a supervised network on labelled volumes and save it with its card."""

from __future__ import annotations

import argparse
import dataclasses
import json
import shlex
import sys
import time
from pathlib import Path
from typing import TYPE_CHECKING, Any

from napari_vessel.errors import InputError

if TYPE_CHECKING:
    from napari_vessel.models.card import ModelCard

NAME = "train"
HELP = "train a supervised network of the model zoo on labelled volumes; writes weights + card"
DESCRIPTION = """\
Train a supervised vessel network from 'napari-vessel models' (tvnet, vcnet, dbac, ddmac,
cascade-ensemble, deepvess, vesselnn and their -full variants) on a folder with images/ and
labels/ (matching TIFF names), e.g. the public VesselNN volumes, with a fixed seed and heavy
augmentation. TV-Net, DeepVess and VesselNN use balanced BCE + 3D total variation + soft Dice;
VC-Net and the cascades their papers' losses; 2D models train on the slices of 3D patches. The
probability threshold is chosen on the training volumes. The weights (.safetensors) and a JSON
model card with the exact command are written to --out; put them in the user models folder (or,
named like the model, in napari_vessel/models/weights/) to use them.

The cascade ensemble can also be composed from a trained DBAC and DDMAC (--members), as the paper
trains the two cascades separately; only its threshold is then chosen on --data.

examples:
  napari-vessel train --data vesselnn --steps 800 --out models/
  napari-vessel train --model vcnet --data vesselnn --steps 300 --threads 1 --out models/
  napari-vessel train --model cascade-ensemble --members models/dbac models/ddmac --data vesselnn
  napari-vessel train --data vesselnn --leave-out poon2015_BBB_Leakage --steps 600
  napari-vessel train --data vesselnn --loo --steps 600     (six runs; prints the table)
"""


def add_arguments(parser: argparse.ArgumentParser) -> None:
    """Options of the train command."""
    parser.add_argument("--model", default="tvnet",
                        help="a trainable model of 'napari-vessel models' (default: tvnet)")
    parser.add_argument("--data", help="folder with images/ and labels/ (optional with "
                        "--synthetic: then the model pretrains on synthetic volumes alone)")
    parser.add_argument("--out", default=".", help="output folder (default: current)")
    parser.add_argument("--name", help="model name (default: the model's name)")
    parser.add_argument("--steps", type=int, default=800, help="optimiser steps (default 800)")
    parser.add_argument("--minutes", type=float, help="stop after this many minutes at most")
    parser.add_argument("--seed", type=int, default=0, help="random seed (default 0)")
    parser.add_argument("--phantoms", type=int, default=0,
                        help="add N synthetic 2PM phantoms to the training patches (default 0)")
    parser.add_argument("--synthetic", type=int, default=0, metavar="N",
                        help="add N domain-randomised synthetic volumes with exact labels to the "
                        "training patches (napari_vessel.data.synthetic; default 0)")
    parser.add_argument("--generator", type=int, choices=(1, 2), nargs="+", default=[1],
                        help="with --synthetic: the synthetic generator (1: the one of the shipped "
                        "pretraining; 2: dim branches, grainy interiors, patchy leakage; see "
                        "docs/training.md); several: the N volumes are shared among them")
    parser.add_argument("--labels", choices=("exact", "visible"), default="exact",
                        help="with --synthetic: the synthetic volumes' labels (exact: every voxel "
                        "inside a tube, however faint; visible: what a person would paint, each "
                        "vessel's blurred extent where it stands above the noise)")
    parser.add_argument("--init", metavar="WEIGHTS", nargs="+",
                        help="start from these weights (.safetensors of the same network, e.g. "
                        "a synthetic pretraining) instead of a random initialisation; several "
                        "files: their average (a model soup of runs fine-tuned from one "
                        "pretraining)")
    parser.add_argument("--calibrate-only", action="store_true",
                        help="with --init and --data: no training, only choose the threshold of "
                        "the --init weights on the --data volumes (e.g. a synthetic pretraining "
                        "used as it is on real stacks)")
    parser.add_argument("--resume", action="store_true",
                        help="continue from the checkpoint a killed run left in --out")
    parser.add_argument("--device", default="cpu",
                        help="cpu (default, reproducible), cuda, mps or auto")
    parser.add_argument("--cldice", type=float, default=None, help="soft-clDice weight")
    parser.add_argument("--patch-size", type=int, nargs=3, metavar=("Z", "Y", "X"),
                        help="training patch (default: 4 128 128 for 2D models, else 8 64 64)")
    parser.add_argument("--batch-size", type=int, help="patches per step (default 4)")
    parser.add_argument("--lr", type=float, help="peak learning rate (default 3e-3)")
    parser.add_argument("--threshold-crop", type=int, metavar="PIXELS",
                        help="choose the threshold on the central PIXELS x PIXELS of each volume "
                             "(faster for slow dense networks; default: whole volumes)")
    parser.add_argument("--depth-correct", action="store_true",
                        help="add the depth-attenuation correction to the preprocessing (saved "
                        "in the card, so segmenting applies it too)")
    parser.add_argument("--plain-bce", action="store_true",
                        help="plain instead of class-balanced cross-entropy (TV-Net recipe)")
    parser.add_argument("--widths", help="TV-Net only: channels per level, four (e.g. 4,8,16,32, "
                        "the paper's layout) or five (e.g. 4,12,24,48,64: 16x in-plane field of view)")
    parser.add_argument("--norm", choices=("batch", "instance", "group"),
                        help="TV-Net only: normalisation")
    parser.add_argument("--members", nargs=2, metavar=("DBAC", "DDMAC"),
                        help="cascade-ensemble only: compose it from these trained DBAC and DDMAC "
                             "weights (no training; the threshold is chosen on --data)")
    parser.add_argument("--level-rule", action="store_true",
                        help="also fit a level rule on the labelled volumes (at least 4): the "
                        "threshold then follows each volume's predicted vessel fraction "
                        "(docs/segmentation.md); TV-Net-style single-output networks only")
    parser.add_argument("--threads", type=int, default=0, help="CPU threads (0: all)")
    parser.add_argument("--scores", help="JSON from benchmarks/loo_eval.py or zoo_loo.py to put "
                        "in the card")
    group = parser.add_mutually_exclusive_group()
    group.add_argument("--leave-out", action="append", default=[], metavar="NAME",
                       help="hold out this volume (repeatable) and report its scores")
    group.add_argument("--loo", action="store_true",
                       help="leave-one-volume-out: one run per volume, print the table")
    parser.add_argument("--overwrite", action="store_true",
                        help="replace a model of the same --name in --out (refused otherwise)")
    parser.add_argument("--quiet", action="store_true", help="no progress bar")


def _phantom_pairs(n: int, seed: int, pipeline=None) -> list:
    from napari_vessel.data.phantom import make_phantom
    from napari_vessel.training.data import Pair, normalise

    pairs = []
    for i in range(n):
        ph = make_phantom((16, 192, 192), kind="2pm", seed=seed * 1000 + i)
        pairs.append(Pair(f"phantom{i}", normalise(ph.image, pipeline), ph.labels > 0))
    return pairs


def _build(args: argparse.Namespace, spec):
    """(network, builder config) for the spec; TV-Net takes --widths and --norm."""
    config = dict(spec.config)
    if spec.architecture != "tvnet":  # --widths / --norm were refused in run()
        return spec.builder(**config), config
    if args.widths or args.norm:
        from napari_vessel.models.tvnet import config_for_widths

        try:
            widths = [int(w) for w in (args.widths or "").split(",")] if args.widths else \
                config["widths"]
            typed = config_for_widths(widths, args.norm or config.get("norm"))
        except ValueError as err:
            raise InputError(f"--widths {args.widths}: {err}") from err
        config = typed.to_dict()
    config.pop("extra", None)
    return spec.builder(**config), config


def _score(model, pair, threshold: float, spec, rule=None) -> dict:
    from napari_vessel.evaluation.metrics import average_precision, cldice
    from napari_vessel.postprocess.labels import Postprocessing
    from napari_vessel.training.train import f1_score, predict_volume

    prob = predict_volume(model, pair.image, spec=spec)
    recipe = Postprocessing(threshold=threshold, rule=rule).resolve(prob)
    pred = prob > recipe.threshold
    out = {"f1": round(f1_score(pred, pair.labels), 4),
           "ap": round(average_precision(prob, pair.labels), 4),
           "cldice": round(cldice(pred, pair.labels), 4)}
    if rule is not None:
        out.update(level=round(recipe.threshold, 4),
                   f1_fixed=round(f1_score(prob > threshold, pair.labels), 4))
    return out


def _card_scores(scores: dict, path: str | None) -> dict:
    """The card's scores: held-out ones of this run, and a LOO JSON under ``leave_one_out``."""
    if not path:
        return scores
    try:
        loo = json.loads(Path(path).read_text(encoding="utf-8"))
    except (OSError, ValueError) as err:
        raise InputError(f"--scores {path} is not a readable JSON file: {err}") from err
    out = {"leave_one_out": loo, **scores}
    means = loo.get("mean") if isinstance(loo, dict) else None
    for key, value in (means or {}).items():  # the headline numbers, as 'models' shows them
        if isinstance(value, int | float):
            out[f"mean_{key}"] = round(float(value), 4)
    if isinstance(loo, dict) and loo.get("protocol"):
        out["protocol"] = loo["protocol"]
    return out


def run(args: argparse.Namespace) -> int:
    """Train (or compose), then save ``NAME.safetensors`` + ``NAME.json`` in ``--out``."""
    import numpy as np
    import torch

    from napari_vessel.models import registry
    from napari_vessel.models.weights import save_weights
    from napari_vessel.training.data import load_pairs, training_pipeline
    from napari_vessel.training.zoo_train import zoo_training_spec

    unsupervised = next((s for s in registry.list_models() if s.name == args.model
                         and s.kind == "unsupervised" and s.source == "builtin"), None)
    if unsupervised is not None:
        from napari_vessel.commands.train_umis import (
            run_unsupervised,  # learns without labels: own loop and card
        )

        if args.steps < 1:
            raise InputError("--steps must be at least 1")
        if args.depth_correct or args.plain_bce:
            raise InputError(f"--depth-correct and --plain-bce are supervised options; "
                             f"{args.model!r} trains without labels with its own preprocessing")
        _check_output(args, unsupervised)
        return run_unsupervised(args, unsupervised)
    spec = zoo_training_spec(args.model)
    _check_args(args, spec)
    out, name = _check_output(args, spec)
    if args.threads:
        torch.set_num_threads(args.threads)
    command = "napari-vessel " + shlex.join(sys.argv[1:] if sys.argv[1:2] == ["train"]
                                            else ["train", *sys.argv[1:]])
    pipeline = training_pipeline(depth_correct=args.depth_correct)
    init = _init_weights(args.init) if args.init else None
    pairs = load_pairs(args.data, pipeline=pipeline) if args.data else []
    folds = _folds(args, pairs)
    if args.level_rule:
        from napari_vessel.training.calibrate import MIN_RULE_VOLUMES

        fewest = min(len(training) for _, training in folds)
        if fewest < MIN_RULE_VOLUMES:
            raise InputError(f"--level-rule needs at least {MIN_RULE_VOLUMES} labelled training "
                             f"volumes per run (two numbers are fitted); this run has {fewest}")
    cfg = _train_config(args, spec)
    phantoms = _phantom_pairs(args.phantoms, args.seed, pipeline) if args.phantoms else []
    synthetic, held_synthetic, synthetic_note = _synthetic(args, pipeline, labelled=bool(pairs))
    start = time.monotonic()
    result, config, members, train_pairs, scores = _train_folds(
        args, spec, folds, cfg, init=init, checkpoint=out / f"{name}.checkpoint.safetensors",
        extra_pairs=phantoms + synthetic, held_synthetic=held_synthetic)
    if scores:
        scores["mean_f1"] = round(float(np.mean([s["f1"] for s in scores.values()])), 4)
        print(f"mean held-out F1: {scores['mean_f1']:.3f}")
    scores = _card_scores(scores, args.scores)
    if args.loo:
        return 0
    card = _new_card(args, spec, name=name, command=command, cfg=cfg, config=config,
                     result=result, pipeline=pipeline, train_pairs=train_pairs,
                     extra=phantoms + synthetic, members=members,
                     synthetic_note=synthetic_note, scores=scores)
    path = save_weights(result.model, out / name, card)
    (out / f"{name}.checkpoint.safetensors").unlink(missing_ok=True)
    (out / f"{name}.checkpoint.json").unlink(missing_ok=True)
    size = path.stat().st_size / 1e6
    print(f"wrote {path} ({size:.1f} MB) and its card ({(time.monotonic() - start) / 60:.1f} "
          f"min); threshold {result.threshold:.3f}")
    return 0


def _folds(args: argparse.Namespace, pairs: list) -> list[tuple[list, list]]:
    """(held-out pairs, training pairs) of every run: one per volume with ``--loo``
    (:func:`~napari_vessel.training.loo.leave_one_out`), else one run without the
    ``--leave-out`` volumes."""
    from napari_vessel.training.loo import leave_one_out

    if args.loo:
        return [([held], training) for held, training in leave_one_out(pairs)]
    names = [p.name for p in pairs]
    unknown = [n for n in args.leave_out if n not in names]
    if unknown:
        raise InputError(f"--leave-out {unknown[0]!r} is not in {args.data}: {', '.join(names)}")
    return [([p for p in pairs if p.name in args.leave_out],
             [p for p in pairs if p.name not in args.leave_out])]


def _train_config(args: argparse.Namespace, spec):
    """The :class:`~napari_vessel.training.train.TrainConfig` of the options."""
    from napari_vessel.training.train import TrainConfig, default_patch_size

    extra = {} if args.cldice is None else {"cldice_weight": args.cldice}
    if args.plain_bce:
        extra["balance"] = False
    for key in ("batch_size", "lr", "threshold_crop"):
        if getattr(args, key) is not None:
            extra[key] = getattr(args, key)
    patch = tuple(args.patch_size) if args.patch_size else default_patch_size(spec)
    return TrainConfig(steps=args.steps, seed=args.seed, minutes=args.minutes, patch_size=patch,
                       **extra)


def _train_folds(args: argparse.Namespace, spec, folds: list[tuple[list, list]], cfg, *,
                 init: dict | None, checkpoint: Path, extra_pairs: list, held_synthetic: list
                 ) -> tuple[Any, dict, list | None, list, dict]:
    """Train (compose, or only calibrate) one model per fold and score its held-out volumes,
    printing each score as it comes. ``init``: the ``--init`` tensors every fold starts from.

    Returns
    -------
    result, config, members, train_pairs
        The last fold's :class:`~napari_vessel.training.train.TrainResult`, builder config,
        composed members (None unless ``--members``) and training pairs.
    scores : dict
        The held-out volumes' scores, by name.
    """
    import torch

    from napari_vessel.progress import tqdm_progress
    from napari_vessel.training.train import train
    from napari_vessel.training.zoo_train import compose_ensemble

    scores: dict = {}
    for held, train_pairs in folds:
        torch.manual_seed(args.seed)
        model, config = _build(args, spec)
        if init is not None:
            _load_init(model, init, ", ".join(args.init))
        members = None
        if args.members:
            result, members = compose_ensemble(model, args.members, train_pairs, spec)
        elif args.calibrate_only:
            result = _calibrated(model, train_pairs, spec)
        else:
            label = f"train (without {', '.join(p.name for p in held)})" if held else "train"
            with tqdm_progress(label, disable=args.quiet) as progress:
                result = train(model, train_pairs, cfg, extra_pairs=extra_pairs,
                               progress=progress, checkpoint=checkpoint, spec=spec,
                               resume=args.resume, device=args.device,
                               threshold_pairs=train_pairs or held_synthetic)
        rule = _level_rule(args, result, train_pairs)
        for pair in held:
            scores[pair.name] = _score(result.model, pair, result.threshold, spec, rule)
            print(f"{pair.name}: F1 {scores[pair.name]['f1']:.3f} "
                  f"(threshold {scores[pair.name].get('level', result.threshold):.3f} from the "
                  f"training volumes{' by the level rule' if rule else ''})")
        result = dataclasses.replace(result, level_rule=rule)
    return result, config, members, train_pairs, scores


def _level_rule(args: argparse.Namespace, result, train_pairs: list):
    """The level rule fitted on the fold's training volumes (None without ``--level-rule``)."""
    if not args.level_rule:
        return None
    from napari_vessel.training.calibrate import fit_level_rule

    labels = {p.name: p.labels for p in train_pairs}
    names = [n for n in result.probs if n in labels and result.probs[n].shape == labels[n].shape]
    rule, f1_rule, f1_fixed = fit_level_rule([result.probs[n] for n in names],
                                             [labels[n] for n in names], fixed=result.threshold)
    print(f"level rule: {rule.intercept:.2f} {rule.slope:+.2f} x fraction above 0.5, mean F1 "
          f"{f1_rule:.3f} on the training volumes (fixed level {f1_fixed:.3f})")
    return rule


def _new_card(args: argparse.Namespace, spec, *, name: str, command: str, cfg, config: dict,
              result, pipeline, train_pairs: list, extra: list, members: list | None,
              synthetic_note: dict | None, scores: dict) -> ModelCard:
    """The card of a finished run: what data, steps, settings and scores made the weights."""
    import numpy as np

    from napari_vessel.models.weights import ModelCard, file_sha256
    from napari_vessel.training.zoo_train import describe_loss

    init = args.init
    notes = {k: v for k, v in (spec.card.extra if spec.card else {}).items()
             if k in ("paper", "notes", "min_slices", "receptive_field_zyx",
                      "recommended_preprocessing")}
    postprocessing = spec.card.postprocessing if spec.card else None
    init_cards = [_init_card(path) for path in args.init] if args.calibrate_only else []
    pretraining = [(c.training or None) if c else None for c in init_cards]
    training = ({"command": command, "composed_from": members, "steps": 0,
                 "minutes": round(result.minutes, 2)} if args.members else
                {"command": command, "steps": 0, "calibration_only": True,
                 "minutes": round(result.minutes, 2),
                 "pretraining": pretraining[0] if len(pretraining) == 1 else pretraining or None}
                if args.calibrate_only else
                {"command": command, "seed": args.seed, "steps": result.steps,
                 "minutes": round(result.minutes, 2), "config": cfg.to_dict(with_extra=False),
                 "loss": describe_loss(spec, balance=cfg.balance),
                 "final_loss": round(float(np.mean(result.losses[-50:])), 4)})
    training["train_f1"] = {k: round(v, 4) for k, v in result.train_f1.items()}
    if synthetic_note:
        training["synthetic"] = synthetic_note
    if init:
        training["init"] = ({"weights": Path(args.init[0]).name,
                             "sha256": file_sha256(args.init[0])} if len(args.init) == 1 else
                            {"averaged": [{"weights": Path(p).name, "sha256": file_sha256(p)}
                                          for p in args.init]})
    from napari_vessel.models.registry import inherited_postprocessing

    # a plain threshold's recipe (a level rule) belongs to the weights it was fitted for
    postprocessing = inherited_postprocessing(postprocessing)
    post = dict(postprocessing or {})
    rule = result.level_rule
    if rule is not None:
        postprocessing = {"method": "threshold", "level": round(result.threshold, 4),
                          "min_size": 0, "level_rule": rule.to_dict(),
                          "chosen_on": f"{len(train_pairs)} labelled volumes (level rule)"}
    # hysteresis levels fitted on the training volumes, like the threshold
    if post.get("method") == "hysteresis" and result.probs and not cfg.threshold_crop:
        from napari_vessel.training.calibrate import choose_hysteresis

        labels = {p.name: p.labels for p in train_pairs}
        names_ = [n for n in result.probs if n in labels and
                  result.probs[n].shape == labels[n].shape]
        postprocessing, post_f1 = choose_hysteresis(
            [result.probs[n] for n in names_], [labels[n] for n in names_], result.threshold,
            post, highs=np.round(np.arange(result.threshold, 0.951, 0.05), 4))
        training["train_f1_postprocessing"] = round(post_f1, 4)
    what = f"TV-Net {config['widths']}" if spec.architecture == "tvnet" else spec.description
    return ModelCard(
        name=name, architecture=spec.architecture, config=config, kind="supervised",
        description=(f"{what}"
                     + _soup_note(args.init or [])
                     + "; pretrained on synthetic volumes, threshold chosen on "
                     f"{len(train_pairs)} labelled volumes (not trained on them)")
        if args.calibrate_only else
        f"{what}; trained on {len(train_pairs)} labelled volumes"
        + (f" and {args.synthetic} synthetic volumes" if args.synthetic else "")
        + (" from pretrained weights" if init else ""),
        trained_on=_union([list(c.trained_on) if c else [Path(p).name]
                           for c, p in zip(init_cards, args.init, strict=True)])
        if args.calibrate_only else
        [p.name for p in train_pairs] + [p.name for p in extra
                                         if not p.name.startswith("synthetic")]
        + ([f"{args.synthetic} synthetic volumes (seed {args.seed})"] if args.synthetic else []),
        calibrated_on=[p.name for p in train_pairs] if args.calibrate_only else None,
        training=training, threshold=round(result.threshold, 4), scores=scores,
        preprocessing=pipeline.to_dict(), postprocessing=postprocessing,
        patch_size_zyx=list(spec.patch_size_zyx), parent=None, extra=notes,
    )


def _check_args(args: argparse.Namespace, spec) -> None:
    """Refuse option combinations that cannot work, before anything is loaded or trained."""
    from napari_vessel.training.zoo_train import has_paper_loss

    if args.steps < 1:
        raise InputError("--steps must be at least 1")
    if spec.architecture != "tvnet" and (args.widths or args.norm):
        raise InputError(f"--widths and --norm are TV-Net options; {spec.name!r} is trained "
                         "with its registered configuration (see its -full variant)")
    if args.plain_bce and has_paper_loss(spec):
        raise InputError(f"--plain-bce changes the TV-Net recipe's cross-entropy; {spec.name!r} "
                         "trains with its paper's own loss (see 'napari-vessel train --help')")
    if args.members and spec.architecture != "cascade-ensemble":
        raise InputError("--members composes the cascade ensemble; use --model cascade-ensemble")
    if args.members and (args.loo or args.leave_out):
        raise InputError("--members composes trained cascades: leave-one-out needs the "
                         "members' folds (benchmarks/zoo_loo.py --compose)")
    if args.level_rule and args.threshold_crop:
        raise InputError("--level-rule reads each volume's whole map; it cannot go with "
                         "--threshold-crop, which chooses the level on central crops")
    if args.level_rule and (not args.data or args.members
                            or (spec.postprocessing or {}).get("method") == "hysteresis"):
        raise InputError("--level-rule fits a plain threshold's level on labelled volumes: it "
                         "needs --data and a model thresholded at one level (not a hysteresis "
                         "cascade or --members)")
    if args.synthetic < 0:
        raise InputError("--synthetic must be a whole number >= 0")
    if not args.data and not args.synthetic:
        raise InputError("give --data (a folder with images/ and labels/) or --synthetic N")
    if not args.data and (args.loo or args.leave_out):
        raise InputError("--loo and --leave-out need labelled volumes: give --data")
    if args.calibrate_only and not (args.init and args.data):
        raise InputError("--calibrate-only needs the weights (--init) and labelled volumes "
                         "(--data) to choose the threshold on")
    if args.calibrate_only and (args.synthetic or args.members):
        raise InputError("--calibrate-only does not train: drop --synthetic and --members")


def _synthetic(args: argparse.Namespace, pipeline, *,
               labelled: bool) -> tuple[list, list, dict | None]:
    """The ``--synthetic`` training volumes, held-out ones for the threshold (when there are no
    labelled volumes) and the card's note on them."""
    if not args.synthetic:
        return [], [], None
    from napari_vessel.data.synthetic import GENERATOR_2, SyntheticConfig
    from napari_vessel.progress import tqdm_progress
    from napari_vessel.training.data import synthetic_pairs

    volumes: list = []
    held: list = []
    generators = [SyntheticConfig(**(GENERATOR_2 if g == 2 else {}), labels=args.labels)
                  for g in dict.fromkeys(args.generator)]
    shares = [len(range(k, args.synthetic, len(generators))) for k in range(len(generators))]
    start = 0  # each generator draws its own indices, so no two volumes share a geometry
    for generator, share in zip(generators, shares, strict=True):
        with tqdm_progress("synthetic volumes", disable=args.quiet) as progress:
            volumes += synthetic_pairs(share, seed=args.seed, pipeline=pipeline,
                                       progress=progress, config=generator, start=start)
        start += share
    if not labelled:  # pretraining alone: the threshold comes from held-out synthetic volumes
        held = synthetic_pairs(8, seed=args.seed, pipeline=pipeline, start=args.synthetic,
                               config=generators[0])
    note = {"volumes": args.synthetic, "seed": args.seed,
            "generator": generators[0].to_dict() if len(generators) == 1 else
            [{"volumes": n, **g.to_dict()} for g, n in zip(generators, shares, strict=True)]}
    return volumes, held, note


def _check_output(args: argparse.Namespace, spec) -> tuple[Path, str]:
    """(--out folder, model name), checked before any work: a plain name (no folder part), a
    writable folder, and no model of that name replaced without --overwrite."""
    import tempfile

    from napari_vessel.training.finetune_save import check_name_syntax

    name = check_name_syntax(spec.name if args.name is None else args.name)
    out = Path(args.out).expanduser()
    existing = [p for p in (out / f"{name}.safetensors", out / f"{name}.json") if p.exists()]
    if existing and not args.overwrite and not args.loo and not args.resume:
        raise InputError(f"{existing[0]} already exists; choose another --name or pass "
                         "--overwrite to replace it")
    try:
        out.mkdir(parents=True, exist_ok=True)
        with tempfile.NamedTemporaryFile(dir=out, prefix=".write-test-"):
            pass
    except OSError as err:
        raise InputError(f"cannot write to --out {out}: {err.strerror or err}; choose a folder "
                         "you can write to") from err
    return out, name


def _calibrated(model, pairs: list, spec):
    """A :class:`TrainResult` of no training: the model as it is, its threshold chosen on
    ``pairs``."""
    from napari_vessel.training.train import TrainResult, calibrate_threshold

    start = time.monotonic()
    threshold, scores, probs = calibrate_threshold(model, pairs, spec=spec)
    return TrainResult(model.eval(), 0, (time.monotonic() - start) / 60, [], threshold, scores,
                       probs)


def _soup_note(paths: list[str]) -> str:
    """How the --init runs were averaged, for the card's description ("" for one run). A file
    given twice counts twice: " (weighted average of 3 runs, weights 2:1:1)"."""
    if len(paths) < 2:
        return ""
    counts: dict[str, int] = {}
    for path in paths:
        key = str(Path(path).resolve())
        counts[key] = counts.get(key, 0) + 1
    if len(counts) == len(paths):
        return f" (average of {len(paths)} runs)"
    return (f" (weighted average of {len(counts)} runs, weights "
            f"{':'.join(str(n) for n in counts.values())})")


def _init_card(path: str) -> ModelCard | None:
    """The :class:`~napari_vessel.models.card.ModelCard` beside the ``--init`` weights (None
    when there is none or it is unreadable)."""
    from napari_vessel.models.weights import read_card

    try:
        return read_card(Path(path).with_suffix(".json"))
    except InputError:
        return None


def _init_weights(paths: list[str]) -> dict:
    """The tensors of ``--init`` (safetensors only; never unpickled), averaged over several
    files (:func:`~napari_vessel.training.soup.average_weights`)."""
    from safetensors import SafetensorError
    from safetensors.torch import load_file

    from napari_vessel.training.soup import average_weights

    states = []
    for path in paths:
        if not Path(path).is_file():
            raise InputError(f"--init {path}: no such file")
        try:
            states.append(load_file(path))
        except (OSError, SafetensorError) as err:
            raise InputError(f"--init {path} is not a readable .safetensors file: {err}") from err
    return states[0] if len(states) == 1 else average_weights(states, paths)


def _union(lists: list[list]) -> list:
    """The items of several lists, in order, each once."""
    out: list = []
    for items in lists:
        out += [item for item in items if item not in out]
    return out


def _load_init(model, tensors: dict, path: str) -> None:
    try:
        model.load_state_dict(tensors)
    except RuntimeError as err:
        raise InputError(f"--init {path} holds weights of another network "
                         f"({str(err).splitlines()[0]}); give the same --model and --widths as "
                         "the run that made it") from err
