"""Seconds and peak memory of the vessel graph on phantom labels of a given size.

Run from the repository root, one size per process so the peak memory is that size's::

    .venv/bin/python benchmarks/bench_graph.py --shape 25 512 512
    .venv/bin/python benchmarks/bench_graph.py --shape 100 1024 1024 --spacing 2 1 1

The labels are a phantom's exact vessel labels (:func:`napari_vessel.data.phantom.make_phantom`), made
in one child process and measured in another, so the peak memory is the graph's.
The first call compiles the thinning and skan's Numba code; it is timed apart (``warm-up``) on a
small volume, so the figure is what a second analysis costs, as in the dock.
"""

from __future__ import annotations

import argparse
import os
import resource
import sys
import tempfile
import time

import numpy as np


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--shape", type=int, nargs=3, default=(25, 512, 512))
    parser.add_argument("--spacing", type=float, nargs=3, default=(2.0, 1.0, 1.0))
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--labels-npy", default=None, help=argparse.SUPPRESS)
    parser.add_argument("--make", default=None, help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.make is not None:  # child 1: make the phantom's labels
        from napari_vessel.data.phantom import make_phantom

        np.save(args.make, make_phantom(tuple(args.shape), seed=args.seed,
                                        spacing_zyx=tuple(args.spacing)).labels > 0)
        return
    if args.labels_npy is None:  # this process stays small: both steps run as children
        import subprocess

        path = os.path.join(tempfile.mkdtemp(prefix="bench-graph-"), "labels.npy")
        subprocess.check_call([sys.executable, __file__, *sys.argv[1:], "--make", path])
        sys.exit(subprocess.call([sys.executable, __file__, *sys.argv[1:], "--labels-npy", path]))
    os.environ.setdefault("NUMBA_NUM_THREADS", "1")
    from napari_vessel.data.phantom import make_phantom
    from napari_vessel.graph import vessel_graph

    t0 = time.perf_counter()
    vessel_graph(make_phantom((8, 64, 64), seed=1).labels > 0, args.spacing)
    warm = time.perf_counter() - t0
    labels = np.load(args.labels_npy)
    os.remove(args.labels_npy)
    before = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    t0 = time.perf_counter()
    graph = vessel_graph(labels, args.spacing)
    seconds = time.perf_counter() - t0
    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    s = graph.summary
    print(f"shape {tuple(args.shape)} at {tuple(args.spacing)} µm, {np.count_nonzero(labels):,} "
          f"vessel voxels: {seconds:.1f} s (warm-up {warm:.1f} s), peak resident memory "
          f"{peak:.0f} MB ({before:.0f} MB before the graph); {s.n_segments} segments, total "
          f"length {s.total_length_um:.0f} µm")


if __name__ == "__main__":
    main()
