"""Does fine-tuning on the open volume help? F1, AP and clDice before and after, with time spent.

Run from the repository root (a few minutes per volume on a 2-core CPU)::

    .venv/bin/python benchmarks/bench_finetune.py --write docs/benchmarks-finetune.md
    .venv/bin/python benchmarks/bench_finetune.py --only poon2015_BBB_Leakage --minutes 0.5

For each of the six VesselNN volumes (skipped with a message when absent) and for two phantoms
rendered through other microscopes (:func:`napari_vessel.data.phantom.shifted`):

1. *before*: the starting model's segmentation at its card's threshold;
2. *unsupervised*: :func:`~napari_vessel.training.finetune.finetune` with the UMIS loss for
   ``--minutes`` (paper 000, section 4.4), then segment again;
3. *supervised*: a simulated user correction: on three slices, the largest errors of the starting
   model (missed vessel painted, false vessel erased) are set to the reference until 5 % of the
   reference's vessel voxels are edited; a supervised fine-tune on those edits only for
   ``--sup-minutes``; scores on the whole volume and on the slices that were not edited.

Starting weights: ``--loo-dir`` may hold leave-one-volume-out weights named
``MODEL-loo-VOLUME.safetensors`` (+ card) that did not see that volume; otherwise the registered
``--model`` weights are used, and the table says whether they saw the volume.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import shlex
import sys
import tempfile
import time
from dataclasses import replace
from pathlib import Path

import numpy as np
import torch
from loo_table import thresholds as loo_thresholds

from napari_vessel.data.phantom import make_phantom, shifted
from napari_vessel.evaluation.metrics import average_precision, cldice, dice
from napari_vessel.inference.run import predict
from napari_vessel.io.stacks import load_volume
from napari_vessel.io.volume import Volume
from napari_vessel.models import registry
from napari_vessel.postprocess.labels import Postprocessing
from napari_vessel.training.finetune import FinetuneConfig, finetune
from napari_vessel.training.finetune_data import prepare_image
from napari_vessel.training.finetune_loss import ProbabilityNet

TMP = tempfile.TemporaryDirectory(prefix="bench-finetune-")
DATA = Path(__file__).resolve().parents[1].parent / "shared" / "data" / "vesselnn"


NOTES = """\
How to read it: each cell is *before → after (change)*, at the starting model's threshold (its
card's post-processing, a level rule resolved for each map, or for leave-one-out weights the
one chosen on the other five volumes); the fine-tuned model keeps that recipe. F1 = Dice of the
thresholded map, AP = area under the
precision-recall curve, clDice with 3D skeletons (`napari_vessel.evaluation.metrics`). *Kept parent*: the
safeguard gave back the starting weights because the loss on fixed probe patches did not go down.
Times are wall-clock on a shared 2-core machine with one torch thread, and include preprocessing
and the probe checks; a laptop with both cores free runs about twice as many steps.

The supervised rows simulate a user who, on three evenly spaced slices, corrects and confirms a
centred square (everything in it set to the reference) until the squares hold 5 % of the volume's
reference vessel voxels; only the squares are in the edited mask. The last table scores only the
slices nobody touched, i.e. what the corrections taught the network about the rest of the volume.

How the defaults were chosen (30-60 s runs on a phantom and three real volumes, with a
pre-release checkpoint of `tvnet` that had seen those volumes; threshold 0.5):

| what learns | phantom A F1 (0.61) | tgMouse (0.81) | poon (0.59) | santos (0.73) |
|---|---|---|---|---|
| all weights, batch norm in training mode (paper) | 0.41 (over-segments) | | | |
| all weights, batch norm frozen | 0.83 | 0.38 | 0.65 | 0.70 |
| all weights + consistency 1 with the parent | 0.59 | parent kept | parent kept | 0.71 |
| **norm layers only, batch norm frozen (default)** | 0.74 (30 s), 0.82 | 0.77 | 0.66 | 0.80 |

(F1 after 30 s, norm-only rows after 1 min.)

The UMIS loss was designed for the UMIS network, which learns it from the start; a network trained
with labels has learnt the annotators' notion of a vessel (VesselNN labels are generous), which is
not the active contour's. Adapting every weight to the UMIS loss therefore drifts towards the
active-contour segmentation, which helps where the network's errors come from the new
microscope's intensities and hurts where they are a matter of labelling convention. Adapting only
the normalisation layers' scales and shifts (test-time adaptation) changes how the network
responds to the intensities and keeps the shapes it learnt. Batch norm is frozen because two
patches of one volume are a poor estimate of its statistics (with it in training mode the
eval-mode loss on the probe patches went up while the training loss went down).

