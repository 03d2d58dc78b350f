"""``napari-vessel finetune``: fine-tune a network on one volume and save it as a new model."""

from __future__ import annotations

import argparse
import os
import shlex
import signal
import sys
import threading
from collections.abc import Callable
from contextlib import contextmanager
from pathlib import Path
from typing import Any

from napari_vessel.errors import InputError
from napari_vessel.training import METHODS

NAME = "finetune"
HELP = "fine-tune a network on a volume (unsupervised, or from corrected labels); saves a new model"
DESCRIPTION = """\
Keep training a network on the very volume you want to segment, then save it as a new model in
the user models folder (it then appears in 'napari-vessel models' and in napari):

- without --labels: unsupervised, with the UMIS loss on the image alone (paper 000, section 4.4);
  helps when the volume comes from another microscope than the model's training data;
- with --labels: from your corrections. Only the voxels you edited count: by default those where
  CORRECTED.tif differs from the model's own segmentation, or the non-zero voxels of
  --edited-mask, plus any --checked-slices you confirmed whole.

The run stops after --minutes (default 2) or --steps; press Ctrl-C once to stop early and keep the
best state so far. If the loss did not improve, the parent's weights are kept (and said so). The
weights, a model card and a run manifest (NAME.manifest.json) are written atomically.

examples:
  napari-vessel finetune stack.tif --model umis -o umis-my-scope
  napari-vessel finetune stack.tif --model tvnet --minutes 5 -o tvnet-stack --segment out/
  napari-vessel finetune stack.tif --model tvnet --labels corrected.tif -o tvnet-fixed
  napari-vessel finetune stack.tif --model tvnet --labels corrected.tif --edited-mask edits.tif \\
      --checked-slices 4 9 -o tvnet-fixed
"""


def add_arguments(parser: argparse.ArgumentParser) -> None:
    """Add the ``finetune`` options to ``parser``."""
    parser.add_argument("input", metavar="IN", help="the volume (TIFF, OME-TIFF or Zarr)")
    parser.add_argument("--model", required=True, help="registered network to start from")
    parser.add_argument("-o", "--output", required=True, metavar="NEW_MODEL_NAME",
                        help="name of the new model")
    parser.add_argument("--minutes", type=float, default=2.0, help="time budget (default 2)")
    parser.add_argument("--steps", type=int, default=None, help="stop after N steps")
    parser.add_argument("--labels", metavar="CORRECTED", help="corrected labels: supervised mode")
    parser.add_argument("--edited-mask", metavar="MASK", help="voxels you edited (non-zero)")
    parser.add_argument("--checked-slices", nargs="+", type=int, default=(), metavar="Z",
                        help="slices you confirmed whole (with --labels)")
    parser.add_argument("--segment", metavar="OUTDIR",
                        help="also segment IN with the new model; write TIFFs and a manifest here")
    parser.add_argument("--models-dir", metavar="DIR",
                        help="save the model here instead of the user models folder")
    parser.add_argument("--method", choices=METHODS, default=None,
                        help="unsupervised adaptation (default adabn): re-estimate the batch-norm "
                        "statistics on the volume (adabn, seconds), training on synthetic vessels "
                        "drawn at the volume's voxel size and given its grey levels (synthetic), "
                        "self-training on confident "
                        "pseudo-labels (selftrain), entropy minimisation (tent) or the UMIS loss")
    parser.add_argument("--max-drift", type=float, default=0.25, metavar="FRACTION",
                        help="unsupervised: stop and keep the last safe state when the "
                        "predicted vessel fraction or skeleton length moves more than this "
                        "from the parent's (default 0.25 = 25 %%)")
    parser.add_argument("--lr", type=float, default=None,
                        help="learning rate (default 1e-3 selftrain and tent, 1e-4 umis, 3e-4 "
                        "with --labels)")
    parser.add_argument("--batch-size", type=int, default=2, help="patches per step (default 2)")
    parser.add_argument("--patch-size", nargs=3, type=int, default=(16, 64, 64),
                        metavar=("Z", "Y", "X"), help="training patch (default 16 64 64)")
    parser.add_argument("--cldice", type=float, default=0.0,
                        help="soft-clDice weight with --labels (default 0)")
    parser.add_argument("--consistency", type=float, default=0.0,
                        help="weight keeping the model near its parent's prediction (default 0)")
    parser.add_argument("--train-only", choices=("all", "norm"), default=None,
                        help="parameters that learn (default: norm unsupervised, all with "
                             "--labels)")
    parser.add_argument("--no-safeguard", action="store_true",
                        help="keep the fine-tuned weights even if the loss did not improve")
    parser.add_argument("--min-uncertainty", type=float, default=0.0, metavar="BITS",
                        help="unsupervised: adapt only when the model is at least this unsure of "
                        "the volume (mean entropy of its probabilities, 0-1 bits; default 0: "
                        "no such gate)")
    parser.add_argument("--seed", type=int, default=0, help="random seed (default 0)")
    parser.add_argument("--threads", type=int, default=None, help="CPU threads (default: all)")
    parser.add_argument("--device", default="cpu", help="auto, cpu, cuda or mps (default cpu)")
    parser.add_argument("--channel", type=int, default=None, help="channel of a multi-channel file")
    parser.add_argument("--frame", type=int, default=None, help="time point of a time series")
    parser.add_argument("--quiet", action="store_true", help="no progress bar")


