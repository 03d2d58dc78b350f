"""Exact 3x3x3 median filter built from min/max networks over shifted NumPy views.

``scipy.ndimage.median_filter(size=3)`` runs a generic selection per voxel. Here the 27-voxel median
is split into three stages whose work is shared between neighbouring windows:

A. sort each z-column of 3 voxels (shared by the 9 windows that contain the column);
B. merge the three sorted columns of rows ``y-1, y, y+1`` into a sorted list of 9 (shared by the 3
   windows along x);
C. select rank 13 of the three sorted 9-lists at ``x-1, x, x+1``.

Each stage is a comparator network made of Batcher's odd-even merges and pruned to the outputs
that are needed, so a comparator whose maximum is never used costs a single ``np.minimum``. The
networks are verified on every 0-1 input (the 0-1 principle) by :func:`verify_networks`. Planes are processed
one at a time (so the temporaries stay in the CPU cache) by a small pool of threads; NumPy releases
the GIL inside ``np.minimum`` / ``np.maximum``. Borders repeat the edge voxel, which for size 3 is
exactly SciPy's default ``mode="reflect"``.
"""

from __future__ import annotations

import itertools
import os
from concurrent.futures import ThreadPoolExecutor
from functools import lru_cache

import numpy as np

__all__ = ["median3x3x3", "verify_networks"]


class _Net:
    """A straight-line program of min/max operations on numbered values (inputs first)."""

    def __init__(self, n_inputs: int) -> None:
        self.n_inputs = n_inputs
        self.ops: list[tuple[str, int, int]] = []  # value n_inputs + i is ops[i]

    def compare(self, a: int, b: int) -> tuple[int, int]:
        self.ops.append(("min", a, b))
        self.ops.append(("max", a, b))
        n = self.n_inputs + len(self.ops)
        return n - 2, n - 1

    def merge(self, first: list[int], second: list[int]) -> list[int]:
        """Batcher's odd-even merge of two sorted lists of any lengths."""
        if not first or not second:
            return list(first or second)
        if len(first) == 1 and len(second) == 1:
            return list(self.compare(first[0], second[0]))
        evens = self.merge(first[0::2], second[0::2])
        odds = self.merge(first[1::2], second[1::2])
        out = [evens[0]]
        rest_e, rest_o = evens[1:], odds
        for e, o in zip(rest_e, rest_o, strict=False):
            lo, hi = self.compare(o, e)
            out += [lo, hi]
        k = min(len(rest_e), len(rest_o))
        return out + rest_o[k:] + rest_e[k:]

    def program(self, outputs: list[int]) -> tuple[list, list[int], list[tuple[int, ...]]]:
        """Keep only the operations the outputs depend on.

        Returns ``(ops, outputs, release)`` where ``release[i]`` lists the temporaries that are no
        longer needed after operation ``i`` (their buffers are reused).
        """
        needed = set(outputs)
        for i in range(len(self.ops) - 1, -1, -1):
            if self.n_inputs + i in needed:
                needed.update(self.ops[i][1:])
        ops = [
            (kind, a, b, self.n_inputs + i)
            for i, (kind, a, b) in enumerate(self.ops)
            if self.n_inputs + i in needed
        ]
        last_use: dict[int, int] = {}
        for i, (_, a, b, _) in enumerate(ops):
            last_use[a] = last_use[b] = i
        release: list[list[int]] = [[] for _ in ops]
        for v, i in last_use.items():
            if v >= self.n_inputs and v not in outputs:
                release[i].append(v)
        return ops, outputs, [tuple(r) for r in release]


def _run(program, inputs: list) -> list:
    """Evaluate a program on arrays (temporaries are recycled) or on plain numbers."""
    ops, outputs, release = program
    values: dict[int, object] = dict(enumerate(inputs))
    free: list[np.ndarray] = []
    for (kind, a, b, dst), done in zip(ops, release, strict=True):
        x, y = values[a], values[b]
        if isinstance(x, np.ndarray):
            buf = free.pop() if free else np.empty_like(x)
            (np.minimum if kind == "min" else np.maximum)(x, y, out=buf)
            values[dst] = buf
        else:  # plain Python numbers, used to check the networks
            values[dst] = min(x, y) if kind == "min" else max(x, y)
        for v in done:
            old = values.pop(v)
            if isinstance(old, np.ndarray):
                free.append(old)
    return [values[o] for o in outputs]