Supervised: edits alone are a biased sample. Training only on the largest error blobs (all of
one kind) taught the network to flip everything (santos F1 0.73 → 0.21); confirming a region
around the edits fixes that (0.73 → 0.77). Balanced BCE + TV alone re-scaled the probabilities so
that the parent's threshold no longer fitted (poon F1 0.63 → 0.12 though AP stayed 0.69); adding
soft Dice (weight 0.5, as the shipped TV-Net was trained) keeps the scale (0.63 → 0.63, AP
0.72 → 0.74). The widget should therefore ask the user to confirm the slices (or region) they
corrected, not only paint the errors.
"""

#: Phantoms seen through another microscope: (name, geometry seed, changes of the imaging).
PHANTOMS = (
    ("phantom A: low contrast, few photons", 11, {"seed": 5, "contrast": 0.3, "photons": 5.0}),
    ("phantom B: blur, haze, few photons", 23,
     {"seed": 9, "psf_um": (2.0, 0.8, 0.8), "photons": 5.0, "haze": 0.4}),
)


def card_labels(spec, prob: np.ndarray, level: float | None = None) -> tuple[np.ndarray, float]:
    """The vessel mask the card gives ``prob`` and the level used.

    The card's post-processing (:meth:`Postprocessing.for_model`, the plugin's road when the
    user gives no threshold), its level rule resolved for this map. ``level``: the map is a
    fine-tune's of this card's model, which the plugin saves at the level its run worked at
    (``FinetuneResult.level``) instead of re-levelling it by the rule.
    """
    recipe = Postprocessing.for_model(spec)
    if recipe.rule is not None and level is not None:
        recipe = recipe.rethreshold(level)
    recipe = recipe.resolve(prob)
    return recipe.apply(prob) > 0, recipe.threshold


def scores(prob: np.ndarray, ref: np.ndarray, spec, keep=None, level: float | None = None
           ) -> dict:
    """F1 (= Dice), AP and clDice of the card's labels of ``prob`` (:func:`card_labels`, from
    the whole map; ``level``: a fine-tune's level) and the level used; ``keep`` selects slices."""
    pred, level = card_labels(spec, prob, level)
    if keep is not None:
        prob, ref, pred = prob[keep], ref[keep], pred[keep]
    return {"f1": dice(pred, ref), "ap": average_precision(prob, ref), "cldice": cldice(pred, ref),
            "level": level}


def probability(model, spec, image: np.ndarray) -> np.ndarray:
    """The network's probability map of a preprocessed volume (the plugin's sliding window)."""
    return predict(ProbabilityNet(model, spec), image, patch_size=spec.patch_size_zyx,
                   device="cpu")


