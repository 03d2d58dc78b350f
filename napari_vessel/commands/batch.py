"""``napari-vessel batch``: segment many stacks on dask.distributed, resumable, with a summary table."""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

NAME = "batch"
HELP = "segment many stacks (files, folders, globs) on a local or remote dask cluster"
DESCRIPTION = """\
Segment every stack named by INPUTS (stack files, folders searched recursively, or globs) with
one model, each stack as one task on a dask.distributed cluster: a local cluster of worker
processes by default, or a running scheduler with --scheduler. Writes, in OUTDIR:
  NAME/NAME_labels.tif, NAME/NAME_prob.tif, NAME/NAME_manifest.json   as 'napari-vessel segment'
  summary.csv           one row per stack: input, output, status, seconds, voxels, vessel fraction,
                        error
  batch_manifest.json   the settings, counts and rows of this run
NAME is the file name without its ending (plus -HASH when two inputs share a name). The manifest
of a stack is written last: stacks that have one are skipped when the batch runs again (after a
crash or a kill), unless --overwrite. A stack that fails is recorded and the others go on; the
exit code is then 1. Files that are not stacks are listed and skipped. See docs/batch.md.

examples:
  napari-vessel batch data/ -o results
  napari-vessel batch 'data/**/*.tif' -o results --model tvnet --workers 2 --threads-per-worker 4
  napari-vessel batch data/ -o results --scheduler tcp://headnode:8786
"""


def add_arguments(parser: argparse.ArgumentParser) -> None:
    """Add the ``batch`` options to ``parser``."""
    parser.add_argument("inputs", nargs="+", metavar="INPUTS",
                        help="stack files or .zarr folders, folders (searched recursively) or globs")
    parser.add_argument("-o", "--out", required=True, metavar="OUTDIR",
                        help="output folder (created when missing)")
    parser.add_argument("--model", default=None, help="model name (default: the recommended one)")
    parser.add_argument("--threshold", type=float, default=None,
                        help="probability above which a voxel is vessel (default: the model "
                             "card's post-processing, as in 'segment')")
    parser.add_argument("--runtime", default="auto", choices=("auto", "torch", "onnx", "openvino"),
                        help="how a network runs (default auto, as in 'segment')")
    parser.add_argument("--device", default="auto", choices=("auto", "cpu", "cuda", "mps"),
                        help="where networks run (default auto: CUDA, then MPS, then CPU; with "
                             "several GPUs, one per local worker)")
    parser.add_argument("--workers", type=int, default=None, metavar="N",
                        help="local worker processes (default: one per stack, at most one per core)")
    parser.add_argument("--threads-per-worker", type=int, default=None, metavar="T",
                        help="threads each local worker gives its stack (default: the cores "
                             "shared among the workers)")
    parser.add_argument("--scheduler", default=None, metavar="ADDRESS",
                        help="use a running dask scheduler (tcp://host:8786) instead of a local "
                             "cluster; inputs and OUTDIR must be reachable at the same paths from "
                             "its workers")
    parser.add_argument("--timeout", type=float, default=10.0, metavar="SECONDS",
                        help="how long to wait for --scheduler to answer (default 10)")
    parser.add_argument("--dashboard", default=":8787", metavar="ADDRESS",
                        help="address of the local cluster's dashboard (default :8787; :0 for any "
                             "free port)")
    parser.add_argument("--channel", type=int, default=None,
                        help="channel to take from multi-channel files")
    parser.add_argument("--frame", type=int, default=None, metavar="N",
                        help="time point to take from time series")
    parser.add_argument("--overwrite", action="store_true",
                        help="segment again the stacks that are already done")
    parser.add_argument("--zarr", action="store_true",
                        help="segment each stack out of core into OME-Zarr stores with pyramids "
                        "(memory bounded by the block, not the stack; see docs/segmentation.md)")
    parser.add_argument("--quiet", action="store_true", help="no progress bar")


def run(args: argparse.Namespace) -> int:
    """Find the stacks, segment them, print a summary; exit code 1 when any failed."""
    from tqdm.auto import tqdm

    from napari_vessel.batch import BatchConfig, find_inputs, run_batch
    from napari_vessel.progress import tqdm_progress

    config = BatchConfig(model=args.model, threshold=args.threshold, runtime=args.runtime,
                         device=args.device, workers=args.workers,
                         threads_per_worker=args.threads_per_worker, scheduler=args.scheduler,
                         overwrite=args.overwrite, channel=args.channel, frame=args.frame,
                         zarr=args.zarr,
                         connect_timeout=args.timeout, dashboard=args.dashboard)
    skipped: list[Path] = []
    inputs = find_inputs(args.inputs, exclude=args.out, on_skip=lambda path, why: skipped.append(path))
    if skipped:
        names = ", ".join(str(p) for p in skipped[:5])
        names += f" and {len(skipped) - 5} more" if len(skipped) > 5 else ""
        print(f"skipped {len(skipped)} file(s) that are not stacks: {names}", file=sys.stderr)
    print(f"{len(inputs)} stack(s) to segment into {args.out}", file=sys.stderr)

    def log(line: str) -> None:
        tqdm.write(line, file=sys.stderr)

    with tqdm_progress("batch", disable=args.quiet) as progress:
        report = run_batch(inputs, args.out, config, progress, log=log)
    counts = report.counts
    print(f"{counts['done']} done, {counts['skipped']} skipped (already done), {counts['failed']} "
          f"failed; table: {report.summary}", file=sys.stderr)
    for stack in report.failed:
        print(f"  failed: {stack.input}: {stack.error}", file=sys.stderr)
    return 1 if report.failed else 0