@lru_cache(maxsize=1)
def _programs():
    """Build (and check) the three stage programs."""
    # Stage A: sort 3 values.
    net_a = _Net(3)
    stage_a = net_a.program(net_a.merge(net_a.merge([0], [1]), [2]))
    # Stage B: merge three sorted triples (inputs 0-2, 3-5, 6-8) into a sorted 9-list.
    net_b = _Net(9)
    stage_b = net_b.program(net_b.merge(net_b.merge([0, 1, 2], [3, 4, 5]), [6, 7, 8]))
    # Stage C: rank 13 of three sorted 9-lists (inputs 0-8, 9-17, 18-26).
    net_c = _Net(27)
    lists = [list(range(0, 9)), list(range(9, 18)), list(range(18, 27))]
    merged = net_c.merge(net_c.merge(lists[0], lists[1]), lists[2])
    stage_c = net_c.program([merged[13]])
    return stage_a, stage_b, stage_c


def verify_networks() -> None:
    """Check the three networks on every 0-1 input (sufficient for min/max networks).

    Run by the test suite (it takes about a second, so it is not repeated at import).
    """
    stage_a, stage_b, stage_c = _programs()
    ok = all(_run(stage_a, list(b)) == sorted(b) for b in itertools.product((0, 1), repeat=3))
    triples = [(0, 0, 0), (0, 0, 1), (0, 1, 1), (1, 1, 1)]
    for t in itertools.product(triples, repeat=3):
        values = [v for triple in t for v in triple]
        ok = ok and _run(stage_b, values) == sorted(values)
    for ones in itertools.product(range(10), repeat=3):
        values = [int(i >= 9 - k) for k in ones for i in range(9)]
        ok = ok and _run(stage_c, values) == [sorted(values)[13]]
    if not ok:  # pragma: no cover - would be a bug in the network construction
        raise RuntimeError("the 3x3x3 median network failed its 0-1 check")


def _plane(padded: np.ndarray, z: int, out: np.ndarray, band: int = 32) -> None:
    """Median of output plane ``z`` from the edge-padded volume, in bands of rows.

    Each band is handled as flat, contiguous 1D arrays: in a padded plane of width ``W`` a shift
    by one row is an offset of ``W`` and a shift by one column an offset of 1, so every shifted view
    is contiguous (SIMD-friendly) and the temporaries of a band stay in the CPU cache.
    """
    stage_a, stage_b, stage_c = _programs()
    n_y, n_x = out.shape
    width = padded.shape[2]
    for y0 in range(0, n_y, band):
        n_rows = min(band, n_y - y0)
        planes = [padded[z + dz, y0 : y0 + n_rows + 2].reshape(-1) for dz in range(3)]
        cols = _run(stage_a, planes)
        length = n_rows * width
        rows = [c[r * width : r * width + length] for r in range(3) for c in cols]
        sorted9 = _run(stage_b, rows)
        windows = [s[r : r + length - 2] for r in range(3) for s in sorted9]
        (median,) = _run(stage_c, windows)
        flat = np.empty(length, dtype=out.dtype)
        flat[: length - 2] = median
        out[y0 : y0 + n_rows] = flat.reshape(n_rows, width)[:, :n_x]


def median3x3x3(image: np.ndarray, *, workers: int | None = None) -> np.ndarray:
    """Exact 3x3x3 median of a 3D float array (edge-repeating borders).

    Parameters
    ----------
    image : ndarray, shape (Z, Y, X)
        Finite values; any real dtype (the output keeps it).
    workers : int, optional
        Threads to use; default: the number of CPU cores (at most 4).

    Returns
    -------
    ndarray, shape (Z, Y, X)
        Equal to ``scipy.ndimage.median_filter(image, size=3)``.
    """
    image = np.asarray(image)
    padded = np.pad(image, 1, mode="edge")
    out = np.empty_like(image)
    n_z = image.shape[0]
    workers = workers or min(os.cpu_count() or 1, 4)
    _programs()  # build once, outside the threads

    def _do(z_range: range) -> None:
        for z in z_range:
            _plane(padded, z, out[z])

    if workers <= 1 or n_z < 2:
        _do(range(n_z))
    else:
        parts = [range(i, n_z, workers) for i in range(workers)]
        with ThreadPoolExecutor(workers) as pool:
            list(pool.map(_do, parts))
    return out
