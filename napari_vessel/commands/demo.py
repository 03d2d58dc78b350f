"""``napari-vessel demo``: segment the built-in sample and show (or save) the result."""

from __future__ import annotations

import argparse
import os
import sys
import time
from pathlib import Path

import numpy as np

from napari_vessel.errors import InputError
from napari_vessel.io.outputs import check_writable, publish_set, write_json
from napari_vessel.progress import tqdm_progress

NAME = "demo"
HELP = "segment the built-in vessel sample; write TIFFs, a manifest and a PNG of the MIP overlay"
DESCRIPTION = """\
Make the built-in synthetic vessel stack (a two-photon-like phantom with exact ground truth),
segment it with the default model (or --model), and write into --out:

  image.tif, ground_truth.tif     the sample and its true vessels (voxel size in the metadata)
  probability.tif, labels.tif     the model's probability map and thresholded labels
  manifest.json                   model, parameters, timings and the scores against the truth
  mip_overlay.png                 maximum-intensity projection, and the labels drawn over it

With a display (and unless --no-view), napari then opens with the sample, the result and the
plugin's widgets docked.

example:
  napari-vessel demo --out demo_out
  napari-vessel demo --out demo_out --model frangi --no-view
"""


def add_arguments(parser: argparse.ArgumentParser) -> None:
    """Add the ``demo`` options to ``parser``."""
    parser.add_argument("--out", default="napari_vessel_demo", metavar="DIR",
                        help="folder for the results (default: ./napari_vessel_demo)")
    parser.add_argument("--model", default=None, help="model name (default: the recommended one; "
                        "see 'napari-vessel models')")
    parser.add_argument("--kind", choices=("2pm", "confocal"), default="2pm",
                        help="which sample to make (default: 2pm)")
    parser.add_argument("--seed", type=int, default=0, help="seed of the sample (default: 0)")
    parser.add_argument("--shape", type=int, nargs=3, default=(48, 256, 256), metavar=("Z", "Y", "X"),
                        help="size of the sample in voxels (default: 48 256 256)")
    parser.add_argument("--device", default="auto", help="auto (CUDA, then Apple MPS, then CPU), "
                        "cpu, cuda or mps")
    view = parser.add_mutually_exclusive_group()
    view.add_argument("--view", dest="view", action="store_true", default=None,
                      help="open napari afterwards (default when a display is available)")
    view.add_argument("--no-view", dest="view", action="store_false",
                      help="never open napari (headless runs)")
    parser.add_argument("--overwrite", action="store_true", help="replace results already in --out")
    parser.add_argument("--quiet", action="store_true", help="no progress bar")


def has_display() -> bool:
    """True when a window can be opened (an X/Wayland display, macOS or Windows)."""
    if os.environ.get("CI"):
        return False
    if sys.platform in ("darwin", "win32"):
        return True
    return bool(os.environ.get("DISPLAY") or os.environ.get("WAYLAND_DISPLAY"))


def run(args: argparse.Namespace) -> int:
    """Make the sample, segment it, write the results, and optionally open napari."""
    from napari_vessel.data.phantom import make_phantom
    from napari_vessel.evaluation.metrics import evaluate
    from napari_vessel.inference.run import segment
    from napari_vessel.io.stacks import save_volume
    from napari_vessel.io.volume import Volume
    from napari_vessel.models import registry
    from napari_vessel.render import overlay_rgb, save_png

    if args.model is not None:
        registry.get(args.model)  # an unknown name fails here, before any work
    out = Path(args.out)
    paths = {"image": out / "image.tif", "ground_truth": out / "ground_truth.tif",
             "prob": out / "probability.tif", "labels": out / "labels.tif",
             "overlay": out / "mip_overlay.png", "manifest": out / "manifest.json"}
    names = [p.name for p in paths.values()]
    existing = [p.name for p in paths.values() if p.exists()]
    if existing and not args.overwrite:
        raise InputError(f"{out} already holds {', '.join(existing)}; pass --overwrite to replace "
                         "them or choose another --out folder")
    check_writable(out, "--out")  # a read-only or blocked folder fails before the work

    started = time.perf_counter()
    phantom = make_phantom(tuple(args.shape), kind=args.kind, seed=args.seed)
    volume = Volume(phantom.image, phantom.spacing_zyx, source=f"phantom ({args.kind}, seed {args.seed})")
    with tqdm_progress("segmenting the sample", disable=args.quiet) as progress:
        prob, labels, manifest = segment(volume, args.model, device=args.device, progress=progress)
    scores = evaluate(labels, phantom.labels, prob=prob, spacing_zyx=phantom.spacing_zyx)
    spacing = phantom.spacing_zyx
    manifest = manifest.updated({
        "sample": phantom.params,
        "scores_vs_ground_truth": {k: _plain(v) for k, v in scores.items()},
        "outputs": {k: str(v) for k, v in paths.items()}})
    total_s: list[float] = []

    def write(tmp: dict[str, Path]) -> None:
        save_volume(tmp["image"], phantom.image, spacing)
        save_volume(tmp["ground_truth"], phantom.labels, spacing, kind="labels")
        save_volume(tmp["prob"], prob, spacing)
        save_volume(tmp["labels"], labels, spacing, kind="labels")
        save_png(tmp["overlay"], overlay_rgb(phantom.image, labels, reference=phantom.labels))
        total_s.append(round(time.perf_counter() - started, 3))
        write_json(tmp["manifest"], manifest.updated({"total_s": total_s[-1]}).to_dict(), False)

    publish_set(paths, write)  # all six files or none of them; the manifest last

    print(f"model {manifest.model.name}: Dice {scores['dice']:.3f}, clDice "
          f"{scores['cldice']:.3f}, AP {scores.get('ap', float('nan')):.3f} against the ground "
          "truth")
    print(f"wrote {', '.join(names)} to {out}/ in {total_s[-1]:.1f} s")
    view = has_display() if args.view is None else args.view
    if view:
        from napari_vessel._qt.launch import open_viewer

        open_viewer(phantom.image, spacing, labels=labels, prob=prob, reference=phantom.labels,
                    model=manifest.model.name)
    return 0


def _plain(value):
    if isinstance(value, np.generic):
        return value.item()
    return value