@contextmanager
def _ctrl_c_stops(token):
    """First Ctrl-C asks the run to stop and keep its best state; a second one interrupts."""
    if threading.current_thread() is not threading.main_thread():
        yield
        return

    def handler(signum, frame):
        if token.cancelled:
            raise KeyboardInterrupt
        print("\nstopping after this step and keeping the best state (Ctrl-C again to abort)",
              file=sys.stderr)
        token.cancel()

    previous = signal.signal(signal.SIGINT, handler)
    try:
        yield
    finally:
        signal.signal(signal.SIGINT, previous)


def _in_thread(work: Callable[[], Any]) -> Any:
    """Run ``work()`` in a worker thread while the main thread only waits, so that Ctrl-C is
    handled at once: a signal's handler runs in the main thread, and while that thread is inside
    one long computation (a training step), two presses arrived as one. An abort (the second
    press) ends the process at once with status 130; the worker saves nothing."""
    outcome: dict[str, Any] = {}

    def target() -> None:
        try:
            outcome["value"] = work()
        except BaseException as err:  # noqa: BLE001 - raised again in the main thread
            outcome["error"] = err

    thread = threading.Thread(target=target, name="napari-vessel finetune", daemon=True)
    thread.start()
    try:
        while thread.is_alive():
            thread.join(0.1)
    except KeyboardInterrupt:
        # the worker is inside PyTorch, and a daemon thread there cannot be finalised (the
        # interpreter aborts at exit): end the process now; nothing was saved
        print("napari-vessel finetune: interrupted; nothing was saved", file=sys.stderr,
              flush=True)
        sys.stdout.flush()
        os._exit(130)
    if "error" in outcome:
        raise outcome["error"]
    return outcome["value"]


def _read_mask(path: str):
    from napari_vessel.io.stacks import load_volume

    return load_volume(path, lazy=False).to_numpy()


def _outputs(outdir: str, source: str, name: str) -> dict[str, Path]:
    from napari_vessel.io.outputs import finetune_output_paths

    paths = finetune_output_paths(source, outdir, name)
    existing = [str(p) for p in paths.values() if p.exists()]
    if existing:
        raise InputError(f"{existing[0]} already exists; choose another --segment folder")
    return paths


