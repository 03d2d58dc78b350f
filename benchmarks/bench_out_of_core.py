"""Out-of-core segmentation: wall time and peak resident memory against stack size.

Writes a synthetic stack as Zarr (the project's phantom generator, one phantom tiled over the
stack, slab by slab so the writer never holds it whole), then segments it out of core with the
default model in a fresh process under ``/usr/bin/time -v`` (peak RSS of that process), and
prints the patch work of the old block-wise sliding window for the same stack.

    python benchmarks/bench_out_of_core.py --size 48 1024 1024 --threads 1
    python benchmarks/bench_out_of_core.py --size 256 2048 2048 --threads 2   # 1 gigavoxel
"""

from __future__ import annotations

import argparse
import re
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np


def write_stack(path: Path, size: tuple[int, int, int]) -> None:
    """A phantom tile repeated over ``size``, written as OME-Zarr slab by slab."""
    from napari_vessel.data.phantom import make_phantom
    from napari_vessel.io.zarr import create_zarr, mark_complete

    tile = make_phantom((min(size[0], 32), min(size[1], 256), min(size[2], 256)), seed=0)
    array = create_zarr(path, size, np.uint8, tile.spacing_zyx, kind="image")
    reps = [int(np.ceil(s / t)) for s, t in zip(size, tile.image.shape, strict=True)]
    for z0 in range(0, size[0], tile.image.shape[0]):
        slab = np.tile(tile.image, (1, reps[1], reps[2]))[:, :size[1], :size[2]]
        array[z0:z0 + slab.shape[0]] = slab[:size[0] - z0]
    mark_complete(array)


def patch_work(size: tuple[int, int, int]) -> dict[str, float]:
    """Patch predictions per distinct patch: the old block-wise window vs the patch-grid blocks."""
    from napari_vessel.inference.out_of_core import default_block_shape
    from napari_vessel.inference.run import resolve_spec
    from napari_vessel.inference.sliding_window import patch_work as old_work
    from napari_vessel.inference.sliding_window import plan_tiles

    spec = resolve_spec(None)
    plan = plan_tiles(size, spec.patch_size_zyx, 0.25, spec.input_multiple_zyx)
    block = default_block_shape(plan.patch)
    return {"patches": plan.n_tiles,
            "old, default lazy block (4 patches)": old_work(plan, tuple(4 * p for p in plan.patch)),
            f"old, block {block}": old_work(plan, block), f"new, block {block}": 1.0}


def compare_on_crop(stack: Path, work: Path, crop: tuple[int, int, int], threads: int) -> str:
    """Segment one corner of ``stack`` in memory and out of core; how far the labels differ."""
    from napari_vessel.inference.out_of_core import segment_to_zarr
    from napari_vessel.inference.run import segment
    from napari_vessel.io.stacks import load_volume
    from napari_vessel.io.zarr import create_zarr, mark_complete

    full = load_volume(stack)
    corner = np.asarray(full.data[:crop[0], :crop[1], :crop[2]])
    path = work / "crop.zarr"
    array = create_zarr(path, corner.shape, corner.dtype, full.spacing_zyx, kind="image")
    array[...] = corner
    mark_complete(array)
    volume = load_volume(path)
    _, in_memory, _ = segment(volume, device="cpu", threads=threads)
    segment_to_zarr(volume, work / "crop_out", device="cpu", threads=threads, overwrite=True)
    out_of_core = np.asarray(load_volume(work / "crop_out" / "crop_labels.zarr").data)
    differ = int(np.count_nonzero((in_memory > 0) != (out_of_core > 0)))
    return f"{differ} of {in_memory.size} voxels differ ({int(np.count_nonzero(in_memory))} vessel)"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--size", type=int, nargs=3, default=(48, 1024, 1024), metavar=("Z", "Y", "X"))
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument("--keep", type=Path, default=None, help="work folder to keep (default: temporary)")
    parser.add_argument("--crop", type=int, nargs=3, default=None, metavar=("Z", "Y", "X"),
                        help="also segment this corner of the stack in memory and out of core "
                             "and compare the labels")
    args = parser.parse_args()
    size = tuple(args.size)
    with tempfile.TemporaryDirectory() as tmp:
        work = args.keep or Path(tmp)
        work.mkdir(parents=True, exist_ok=True)
        stack = work / "stack.zarr"
        if not stack.exists():
            write_stack(stack, size)
        command = ["/usr/bin/time", "-v", sys.executable, "-m", "napari_vessel.cli", "segment",
                   str(stack), "-o", str(work / "out"), "--zarr", "--overwrite", "--quiet",
                   "--threads", str(args.threads)]
        started = time.perf_counter()
        done = subprocess.run(command, capture_output=True, text=True)
        wall = time.perf_counter() - started
        if done.returncode != 0:
            sys.exit(done.stderr[-3000:])
        peak = int(re.search(r"Maximum resident set size \(kbytes\): (\d+)", done.stderr).group(1))
        same = compare_on_crop(stack, work, tuple(args.crop), args.threads) if args.crop else None
    voxels = int(np.prod(size))
    print(f"stack {size} ({voxels / 1e6:.1f} Mvoxel), threads {args.threads}")
    print(f"  wall {wall:.1f} s, peak RSS {peak / 1e6:.2f} GB ({peak * 1e3 / voxels:.2f} bytes/voxel)")
    if same is not None:
        print(f"  crop {tuple(args.crop)} in memory vs out of core: {same}")
    for key, value in patch_work(size).items():
        print(f"  {key}: {value:g}" if key == "patches" else f"  patch work, {key}: {value:.2f}x")


if __name__ == "__main__":
    main()
