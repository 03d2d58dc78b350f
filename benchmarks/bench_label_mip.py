"""Speed of the live label MIP and of autosave while painting.

Prints, and writes to ``docs/benchmarks-refine.md``:

1. time to update the label MIP after a brush stroke (incremental, :meth:`LabelMIP.update`)
   against recomputing the whole MIP, on 25x512x512 and 200x1024x1024 labels (uint8 and int32);
2. how long the editing thread waits in ``AutoSaver.editing(region)`` / ``mark_dirty`` while
   background saves run, against the time of one save.

Run from the repository root::

    .venv/bin/python benchmarks/bench_label_mip.py            # about a minute
    .venv/bin/python benchmarks/bench_label_mip.py --quick    # small stack only
"""

from __future__ import annotations

import argparse
import os
import platform
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from napari_vessel.projection import LabelMIP  # noqa: E402
from napari_vessel.refine.autosave import AutoSaver  # noqa: E402

RESULTS = Path(__file__).resolve().parents[1] / "docs" / "benchmarks-refine.md"


def make_labels(shape: tuple[int, int, int], dtype: str, rng: np.random.Generator) -> np.ndarray:
    """Labels with a few percent of voxels in random straight 'vessels' along x and y."""
    labels = np.zeros(shape, dtype=dtype)
    depth, height, width = shape
    for _ in range(max(shape) // 8):
        z, y, x = (int(rng.integers(0, s)) for s in shape)
        r = int(rng.integers(1, 4))
        if rng.random() < 0.5:
            labels[max(z - r, 0) : z + r, max(y - r, 0) : y + r, :] = rng.integers(1, 5)
        else:
            labels[max(z - r, 0) : z + r, :, max(x - r, 0) : x + r] = rng.integers(1, 5)
    return labels


def disk_stroke(shape, rng, radius: int = 10):
    """Bounding box (as napari's paint event gives it) and mask of a disk on one slice."""
    z = int(rng.integers(0, shape[0]))
    y = int(rng.integers(radius, shape[1] - radius))
    x = int(rng.integers(radius, shape[2] - radius))
    yy, xx = np.mgrid[-radius : radius + 1, -radius : radius + 1]
    key = (slice(z, z + 1), slice(y - radius, y + radius + 1), slice(x - radius, x + radius + 1))
    return key, (yy**2 + xx**2 <= radius**2)[None]


def drag_stroke(shape, rng, length: int = 300, radius: int = 10):
    """A diagonal drag: one disk box every ``radius`` pixels, as napari's interpolation makes."""
    z = int(rng.integers(0, shape[0]))
    y0 = int(rng.integers(radius, shape[1] - length - radius))
    x0 = int(rng.integers(radius, shape[2] - length - radius))
    keys = []
    for step in range(0, length, radius):
        y, x = y0 + step, x0 + step
        keys.append((slice(z, z + 1), slice(y - radius, y + radius + 1),
                     slice(x - radius, x + radius + 1)))
    return keys


def bench_mip(shape, dtype, rng, n_strokes: int) -> dict:
    labels = make_labels(shape, dtype, rng)
    label_mip = LabelMIP(labels)
    inc, full, drag = [], [], []
    for i in range(n_strokes):
        key, disk = disk_stroke(shape, rng)
        value = 0 if i % 2 else 7  # alternate painting and erasing
        region = labels[key]
        region[disk] = value
        start = time.perf_counter()
        label_mip.update(labels, key)
        inc.append(time.perf_counter() - start)
        if i < 10:
            start = time.perf_counter()
            LabelMIP(labels)
            full.append(time.perf_counter() - start)
    for _ in range(max(n_strokes // 10, 3)):
        keys = drag_stroke(shape, rng)
        for key in keys:
            labels[key] = 3
        start = time.perf_counter()
        label_mip.update(labels, keys)
        drag.append(time.perf_counter() - start)
    assert np.array_equal(label_mip.mip, labels.max(0)), "incremental MIP differs from full"
    slab = LabelMIP(labels, slab=(0, 10))
    start = time.perf_counter()
    for centre in range(5, 15):
        slab.set_slab(labels, (centre - 5, centre + 5))
    slab_time = (time.perf_counter() - start) / 10
    return {"shape": "x".join(map(str, shape)), "dtype": dtype,
            "inc_med": np.median(inc), "inc_max": np.max(inc), "drag_med": np.median(drag),
            "full_med": np.median(full), "slab": slab_time}


def bench_autosave(shape, rng, seconds: float) -> dict:
    labels = make_labels(shape, "uint8", rng)
    folder = tempfile.mkdtemp()
    saver = AutoSaver(labels, os.path.join(folder, "bench.vessel-recovery.npz"), interval_s=0.01)
    start = time.perf_counter()
    saver.start()  # the one full copy, on the calling thread
    first_copy = time.perf_counter() - start
    saver.mark_dirty()
    start = time.perf_counter()
    saver.save_now()
    save_time = time.perf_counter() - start
    size = os.path.getsize(saver.path)
    waits = []
    saves_before = saver.saves
    end = time.perf_counter() + seconds
    while time.perf_counter() < end:  # brush strokes while saves run back to back
        key, disk = disk_stroke(shape, rng)
        start = time.perf_counter()
        with saver.editing(key):
            labels[key][disk] = 1
        waits.append(time.perf_counter() - start)
        time.sleep(0.002)
    saves = saver.saves - saves_before
    saver.stop(flush=False)
    os.remove(saver.path)
    os.rmdir(folder)
    return {"shape": "x".join(map(str, shape)), "first_copy": first_copy, "save": save_time,
            "size_mb": size / 1e6, "saves": saves, "strokes": len(waits),
            "wait_med": np.median(waits), "wait_p99": np.percentile(waits, 99),
            "wait_max": np.max(waits)}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="only the 25x512x512 stack")
    parser.add_argument("--no-write", action="store_true", help="print only")
    args = parser.parse_args()
    rng = np.random.default_rng(0)
    shapes = [(25, 512, 512)] + ([] if args.quick else [(200, 1024, 1024)])
    mip_rows = [bench_mip(s, d, rng, 100) for s in shapes for d in ("uint8", "int32")]
    save_rows = [bench_autosave(s, rng, 3.0) for s in shapes]
    ms = 1e3
    lines = [
        "# Benchmarks: live label MIP and autosave",
        "",
        f"Command: `.venv/bin/python benchmarks/bench_label_mip.py{' --quick' if args.quick else ''}`"
        f"  ",
        f"Machine: {platform.processor() or platform.machine()}, {os.cpu_count()} CPU cores "
        f"(shared; load average {os.getloadavg()[0]:.1f} at the start), Python "
        f"{platform.python_version()}, NumPy {np.__version__}.",
        "",
        "## Label MIP after a brush stroke",
        "",
        "Stroke: a radius-10 disk on one slice (napari's paint event gives its bounding box),",
        "alternately painting and erasing (erasing needs the column recomputed). Drag: a 300-pixel",
        "diagonal drag, 30 dabs, given as one list of boxes (the columns are gathered). Full: a",
        "new `LabelMIP` of the whole stack. Slab: `set_slab` for 10 slices (slider moved).",
        "",
        "| labels | dtype | stroke, median (ms) | stroke, max (ms) | drag, median (ms) "
        "| full recompute (ms) | speed-up | slab of 10 (ms) |",
        "|---|---|---|---|---|---|---|---|",
    ]
    for r in mip_rows:
        lines.append(
            f"| {r['shape']} | {r['dtype']} | {r['inc_med'] * ms:.3f} | {r['inc_max'] * ms:.3f} "
            f"| {r['drag_med'] * ms:.2f} | {r['full_med'] * ms:.1f} "
            f"| {r['full_med'] / r['inc_med']:.0f}x | {r['slab'] * ms:.1f} |"
        )
    lines += [
        "",
        "Target: under 20 ms per stroke on the 200x1024x1024 stack.",
        "",
        "## Autosave while painting",
        "",
        "uint8 labels; strokes (radius-10 disks) are bracketed with `saver.editing(box)`, which",
        "copies the stroke's box on the painting thread; the background thread writes a compressed",
        "`.npz` every time it can (interval 0.01 s) for 3 s. Wait = time the painting thread spends",
        "in `editing()` per stroke, measured while saves run.",
        "",
        "| labels | start (one full copy, ms) | one save (ms) | file (MB) | saves during test "
        "| strokes | wait median (ms) | wait p99 (ms) | wait max (ms) |",
        "|---|---|---|---|---|---|---|---|---|",
    ]
    for r in save_rows:
        lines.append(
            f"| {r['shape']} | {r['first_copy'] * ms:.0f} | {r['save'] * ms:.0f} "
            f"| {r['size_mb']:.2f} | {r['saves']} | {r['strokes']} | {r['wait_med'] * ms:.3f} "
            f"| {r['wait_p99'] * ms:.3f} | {r['wait_max'] * ms:.1f} |"
        )
    text = "\n".join(lines) + "\n"
    print(text)
    if not args.no_write:
        RESULTS.parent.mkdir(exist_ok=True)
        RESULTS.write_text(text)
        print(f"written to {RESULTS}")


if __name__ == "__main__":
    main()