def _command(args: argparse.Namespace) -> str:
    """The command line that repeats this run (from the parsed options)."""
    words = ["napari-vessel", "finetune", args.input, "--model", args.model, "-o", args.output]
    for flag in ("minutes", "steps", "labels", "edited_mask", "segment", "models_dir", "lr",
                 "batch_size", "cldice", "consistency", "train_only", "method", "max_drift",
                 "min_uncertainty", "seed", "threads", "device",
                 "channel", "frame"):
        value = getattr(args, flag)
        if value is not None:
            words += ["--" + flag.replace("_", "-"), str(value)]
    for flag in ("patch_size", "checked_slices"):
        if getattr(args, flag):
            words += ["--" + flag.replace("_", "-"), *map(str, getattr(args, flag))]
    if args.no_safeguard:
        words.append("--no-safeguard")
    return shlex.join(words)


def run(args: argparse.Namespace) -> int:
    """Fine-tune, save the model (weights, card, manifest), optionally segment; returns 0."""
    import json

    from napari_vessel.io.outputs import check_writable
    from napari_vessel.io.stacks import load_volume, save_volume
    from napari_vessel.progress import CancelToken, tqdm_progress
    from napari_vessel.training.finetune import FinetuneConfig, check_new_name, finetune, save_finetuned
    from napari_vessel.training.finetune_save import models_folder

    if args.edited_mask and not args.labels:
        raise InputError("--edited-mask needs --labels (the corrected labels)")
    if args.checked_slices and not args.labels:
        raise InputError("--checked-slices needs --labels (the corrected labels)")
    name = check_new_name(args.output, args.models_dir)  # fail before spending minutes
    check_writable(models_folder(args.models_dir), "--models-dir")  # not after the training
    if args.segment:
        check_writable(Path(args.segment), "--segment folder")
    volume = load_volume(args.input, channel=args.channel, frame=args.frame, lazy=False)
    outputs = _outputs(args.segment, args.input, name) if args.segment else None
    labels = _read_mask(args.labels) if args.labels else None
    mask = _read_mask(args.edited_mask) if args.edited_mask else None
    config = FinetuneConfig(
        mode="supervised" if args.labels else "unsupervised", minutes=args.minutes,
        max_steps=args.steps, patch_size_zyx=tuple(args.patch_size), batch_size=args.batch_size,
        lr=args.lr, seed=args.seed, cldice_weight=args.cldice, consistency=args.consistency,
        keep_parent=not args.no_safeguard, train_only=args.train_only, preview=False,
        min_uncertainty=args.min_uncertainty, max_drift=args.max_drift,
        **({"method": args.method} if args.method else {}), device=args.device, threads=args.threads)
    token = CancelToken()
    with _ctrl_c_stops(token), tqdm_progress(f"fine-tune {args.model}",
                                             disable=args.quiet) as progress:
        result = _in_thread(lambda: finetune(
            args.model, volume, labels=labels, edited_mask=mask,
            checked_slices=args.checked_slices, config=config, progress=progress, cancel=token))
    print(f"{result.steps} steps in {result.seconds:.0f} s: {result.message}")
    if result.kept_parent:  # declined, guarded or stopped at once: the parent is the answer
        print(f"no new model was saved: the result is {args.model} itself")
        return 0
    weights = save_finetuned(result, name, volume_source=args.input, folder=args.models_dir,
                             extra={"command": _command(args)})
    print(f"saved model {name!r}: {weights} (card {weights.with_suffix('.json').name}, "
          f"manifest {name}.manifest.json)")
    if outputs is not None:
        _segment(weights, name, volume, outputs, save_volume, json)
    return 0


def _segment(weights: Path, name: str, volume, outputs: dict[str, Path], save_volume, json) -> None:
    """Segment with the saved model as the Fine-tune dock does (its card's post-processing)."""
    from napari_vessel.io.outputs import publish_set, write_json
    from napari_vessel.training.finetune_save import segment_finetuned

    prob, labels, manifest = segment_finetuned(volume, name, weights)
    paths = outputs
    publish_set(paths, lambda tmp: [  # one set, manifest last, as segment writes
        save_volume(tmp["prob"], prob, volume.spacing_zyx),
        save_volume(tmp["labels"], labels, volume.spacing_zyx, kind="labels"),
        write_json(tmp["manifest"], manifest.to_dict(), False)])
    print(f"segmented {volume.source} with {name!r}: {outputs['labels']}")
