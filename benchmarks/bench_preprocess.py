"""Speed and peak memory of every preprocessing operation against the obvious SciPy/scikit-image code.

Run from the repository root::

    .venv/bin/python benchmarks/bench_preprocess.py                # 64 x 512 x 512 float32
    .venv/bin/python benchmarks/bench_preprocess.py --shape 16 256 256 --write docs/x.md

Each operation and its reference run once on the same volume in the same process; the table gives
the wall time, the ratio (reference time / ours: above 1 means faster), the peak memory allocated
during the call (tracemalloc; NumPy reports its buffers to it) and whether the results agree.
"""

from __future__ import annotations

import argparse
import os
import platform
import sys
import time
import tracemalloc
from collections.abc import Callable

import dask.array as da
import numpy as np
from scipy import ndimage as ndi
from skimage.exposure import equalize_adapthist

from napari_vessel import preprocess as pp
from napari_vessel.preprocess.clahe import clahe_kernel

MB = 2**20

TITLE = "# Preprocessing speed and memory"
NOTES = """\
How to read it: *speed-up* is the reference's time divided by ours (above 1: ours is faster);
*peak* is the memory allocated during the call (tracemalloc), beyond the input volume. Every
operation and its reference ran once, one after the other, in the same process, on a shared
machine (other jobs were running, so absolute times vary by about a factor of two between runs;
the ratios are the meaningful part).

- *identical*: the same voxels. *max diff ... (rel.)*: ours computes global statistics
  (percentiles, mean/std, the scaling factor) on a regular subsample of at most 4 million voxels of
  every slice, so NumPy and dask input give exactly the same result; the reference uses all
  voxels.
- *different method*: `depth_correct` also smooths and limits the per-slice gains; `clahe` follows
  scikit-image's tiles, quantisation and clipping (tests check agreement within 1e-3 after
  scikit-image's final min-max stretch), but returns the un-stretched mapping and uses the stack's
  grey-level range for every slice.
- `median3d` is exact (tests compare with `scipy.ndimage.median_filter` voxel for voxel): min/max
  networks over contiguous shifted views, processed in bands of rows, on a few threads.
- The dask row includes measuring the global percentiles (one pass over the lazy graph) and then
  computing the result (a second pass), slab by slab as `napari-vessel preprocess` and the widget
  do; it equals the NumPy result.
"""


def measure(func: Callable[[], object]) -> tuple[float, float, object]:
    """Wall time (s), peak traced memory (MB) and the result of ``func()``."""
    tracemalloc.start()
    start = time.perf_counter()
    result = func()
    seconds = time.perf_counter() - start
    peak = tracemalloc.get_traced_memory()[1] / MB
    tracemalloc.stop()
    return seconds, peak, result


def make_volume(shape: tuple[int, int, int], seed: int = 0) -> np.ndarray:
    """A two-photon-like float32 volume: noisy background, bright tubes, signal fading with depth."""
    rng = np.random.default_rng(seed)
    n_z, n_y, n_x = shape
    yy, xx = np.mgrid[:n_y, :n_x]
    tubes = np.zeros((n_y, n_x), np.float32)
    for _ in range(12):
        angle, offset = rng.uniform(0, np.pi), rng.uniform(0, max(n_y, n_x))
        distance = np.abs(np.cos(angle) * yy + np.sin(angle) * xx - offset)
        tubes += np.exp(-(distance / rng.uniform(1.5, 6.0)) ** 2)
    fade = np.exp(-np.arange(n_z) / (n_z / 1.5)).astype(np.float32)[:, None, None]
    volume = rng.gamma(2.0, 50.0, shape).astype(np.float32) + 2000.0 * tubes[None] * fade
    return volume.astype(np.float32)


# ----------------------------------------------------------------------------- the references
def ref_subtract(v):
    return np.stack([np.maximum(s - np.median(s), 0) for s in v])


def ref_depth(v, low=5.0, high=99.5):
    levels = np.array([np.percentile(s, [low, high]) for s in v])
    target = np.median(levels, axis=0)
    gain = (target[1] - target[0]) / (levels[:, 1] - levels[:, 0])
    return ((v - levels[:, :1, None]) * gain[:, None, None] + target[0]).astype(np.float32)


def ref_scale(v, profile):
    mine = np.percentile(v, profile["percentiles"])
    factor = np.median(np.asarray(profile["values"]) / mine)
    return v * np.float32(factor)


def ref_clahe2d(v):
    lo, hi = v.min(), v.max()
    return np.stack([equalize_adapthist((s - lo) / (hi - lo)) for s in v])


def ref_focus(stack, window=9, smooth=5):
    focus = np.stack([ndi.uniform_filter(ndi.laplace(s) ** 2, window) for s in stack])
    depth = ndi.median_filter(np.argmax(focus, axis=0), smooth, mode="nearest")
    return np.take_along_axis(stack, depth[None], axis=0)[0]


def ref_focus_stack(stack, depth_window=5, window=9, smooth=5):
    half, out = depth_window // 2, np.empty_like(stack)
    for z in range(len(stack)):
        out[z] = ref_focus(stack[max(0, z - half) : z + half + 1], window, smooth)
    return out


def ref_stretch(v, low=1.0, high=99.8):
    lo, hi = np.percentile(v, [low, high])
    return np.clip((v - lo) / (hi - lo), 0, 1)


def ref_2pm(v):
    return ref_stretch(ndi.median_filter(ref_subtract(v), size=3))


