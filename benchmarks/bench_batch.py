"""A folder of stacks: one process against ``napari-vessel batch`` on a local dask cluster.

Writes ``--stacks`` phantom stacks (the project's generator, one seed each) as TIFF, then
alternates, ``--repeats`` times each:

* **one process**: a fresh Python process that reads, segments (``napari_vessel.segment``, all
  cores) and writes each stack in turn, as a script would;
* **batch**: ``napari-vessel batch DIR -o OUT --workers W --threads-per-worker T`` (a
  ``LocalCluster`` of processes; the cluster's start-up counted).

Wall time from outside, CPU time of the process and its children (``resource.getrusage``), and
the CPU use (CPU seconds per wall second; 2.0 = both cores busy the whole time).

    python benchmarks/bench_batch.py --stacks 12 --shape 24 512 512 --workers 2 --threads-per-worker 1
"""

from __future__ import annotations

import argparse
import os
import resource
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ONE_PROCESS = """
import sys, time
from pathlib import Path
from napari_vessel import segment
from napari_vessel.io.stacks import load_volume, save_volume
src, out = Path(sys.argv[1]), Path(sys.argv[2])
out.mkdir(parents=True, exist_ok=True)
for path in sorted(src.glob("*.tif")):
    volume = load_volume(path, lazy=False)
    prob, labels, manifest = segment(volume, "tvnet", device="cpu")
    save_volume(out / f"{path.stem}_prob.tif", prob, volume.spacing_zyx)
    save_volume(out / f"{path.stem}_labels.tif", labels, volume.spacing_zyx, kind="labels")
"""


def write_stacks(folder: Path, n: int, shape: tuple[int, int, int]) -> None:
    from napari_vessel.data.phantom import make_phantom
    from napari_vessel.io.stacks import save_volume

    folder.mkdir(parents=True, exist_ok=True)
    for i in range(n):
        phantom = make_phantom(shape, seed=100 + i)
        save_volume(folder / f"stack{i:02d}.tif", phantom.image, phantom.spacing_zyx)


def timed(command: list[str]) -> tuple[float, float]:
    """(wall seconds, CPU seconds of the children) of one run."""
    before = resource.getrusage(resource.RUSAGE_CHILDREN)
    start = time.perf_counter()
    subprocess.run(command, check=True, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    wall = time.perf_counter() - start
    after = resource.getrusage(resource.RUSAGE_CHILDREN)
    return wall, (after.ru_utime - before.ru_utime) + (after.ru_stime - before.ru_stime)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--stacks", type=int, default=12)
    parser.add_argument("--shape", type=int, nargs=3, default=(24, 512, 512))
    parser.add_argument("--workers", type=int, default=2)
    parser.add_argument("--threads-per-worker", type=int, default=1)
    parser.add_argument("--repeats", type=int, default=2)
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        src = Path(tmp) / "stacks"
        write_stacks(src, args.stacks, tuple(args.shape))
        runs: dict[str, list[tuple[float, float]]] = {"one process": [], "batch": []}
        for r in range(args.repeats):
            out = Path(tmp) / f"out{r}"
            runs["one process"].append(timed([sys.executable, "-c", ONE_PROCESS, str(src),
                                              str(out / "single")]))
            runs["batch"].append(timed([sys.executable, "-m", "napari_vessel.cli", "batch",
                                        str(src), "-o", str(out / "batch"), "--quiet",
                                        "--workers", str(args.workers), "--threads-per-worker",
                                        str(args.threads_per_worker), "--dashboard", ":0"]))
            for name, values in runs.items():
                print(f"run {r + 1}: {name}: {values[-1][0]:.1f} s wall, {values[-1][1]:.1f} s "
                      f"CPU (load {os.getloadavg()[0]:.2f})", flush=True)
    voxels = args.stacks * int(args.shape[0]) * int(args.shape[1]) * int(args.shape[2])
    print(f"\n{args.stacks} stacks of {'x'.join(map(str, args.shape))} ({voxels / 1e6:.0f} M "
          f"voxels), {os.cpu_count()} cores, medians of {args.repeats}:\n")
    print("| run | wall (s) | CPU (s) | CPU use (cores busy) | Mvoxel/s |")
    print("|---|---|---|---|---|")
    for name, values in runs.items():
        wall = statistics.median(v[0] for v in values)
        cpu = statistics.median(v[1] for v in values)
        label = name if name == "one process" else (
            f"batch, {args.workers} workers x {args.threads_per_worker} thread(s)")
        print(f"| {label} | {wall:.1f} | {cpu:.1f} | {cpu / wall:.2f} | "
              f"{voxels / 1e6 / wall:.2f} |")


if __name__ == "__main__":
    main()
