"""``napari-vessel segment``: segment a stack with a registered model and write the results."""

from __future__ import annotations

import argparse
import sys
from dataclasses import replace
from pathlib import Path

import numpy as np

from napari_vessel.errors import InputError
from napari_vessel.io.outputs import check_writable as _check_writable
from napari_vessel.io.outputs import output_paths, publish_set
from napari_vessel.io.outputs import write_json as _write_json

NAME = "segment"
HELP = "segment vessels in a stack: labels, probability map and a run manifest"
DESCRIPTION = """\
Segment the vessels in a 3D stack with a model from 'napari-vessel models' (the recommended
default when --model is not given). Writes, in the output folder:
  STEM_labels.tif       vessel labels (uint8, 1 = vessel), with the voxel size
  STEM_prob.tif         the probability map (float32), to re-threshold without re-running
  STEM_manifest.json    model, weights hash, preprocessing, parameters, device, versions, timing
With --zarr (or when the in-memory run would need more than --memory-budget GB) the stack is
segmented out of core, block by block, into STEM_prob.zarr and STEM_labels.zarr (OME-Zarr):
memory is bounded by --block-size, not by the stack, and the result equals the in-memory one.
With --workers N (a local cluster of N processes) or --scheduler ADDRESS (a running dask
scheduler) the blocks of that one stack are predicted as tasks on the workers; on several
machines OUTDIR must be on a filesystem every worker shares (the scratch is next to it).
Existing files are never replaced unless --overwrite is given. The model's own preprocessing
(from its model card) is applied first, and its post-processing last (unless --threshold is given).

examples:
  napari-vessel segment stack.tif -o results
  napari-vessel segment stack.tif -o results --model frangi --threshold 0.4
  napari-vessel segment big.zarr -o results --device cuda --tta --overwrite
  napari-vessel segment huge.zarr -o results --memory-budget 8 --threads 2
  napari-vessel segment huge.zarr -o /shared/results --zarr --scheduler tcp://head:8786
  napari-vessel segment huge.zarr -o results --zarr --workers 4 --threads 2
"""


def add_arguments(parser: argparse.ArgumentParser) -> None:
    """Add the ``segment`` options to ``parser``."""
    parser.add_argument("input", help="3D stack: TIFF, OME-TIFF, ImageJ hyperstack or Zarr")
    parser.add_argument("-o", "--out", required=True, metavar="OUTDIR",
                        help="output folder (created when missing)")
    parser.add_argument("--model", default=None, help="model name (default: the recommended one)")
    parser.add_argument("--device", default="auto", choices=("auto", "cpu", "cuda", "mps"),
                        help="where to run the network (default auto: CUDA, then MPS, then CPU)")
    parser.add_argument("--runtime", default="auto", choices=("auto", "torch", "onnx", "openvino"),
                        help="how a network runs: auto (default) uses its ONNX export on "
                        "OpenVINO or ONNX Runtime on a CPU, PyTorch on a GPU")
    parser.add_argument("--overlap", type=float, default=0.25,
                        help="fraction of a patch shared with its neighbours (default 0.25)")
    parser.add_argument("--threshold", type=float, default=None,
                        help="probability above which a voxel is vessel (default: the model "
                             "card's post-processing: hysteresis 0.45/0.95 and clean-up for the "
                             "cascades, else the card's threshold, else 0.5)")
    parser.add_argument("--min-size", type=int, default=0, metavar="VOXELS",
                        help="remove vessel pieces smaller than this (default 0: the card's "
                             "clean-up if any, else keep all)")
    parser.add_argument("--tta", action="store_true",
                        help="average over flipped copies (slower, often a little better)")
    parser.add_argument("--patch-size", type=int, nargs=3, default=None, metavar=("Z", "Y", "X"),
                        help="patch size (default: the model's)")
    parser.add_argument("--batch-size", type=int, default=None, help="patches per forward pass")
    parser.add_argument("--channel", type=int, default=None, help="channel of a multi-channel file")
    parser.add_argument("--frame", type=int, default=None, metavar="N",
                        help="time point of a time series")
    parser.add_argument("--spacing", type=float, nargs=3, default=None, metavar=("Z", "Y", "X"),
                        help="voxel size in µm (default: from the file)")
    parser.add_argument("--no-preprocess", action="store_true",
                        help="skip the model's preprocessing (input already preprocessed)")
    parser.add_argument("--graph", action="store_true",
                        help="also build the vessel graph of the labels (as 'napari-vessel "
                        "graph') into OUTDIR/STEM_graph/")
    parser.add_argument("--zarr", action="store_true",
                        help="segment out of core into OME-Zarr stores (STEM_prob.zarr, "
                        "STEM_labels.zarr), block by block")
    parser.add_argument("--memory-budget", type=float, default=None, metavar="GB",
                        help="segment out of core (as --zarr) when the in-memory run would need "
                        "more than this (about 17 bytes per voxel)")
    parser.add_argument("--block-size", type=int, nargs=3, default=None, metavar=("Z", "Y", "X"),
                        help="voxels per block out of core (default: one patch)")
    parser.add_argument("--threads", type=int, default=None,
                        help="CPU threads for the network (default: all cores); with --workers "
                        "the threads of each worker")
    parser.add_argument("--workers", type=int, default=None, metavar="N",
                        help="out of core: predict the blocks on a local dask cluster of N "
                        "worker processes")
    parser.add_argument("--scheduler", default=None, metavar="ADDRESS",
                        help="out of core: predict the blocks on the workers of this running "
                        "dask scheduler (tcp://host:8786); OUTDIR must be on a filesystem they "
                        "share")
    parser.add_argument("--timeout", type=float, default=10.0, metavar="SECONDS",
                        help="seconds to wait for --scheduler to answer (default 10)")
    parser.add_argument("--overwrite", action="store_true", help="replace existing output files")
    parser.add_argument("--quiet", action="store_true", help="no progress bar")