def _agree(ours, reference) -> str:
    ours, reference = np.asarray(ours, np.float64), np.asarray(reference, np.float64)
    if ours.shape != reference.shape:
        return "shape differs"
    if np.array_equal(ours, reference):
        return "identical"
    scale = max(float(np.abs(reference).max()), 1e-12)
    return f"max diff {np.abs(ours - reference).max() / scale:.1e} (rel.)"


def cases(v: np.ndarray, spacing=(5.0, 1.0, 1.0)) -> list[tuple[str, Callable, str, Callable, bool]]:
    """(name, ours, reference name, reference, compare results?)"""
    profile = pp.intensity_profile(v * 16)
    unit = (v - v.min()) / (v.max() - v.min())
    kernel = clahe_kernel(v.shape, None, "3d", spacing)
    fused = v[: min(len(v), 16)]
    return [
        ("median_subtract", lambda: pp.subtract_slice_median(v), "np.median per slice",
         lambda: ref_subtract(v), True),
        ("median3d (size 3)", lambda: pp.median_filter3d(v), "scipy.ndimage.median_filter",
         lambda: ndi.median_filter(v, size=3), True),
        ("depth_correct", lambda: pp.correct_depth_attenuation(v, smooth=1),
         "np.percentile per slice", lambda: ref_depth(v), False),
        ("histogram_scale (estimate + scale)",
         lambda: pp.scale_intensity(v, pp.estimate_scale_factor(v, profile)),
         "np.percentile on all voxels", lambda: ref_scale(v, profile), True),
        ("clahe 2d", lambda: pp.equalize_clahe(v), "equalize_adapthist per slice",
         lambda: ref_clahe2d(v), False),
        (f"clahe 3d, kernel {kernel}", lambda: pp.equalize_clahe(v, mode="3d", spacing_zyx=spacing),
         "equalize_adapthist 3D, same kernel",
         lambda: equalize_adapthist(unit, kernel_size=kernel), False),
        (f"fuse_focus ({len(fused)} slices)", lambda: pp.fuse_focus(fused).image,
         "ndimage.laplace per slice", lambda: ref_focus(fused), True),
        ("focus_stack (window 5)", lambda: pp.focus_stack(v), "fuse every window anew",
         lambda: ref_focus_stack(v), True),
        ("zscore", lambda: pp.zscore(v), "(v - mean) / std",
         lambda: (v - v.mean()) / v.std(), True),
        ("normalize (percentiles)", lambda: pp.percentile_stretch(v),
         "np.percentile + clip", lambda: ref_stretch(v), True),
        ("DEFAULT_2PM pipeline", lambda: pp.DEFAULT_2PM.apply(v),
         "the three reference steps", lambda: ref_2pm(v), True),
        ("DEFAULT_2PM on dask, 16-slice chunks",
         lambda: pp.compute(pp.DEFAULT_2PM.apply(da.from_array(v, chunks=(16, -1, -1)))),
         "the three reference steps", lambda: ref_2pm(v), True),
    ]


def preview_times(v: np.ndarray) -> str:
    """Milliseconds for the live previews a widget calls on one slice."""
    z = len(v) // 2
    parts = []
    for label, func in (("DEFAULT_2PM.preview(slice)", lambda: pp.DEFAULT_2PM.preview(v[z])),
                        ("DEFAULT_CONFOCAL.preview(slice)",
                         lambda: pp.DEFAULT_CONFOCAL.preview(v[z])),
                        ("DEFAULT_2PM.preview_plane(volume, z)",
                         lambda: pp.DEFAULT_2PM.preview_plane(v, z))):
        func()  # warm up
        start = time.perf_counter()
        for _ in range(5):
            func()
        parts.append(f"{label}: {(time.perf_counter() - start) / 5 * 1000:.0f} ms")
    return "Live preview of one slice: " + "; ".join(parts) + "."


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--shape", type=int, nargs=3, default=(64, 512, 512))
    parser.add_argument("--only", default="", help="run the cases whose name contains this")
    parser.add_argument("--write", default=None, help="also write the table to this Markdown file")
    args = parser.parse_args(argv)
    volume = make_volume(tuple(args.shape))
    rows = []
    for name, ours, ref_name, reference, compare in cases(volume):
        if args.only and args.only not in name:
            continue
        t_ours, m_ours, r_ours = measure(ours)
        t_ref, m_ref, r_ref = measure(reference)
        agree = _agree(r_ours, r_ref) if compare else "different method (see notes)"
        rows.append(f"| {name} | {t_ours:.2f} | {m_ours:.0f} | {ref_name} | {t_ref:.2f} | "
                    f"{m_ref:.0f} | {t_ref / t_ours:.1f}x | {agree} |")
        print(rows[-1], flush=True)
    shape = "x".join(map(str, args.shape))
    command = "python benchmarks/bench_preprocess.py " + " ".join(argv or sys.argv[1:])
    header = [
        f"Volume {shape} float32 ({volume.nbytes / MB:.0f} MB); {os.cpu_count()} CPU cores; "
        f"Python {platform.python_version()}, NumPy {np.__version__}; load average before the "
        f"run {os.getloadavg()[0]:.1f}.",
        f"Command: `{command.strip()}`",
        "",
        "| operation | ours (s) | ours peak (MB) | reference | ref. (s) | ref. peak (MB) | "
        "speed-up | results |",
        "|---|---|---|---|---|---|---|---|",
    ]
    table = "\n".join(header + rows + ["", preview_times(volume)])
    print()
    print(table)
    if args.write:
        with open(args.write, "w", encoding="utf-8") as handle:
            handle.write(f"{TITLE}\n\n{table}\n\n{NOTES}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
