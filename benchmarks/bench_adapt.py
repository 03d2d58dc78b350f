"""Which one-click adaptation helps? Every unsupervised method on real, shifted and resampled volumes.

Run from the repository root (about an hour per seed on one core; resumable: finished runs are
read back from ``--jsonl`` and skipped)::

    .venv/bin/python benchmarks/bench_adapt.py --jsonl runs/adapt.jsonl --seeds 0 1 \\
        --write docs/benchmarks-adaptation.md
    .venv/bin/python benchmarks/bench_adapt.py --jsonl runs/adapt.jsonl --write docs/...  # table only

Volumes (the starting model never trained on any of them):

- the six VesselNN two-photon volumes (skipped with a message when ``../shared/data`` is absent);
- the five "other microscope" phantoms of ``loo_phantoms.other_microscopes``;
- four synthetic shifts added here, which neither the synthetic pretraining nor any earlier
  benchmark drew: a long axial point-spread function, strong haze, a compressing gamma (0.45),
  and inverted intensities (dark vessels; a method should decline, not adapt to it);
- two real volumes resampled to another voxel size (in-plane halved; axial doubled).

For each method of :data:`napari_vessel.training.adapt.METHODS` and each seed: F1, AP, clDice,
precision and sensitivity before and after at the model's threshold, the seconds taken, and
whether it declined (and why).
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import shlex
import sys
import time
from pathlib import Path

import numpy as np
import torch
from bench_finetune import card_labels, probability
from loo_phantoms import other_microscopes

from napari_vessel.evaluation.metrics import average_precision, cldice, dice
from napari_vessel.io.stacks import load_volume
from napari_vessel.io.volume import Volume
from napari_vessel.models import registry
from napari_vessel.training.adapt import METHODS
from napari_vessel.training.finetune import FinetuneConfig, finetune
from napari_vessel.training.finetune_data import prepare_image

DATA = Path(__file__).resolve().parents[1].parent / "shared" / "data" / "vesselnn"


def new_shifts() -> list[tuple[str, Volume, np.ndarray]]:
    """Synthetic shifts no model here has seen (see the module notes)."""
    from napari_vessel.data.phantom import make_phantom, shifted

    cases = []
    base = make_phantom((16, 256, 256), seed=61)
    for label, change in (("F: axial PSF 6 µm", {"psf_um": (6.0, 0.8, 0.8)}),
                          ("G: strong haze", {"haze": 1.0, "background": 0.15}),
                          ("H: gamma 0.45", {"gamma": 0.45})):
        phantom = shifted(base, seed=3, strength=0.0, **change)
        cases.append((label, Volume(phantom.image, phantom.spacing_zyx), phantom.labels > 0))
    plain = make_phantom((16, 256, 256), seed=67)
    inverted = (plain.image.max() - plain.image).astype(plain.image.dtype)
    cases.append(("I: inverted (dark vessels)", Volume(inverted, plain.spacing_zyx),
                  plain.labels > 0))
    return cases


def real_cases(data: Path) -> list[tuple[str, Volume, np.ndarray]]:
    """The VesselNN volumes, and two of them resampled to another voxel size."""
    from scipy import ndimage as ndi

    images = sorted((data / "images").glob("*.tif"))
    if not images:
        print(f"no VesselNN volumes in {data}: skipping the real volumes", flush=True)
        return []
    cases, loaded = [], {}
    for path in images:
        volume = load_volume(path, lazy=False)
        labels = load_volume(data / "labels" / path.name, lazy=False).to_numpy() > 0
        cases.append((path.stem, volume, labels))
        loaded[path.stem] = (volume, labels)
    for stem, zoom, label in (("burgess2014_tgMouse", (1, 0.5, 0.5), "in-plane pixels x2"),
                              ("poon2015_plaqueVessels", (2, 1, 1), "axial step / 2")):
        if stem in loaded:
            volume, labels = loaded[stem]
            image = ndi.zoom(volume.to_numpy().astype(np.float32), zoom, order=1)
            ref = ndi.zoom(labels.astype(np.uint8), zoom, order=0) > 0
            spacing = tuple(s / z for s, z in zip(volume.spacing_zyx, zoom, strict=True))
            cases.append((f"{stem}, {label}", Volume(image, spacing), ref))
    return cases


NOTES = """\
## How to read it