def run(args: argparse.Namespace) -> int:
    """Segment ``args.input`` and write labels, probability map and manifest."""
    from napari_vessel.inference.run import resolve_spec, segment
    from napari_vessel.io.stacks import load_volume, save_volume
    from napari_vessel.progress import tqdm_progress

    if getattr(args, "zarr", False) or getattr(args, "memory_budget", None) is not None:
        from napari_vessel.inference.out_of_core import needs_out_of_core
        from napari_vessel.io.stacks import describe_file

        shape = describe_file(args.input)["stack_shape"] or ()
        if args.zarr or needs_out_of_core(shape, args.memory_budget):
            return _run_out_of_core(args)
    if getattr(args, "block_size", None) is not None:
        raise InputError("--block-size applies out of core only: add --zarr (or --memory-budget)")
    if getattr(args, "workers", None) is not None or getattr(args, "scheduler", None) is not None:
        fits = ("the stack fits --memory-budget, so it is segmented in memory in one process; "
                if getattr(args, "memory_budget", None) is not None else "")
        raise InputError(f"{fits}--workers and --scheduler split one stack's blocks out of core "
                         "only: add --zarr; for many stacks use 'napari-vessel batch'")
    paths = output_paths(args.input, args.out)
    existing = [str(p) for p in paths.values() if p.exists()]
    if existing and not args.overwrite:
        raise InputError(f"{', '.join(existing)} already exist(s); add --overwrite to replace")
    spec = resolve_spec(args.model)  # fail early on a bad name (no PyTorch with a warm cache)
    _check_writable(Path(args.out))
    graph_dir = paths["manifest"].with_name(paths["manifest"].name.replace("_manifest.json",
                                                                          "_graph"))
    if getattr(args, "graph", False):
        from napari_vessel.commands.graph import _check_outdir

        _check_outdir(graph_dir, args.overwrite)  # before minutes of segmenting
    volume = load_volume(args.input, channel=args.channel, frame=args.frame, spacing=args.spacing)
    print(f"segmenting {args.input} {volume.shape} with {spec.name} ...", file=sys.stderr)
    with tqdm_progress(f"segment ({spec.name})", disable=args.quiet) as progress:
        prob, labels, manifest = segment(
            volume, spec, threshold=args.threshold, preprocess=not args.no_preprocess,
            min_size=args.min_size, options=_window_options(args), progress=progress)
    manifest = replace(manifest, outputs={k: str(v) for k, v in paths.items()}).updated({
        "command": ["napari-vessel", "segment", *sys.argv[2:]] if sys.argv[1:2] == [
            "segment"] else None})
    meta = {"model": spec.name, "threshold": manifest.parameters.threshold}
    publish_set(paths, lambda tmp: [
        save_volume(tmp["prob"], prob.astype(np.float32), volume.spacing_zyx, kind="image",
                    metadata=meta),
        save_volume(tmp["labels"], labels, volume.spacing_zyx, kind="labels", metadata=meta),
        _write_json(tmp["manifest"], manifest.to_dict(), False)])
    used = manifest.runtime
    if used is not None and "exported" in used.reason:  # built now: next runs without PyTorch
        print(f"runtime {used.name}: {used.reason}", file=sys.stderr)
    fraction = float(labels.mean()) if labels.size else 0.0
    print(f"wrote {paths['labels']} ({fraction:.1%} vessel), {paths['prob']}, "
          f"{paths['manifest'].name} in {manifest.timing.total_s:.1f} s", file=sys.stderr)
    if getattr(args, "graph", False):
        from napari_vessel.commands.graph import write_and_report
        from napari_vessel.graph import GraphParams

        write_and_report(labels, volume.spacing_zyx, graph_dir, GraphParams(), {
            "input": str(paths["labels"]), "segmentation_manifest": str(paths["manifest"]),
            "spacing_known": bool(volume.spacing_known)}, overwrite=args.overwrite,
            quiet=args.quiet)
    return 0