def simulate_correction(pred: np.ndarray, ref: np.ndarray, *, slices: int = 3,
                        fraction: float = 0.05) -> tuple[np.ndarray, np.ndarray, list[int]]:
    """Corrected labels and edited mask of a user who fixes and confirms a region on a few slices.

    On ``slices`` evenly spaced slices, a centred square is set to the reference (the user
    painted the missed vessel, erased the false one, and confirmed the rest of the square), the
    squares grown together until they hold ``fraction`` of the reference's vessel voxels. The
    edited mask is the squares; everything else keeps the model's own labels.
    """
    depth, height, width = ref.shape
    chosen = sorted({int(round(z)) for z in np.linspace(0, depth - 1, slices + 2)[1:-1]})
    budget = fraction * ref.sum()
    mask = np.zeros(ref.shape, bool)
    for half in range(4, max(height, width)):
        mask[:] = False
        y0, x0 = max(0, height // 2 - half), max(0, width // 2 - half)
        for z in chosen:
            mask[z, y0:height // 2 + half, x0:width // 2 + half] = True
        if ref[mask].sum() >= budget:
            break
    corrected = pred.copy()
    corrected[mask] = ref[mask]
    return corrected, mask, chosen


def starting_model(model: str, volume: str, loo_dir: str | None,
                   thresholds: dict[str, float]) -> tuple[str, str]:
    """(registered name, description) of the weights to start from for one volume.

    ``loo_dir/VOLUME.safetensors`` (a state dict, as ``loo_eval.py --save-dir`` writes it) or
    ``loo_dir/MODEL-loo-VOLUME.safetensors`` are weights trained without that volume; they are
    given a card (the shipped model's architecture and preprocessing, the fold's threshold) in a
    temporary folder and registered. Otherwise the registered ``model`` is used.
    """
    from safetensors.torch import load_file

    from napari_vessel.models.weights import save_weights

    base = registry.get(model)
    for candidate in (f"{volume}.safetensors", f"{model}-loo-{volume}.safetensors"):
        path = Path(loo_dir or "") / candidate
        if loo_dir and path.is_file():
            network = base.builder(**base.config)
            network.load_state_dict(load_file(str(path)))
            name = f"{model}-loo-{volume}"
            threshold = thresholds.get(volume, base.threshold)
            card = {"architecture": base.architecture, "config": dict(base.config),
                    "kind": base.kind, "preprocessing": base.preprocessing,
                    "threshold": threshold, "trained_on": f"the VesselNN volumes but {volume}"}
            weights = save_weights(network, Path(TMP.name) / name, card)
            # the fold's threshold, not the shipped weights' recipe (its level rule was fitted
            # for them); an architecture's hysteresis recipe passes on
            registry.register(replace(base, name=name, weights=weights, card={}, source="user",
                                      postprocessing=registry.inherited_postprocessing(
                                          base.postprocessing)),
                              replace_existing=True)
            return name, "leave-one-out"
    seen = volume in json.dumps(list(base.card.trained_on) if base.card else [])
    return model, "shipped (saw it)" if seen else "shipped (did not see it)"


def run_case(name: str, volume: Volume, ref: np.ndarray, model_name: str, weights: str,
             args: argparse.Namespace, minutes: float) -> dict:
    """Before / unsupervised / supervised scores of one volume."""
    model, spec = registry.load_model(model_name, "cpu")
    image, _ = prepare_image(spec, volume)
    row = {"volume": name, "weights": weights, "threshold": spec.threshold}
    prob = probability(model, spec, image)
    row["before"] = scores(prob, ref, spec)
    common = dict(threads=args.threads, preview=False, seed=args.seed,
                  consistency=args.consistency)
    for key, gate in (("unsup", args.min_uncertainty), ("forced", 0.0)):
        result = finetune(model_name, volume, config=FinetuneConfig(
            minutes=minutes, min_uncertainty=gate, **common))
        if key == "unsup":
            row["uncertainty"] = result.parent_uncertainty
        row[key] = scores(probability(result.model, spec, image), ref, spec,
                          level=result.level)
        row[f"{key}_run"] = {"s": result.seconds, "steps": result.steps,
                             "kept_parent": result.kept_parent, "message": result.message}
        print(f"  unsupervised ({key}): {result.steps} steps, {result.seconds:.0f} s, "
              f"{result.message}", flush=True)
        if result.steps:  # the gate let it adapt: forcing it would repeat the same run
            row["forced"], row["forced_run"] = row[key], row[f"{key}_run"]
            break
    corrected, mask, slices = simulate_correction(card_labels(spec, prob)[0], ref)
    others = np.setdiff1d(np.arange(ref.shape[0]), slices)
    row["edits"] = {"voxels": int(mask.sum()), "slices": slices,
                    "of_vessel": float(mask.sum() / max(1, ref.sum()))}
    row["before_others"] = scores(prob, ref, spec, others)
    result = finetune(model_name, volume, labels=corrected, edited_mask=mask,
                      config=FinetuneConfig(mode="supervised", minutes=args.sup_minutes,
                                            **common))
    prob_sup = probability(result.model, spec, image)
    row["sup"] = scores(prob_sup, ref, spec, level=result.level)
    row["sup_others"] = scores(prob_sup, ref, spec, others, level=result.level)
    row["sup_run"] = {"s": result.seconds, "steps": result.steps,
                      "kept_parent": result.kept_parent, "message": result.message}
    print(f"  supervised: {result.steps} steps, {result.seconds:.0f} s, {result.message}",
          flush=True)
    return row


def _arrow(a: float, b: float) -> str:
    return f"{a:.3f} → {b:.3f} ({b - a:+.3f})"


def tables(rows: list[dict]) -> str:
    """The two Markdown tables (unsupervised, supervised) with a mean row over the real volumes."""
    real = [r for r in rows if not r["volume"].startswith("phantom")]
    lines = ["## Unsupervised (UMIS loss, paper 000 section 4.4)", "",
             "With the default gate: adapt only when the model is unsure of the volume (mean "
             "entropy of its probabilities at least the minimum uncertainty, in bits).", "",
             "| volume | start weights | F1 | AP | clDice | time (s) | steps | kept parent | "
             "entropy (bits) |",
             "|---|---|---|---|---|---|---|---|---|"]

    def line(r: dict, key: str, run: str, extra: str = "") -> str:
        b, a = r["before" if key != "sup_others" else "before_others"], r[key]
        return (f"| {r['volume']} | {r['weights']} | {_arrow(b['f1'], a['f1'])} | "
                f"{_arrow(b['ap'], a['ap'])} | {_arrow(b['cldice'], a['cldice'])} | "
                f"{r[run]['s']:.0f} | {r[run]['steps']} | "
                f"{'yes' if r[run]['kept_parent'] else 'no'} |{extra}")

    def mean(key: str, ref: str = "before") -> str:
        if not real:
            return ""
        m = {k: (np.mean([r[ref][k] for r in real]), np.mean([r[key][k] for r in real]))
             for k in ("f1", "ap", "cldice")}
        return (f"| **mean of the real volumes** | | {_arrow(*m['f1'])} | {_arrow(*m['ap'])} | "
                f"{_arrow(*m['cldice'])} | | | |")

    def entropy(r: dict) -> str:
        value = r.get("uncertainty")
        return " - |" if value is None else f" {value:.2f} |"

    lines += [line(r, "unsup", "unsup_run", entropy(r)) for r in rows] + [mean("unsup") + " |"]
    lines += ["", "The same runs with the gate off (always adapt; identical where the gate "
              "let the run adapt):", "",
              "| volume | start weights | F1 | AP | clDice | time (s) | steps | kept parent |",
              "|---|---|---|---|---|---|---|---|"]
    lines += [line(r, "forced", "forced_run") for r in rows] + [mean("forced")]
    lines += ["", "## Supervised from a simulated correction (5 % of the vessel voxels, 3 slices)",
              "", "Whole volume:", "",
              "| volume | start weights | F1 | AP | clDice | time (s) | steps | kept parent |",
              "|---|---|---|---|---|---|---|---|"]
    lines += [line(r, "sup", "sup_run") for r in rows] + [mean("sup")]
    lines += ["", "Only the slices that were not edited:", "",
              "| volume | start weights | F1 | AP | clDice | time (s) | steps | kept parent |",
              "|---|---|---|---|---|---|---|---|"]
    lines += [line(r, "sup_others", "sup_run") for r in rows] + [mean("sup_others",
                                                                      "before_others")]
    return "\n".join(x for x in lines if x is not None) + "\n"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--data", default=str(DATA))
    parser.add_argument("--model", default="tvnet")
    parser.add_argument("--loo-dir", default=None,
                        help="leave-one-out weights: VOLUME.safetensors or MODEL-loo-VOLUME...")
    parser.add_argument("--loo-json", nargs="*", default=[],
                        help="loo_eval.py JSON files giving each fold's threshold")
    parser.add_argument("--minutes", type=float, default=1.0,
                        help="unsupervised budget per real volume (default 1)")
    parser.add_argument("--phantom-minutes", type=float, default=2.0,
                        help="unsupervised budget on the shifted phantom (default 2)")
    parser.add_argument("--sup-minutes", type=float, default=0.5)
    parser.add_argument("--consistency", type=float, default=0.0)
    parser.add_argument("--min-uncertainty", type=float, default=0.45,
                        help="the fine-tune's gate (bits); a second run without it is reported")
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--only", nargs="*", default=None)
    parser.add_argument("--no-phantom", action="store_true")
    parser.add_argument("--json", default=None)
    parser.add_argument("--write", default=None, help="write the Markdown report here")
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    started = time.monotonic()
    load = os.getloadavg()[0]
    rows = []
    thresholds = loo_thresholds(args.loo_json) if args.loo_json else {}
    images = sorted((Path(args.data) / "images").glob("*.tif"))
    if not images:
        print(f"no VesselNN volumes in {args.data}: skipping the real volumes", flush=True)
    for path in images:
        if args.only is not None and path.stem not in args.only:
            continue
        print(path.stem, flush=True)
        volume = load_volume(path, lazy=False)
        ref = load_volume(Path(args.data) / "labels" / path.name, lazy=False).to_numpy() > 0
        name, weights = starting_model(args.model, path.stem, args.loo_dir, thresholds)
        rows.append(run_case(path.stem, volume, ref, name, weights, args, args.minutes))
    if not args.no_phantom:
        for label, geometry, shift in PHANTOMS:
            print(label, flush=True)
            phantom = shifted(make_phantom((16, 256, 256), seed=geometry), **shift)
            volume = Volume(phantom.image, phantom.spacing_zyx, source=label)
            rows.append(run_case(label, volume, phantom.labels > 0, args.model,
                                 "shipped (no phantoms)", args, args.phantom_minutes))
    total = (time.monotonic() - started) / 60
    report = "\n".join([
        "# Benchmark: fine-tuning on the open volume", "",
        f"Command: `.venv/bin/python benchmarks/{Path(__file__).name} "
        f"{shlex.join(sys.argv[1:])}`  ",
        f"Machine: {platform.machine()}, {os.cpu_count()} CPU cores shared with other jobs (load "
        f"average {load:.1f} at the start), {args.threads} torch thread(s), torch "
        f"{torch.__version__}; total {total:.1f} min.  ",
        f"Model: `{args.model}`; unsupervised budget {args.minutes} min per real volume, "
        f"{args.phantom_minutes} min on the phantom; supervised {args.sup_minutes} min; "
        f"consistency weight {args.consistency}.", "", tables(rows), NOTES])
    print(report)
    if args.write:
        Path(args.write).write_text(report)
    if args.json:
        Path(args.json).write_text(json.dumps(rows, indent=1, default=float))


if __name__ == "__main__":
    main()