Each cell is the change of F1 at the model's threshold after one click, averaged over the seeds
that ran (the JSONL lists every run with F1, AP, clDice, precision, sensitivity, seconds, the
guard's checks and the one-sentence message). *kept parent*: the run declined or its guard gave
back the parent, so nothing changed. The shipped `tvnet` never trained on any of these volumes
(synthetic pretraining only), so these are leave-one-out weights for every volume.

- `adabn` (the default since this benchmark) never lowered F1 on the six real volumes (two
  seeds; mean +0.008, up to +0.06), worst -0.011 on a resampled one: it declines where the
  re-estimated statistics move the vessel fraction or skeleton length by more than 25 %. Where
  it adapts on synthetic shifts it can lose (confocal phantom C and gamma 0.45 on one seed of
  two: -0.13, -0.21; axial PSF 6 µm -0.031, strong haze -0.043) with the segmentation's size
  inside the guard: the guard cannot see errors that move vessels without changing how much
  vessel there is.
- `synthetic` (session 6, two seeds) trains on synthetic vessels drawn at the volume's voxel
  size and given its intensity histogram, with the leash on the volume's own patches. It is the
  only method that gains on every shifted phantom and new shift but the inverted one (+0.011 to
  +0.063; means +0.029 and +0.036; precision up, sensitivity down: it removes the parent's
  over-calling of blur and haze), and it is about neutral on the six real volumes on average
  (-0.003) but not everywhere (tgMouse -0.016, BBB_Leakage -0.011 as the mean of two seeds, one
  seed -0.041; resampled volumes -0.020 and -0.033): the exact synthetic labels are narrower
  than these volumes' hand labels, so it narrows the vessels there. Not the default for that
  reason; the right choice for a stack from another microscope that the model over-calls.
- `selftrain` gains a little on real volumes (+0.004) but loses up to 0.11 on the low-contrast
  phantom: self-training reinforces the parent's own mistakes there.
- `tent` is mixed (-0.021 to +0.017 on real volumes).
- the UMIS loss with the anchor never got past its probe-loss safeguard (its loss did not fall
  on the probe patches), so it never changed a volume.
- blending the volume's batch-norm statistics with the parent's (50 %, 25 %), tried so that
  AdaBN would decline less often, lost up to 0.14 on a real volume and was dropped.

Targets of issue #13 not met: the default's mean change on the shifted phantoms and the new
shifts is -0.007 and -0.045 (target +0.05, each >= 0); on real volumes the "never harms"
target (>= -0.01) holds on the six, not quite on one resampled volume (-0.011). `synthetic`
comes closest on the shifts (+0.029 / +0.036, each >= +0.011 but the inverted stack's -0.003)
and misses "never harms" on real volumes (worst -0.016, resampled -0.033).
"""


def scores(prob: np.ndarray, ref: np.ndarray, spec, level: float | None = None) -> dict:
    """Scores of the card's labels of ``prob`` (its post-processing, level rule resolved; an
    adapted model's map at the level its run worked at, as the plugin saves it)."""
    pred, level = card_labels(spec, prob, level)
    tp = float(np.count_nonzero(pred & ref))
    return {"f1": dice(pred, ref), "ap": average_precision(prob, ref), "cldice": cldice(pred, ref),
            "precision": tp / max(1, np.count_nonzero(pred)),
            "sensitivity": tp / max(1, np.count_nonzero(ref)),
            "fraction": float(pred.mean()), "level": level}


def run(args: argparse.Namespace) -> None:
    out = Path(args.jsonl)
    done = {(r["volume"], r["method"], r["seed"]) for r in _read(out)}
    spec = registry.get(args.model)
    cases = (real_cases(Path(args.data)) if not args.no_real else []) + \
        [(label, Volume(image, (1.0, 1.0, 1.0)), ref) for label, image, ref in other_microscopes()]
    cases += new_shifts()
    for name, volume, ref in cases:
        if args.only and not any(name.startswith(o) for o in args.only):
            continue
        model, _ = registry.load_model(spec, "cpu")
        image, _ = prepare_image(spec, volume)
        before = None
        for method in args.methods:
            for seed in (args.seeds if method != "adabn" else args.seeds[:1]):
                if (name, method, seed) in done:
                    continue
                if before is None:
                    before = scores(probability(model, spec, image), ref, spec)
                config = FinetuneConfig(method=method, minutes=args.minutes, seed=seed,
                                        threads=args.threads, preview=False, **args.set)
                t0 = time.monotonic()
                result = finetune(args.model, volume, config=config)
                seconds = time.monotonic() - t0
                after = before if result.kept_parent else scores(
                    probability(result.model, spec, image), ref, spec, result.level)
                row = {"volume": name, "method": method, "seed": seed, "before": before,
                       "after": after, "seconds": seconds, "steps": result.steps,
                       "kept_parent": result.kept_parent, "declined": result.declined,
                       "message": result.message, "drift": result.drift}
                print(f"{name} | {method} seed {seed}: F1 {before['f1']:.3f} -> "
                      f"{after['f1']:.3f} in {seconds:.0f} s; {result.message}", flush=True)
                with out.open("a") as f:
                    f.write(json.dumps(row, default=float) + "\n")


def _read(path: Path) -> list[dict]:
    if not path.is_file():
        return []
    return [json.loads(line) for line in path.read_text().splitlines() if line.strip()]


def _group(name: str) -> str:
    if name.startswith(("phantom", "C:", "D:", "E:")):
        return "shifted phantoms"
    if name[:2] in ("F:", "G:", "H:", "I:"):
        return "new synthetic shifts"
    return "resampled real" if "," in name else "real"


def table(rows: list[dict]) -> str:
    """Per-volume change of F1 for every method (mean over seeds), then means per group."""
    methods = [m for m in METHODS if any(r["method"] == m for r in rows)]
    volumes = list(dict.fromkeys(r["volume"] for r in rows))
    lines = ["| volume | F1 before | " + " | ".join(f"{m} ΔF1" for m in methods) + " |",
             "|---|---|" + "---|" * len(methods)]
    cell: dict = {}
    for volume in volumes:
        mine = [r for r in rows if r["volume"] == volume]
        parts = []
        for m in methods:
            runs = [r for r in mine if r["method"] == m]
            if not runs:
                parts.append("")
                continue
            gain = float(np.mean([r["after"]["f1"] - r["before"]["f1"] for r in runs]))
            cell[volume, m] = gain
            declined = sum(r["declined"] or r["kept_parent"] for r in runs)
            parts.append(f"{gain:+.3f}" + (f" ({declined}/{len(runs)} kept parent)"
                                           if declined else ""))
        lines.append(f"| {volume} | {mine[0]['before']['f1']:.3f} | " + " | ".join(parts) + " |")
    lines += ["", "| group | " + " | ".join(f"{m}: mean ΔF1 (worst)" for m in methods) + " |",
              "|---|" + "---|" * len(methods)]
    for group in dict.fromkeys(_group(v) for v in volumes):
        parts = []
        for m in methods:
            gains = [cell[v, m] for v in volumes if _group(v) == group and (v, m) in cell]
            parts.append(f"{np.mean(gains):+.3f} ({min(gains):+.3f})" if gains else "")
        lines.append(f"| {group} | " + " | ".join(parts) + " |")
    lines += ["", "| method | mean seconds | AP change (mean) | sensitivity change | precision "
              "change |", "|---|---|---|---|---|"]
    for m in methods:
        runs = [r for r in rows if r["method"] == m]
        delta = {k: np.mean([r["after"][k] - r["before"][k] for r in runs])
                 for k in ("ap", "sensitivity", "precision")}
        lines.append(f"| {m} | {np.mean([r['seconds'] for r in runs]):.0f} | "
                     f"{delta['ap']:+.3f} | {delta['sensitivity']:+.3f} | "
                     f"{delta['precision']:+.3f} |")
    return "\n".join(lines) + "\n"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--data", default=str(DATA))
    parser.add_argument("--model", default="tvnet")
    parser.add_argument("--methods", nargs="*", default=list(METHODS), choices=METHODS)
    parser.add_argument("--seeds", nargs="*", type=int, default=[0])
    parser.add_argument("--minutes", type=float, default=1.0)
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument("--only", nargs="*", default=None, help="volume name prefixes")
    parser.add_argument("--no-real", action="store_true")
    parser.add_argument("--set", nargs="*", default=[], metavar="FIELD=VALUE",
                        help="FinetuneConfig fields to change, e.g. keep_size=10 max_drift=0.5")
    parser.add_argument("--jsonl", required=True, help="results, one run per line (resumable)")
    parser.add_argument("--no-run", action="store_true", help="only write the table")
    parser.add_argument("--write", default=None, help="write the Markdown report here")
    args = parser.parse_args()
    args.set = {k: json.loads(v) for k, v in (item.split("=", 1) for item in args.set)}
    torch.set_num_threads(args.threads)
    load = os.getloadavg()[0]
    if not args.no_run:
        run(args)
    rows = _read(Path(args.jsonl))
    report = "\n".join([
        "# Benchmark: one-click adaptation methods", "",
        f"Command: `.venv/bin/python benchmarks/{Path(__file__).name} "
        f"{shlex.join(sys.argv[1:])}`  ",
        f"Machine: {platform.machine()}, {os.cpu_count()} CPU cores shared with other jobs (load "
        f"{load:.1f} at the start), {args.threads} torch thread(s), torch {torch.__version__}.  ",
        f"Model `{args.model}` at its card's threshold; {args.minutes} min per run.", "",
        table(rows), NOTES])
    print(report)
    if args.write:
        Path(args.write).write_text(report)


if __name__ == "__main__":
    main()