def _window_options(args: argparse.Namespace, threads: bool = True):
    """The sliding window's settings from the command line (``threads=False``: none given)."""
    from napari_vessel.inference.options import WindowOptions

    return WindowOptions(patch_size=args.patch_size, overlap=args.overlap, tta=bool(args.tta),
                         batch_size=args.batch_size, device=args.device, runtime=args.runtime,
                         threads=getattr(args, "threads", None) if threads else None)


def _run_out_of_core(args: argparse.Namespace) -> int:
    """Segment block by block into OME-Zarr stores (:func:`~napari_vessel.segment_to_zarr`)."""
    from napari_vessel.inference.out_of_core import segment_to_zarr
    from napari_vessel.io.stacks import load_volume
    from napari_vessel.progress import tqdm_progress

    if getattr(args, "graph", False):
        raise InputError("--graph needs the labels in memory; run 'napari-vessel graph' on "
                         "STEM_labels.zarr afterwards, or segment without --zarr")
    workers, scheduler = getattr(args, "workers", None), getattr(args, "scheduler", None)
    if workers is not None and scheduler is not None:
        raise InputError("give --workers (a local cluster) or --scheduler (a running one), not "
                         "both")
    volume = load_volume(args.input, channel=args.channel, frame=args.frame, spacing=args.spacing,
                         lazy=True)
    options = dict(threshold=args.threshold, preprocess=not args.no_preprocess,
                   min_size=args.min_size, block_shape=args.block_size, overwrite=args.overwrite)
    if workers is None and scheduler is None:
        print(f"segmenting {args.input} {volume.shape} out of core ...", file=sys.stderr)
        with tqdm_progress("segment (out of core)", disable=args.quiet) as progress:
            manifest = segment_to_zarr(volume, args.out, args.model, progress=progress,
                                       options=_window_options(args), **options)
    else:
        from napari_vessel.inference.cluster import open_client

        def log(line: str) -> None:
            print(line, file=sys.stderr)

        with open_client(scheduler=scheduler, workers=workers, threads_per_worker=(
                args.threads if scheduler is None else None),
                connect_timeout=getattr(args, "timeout", 10.0), log=log) as client:
            log(f"dask dashboard: {client.dashboard_link}")
            print(f"segmenting {args.input} {volume.shape} out of core on the cluster's "
                  "workers ...", file=sys.stderr)
            with tqdm_progress("segment (out of core)", disable=args.quiet) as progress:
                manifest = segment_to_zarr(  # a local worker's threads are --threads already
                    volume, args.out, args.model, progress=progress, client=client,
                    options=_window_options(args, threads=scheduler is not None), **options)
    outputs, done = manifest.outputs, manifest.out_of_core
    where = f" on {done.workers} worker(s)" if done.workers else ""
    print(f"wrote {outputs['labels']}, {outputs['prob']} ({done.patches} patches in "
          f"{'x'.join(map(str, done.blocks))} blocks{where}; post-processing: "
          f"{', '.join(done.postprocessing_steps)}) in {manifest.timing.total_s:.1f} s",
          file=sys.stderr)
    return 0
