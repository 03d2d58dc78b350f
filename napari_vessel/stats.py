"""Intensity statistics of a stack, cheap even for stacks larger than memory."""

from __future__ import annotations

from typing import Any

import numpy as np

__all__ = ["intensity_stats", "mean_binary_entropy"]


def intensity_stats(data: Any, *, max_voxels: int = 4_000_000) -> dict[str, float]:
    """Summary statistics of a stack's intensities.

    Large or lazy (dask) stacks are summarised from a regular subsample of at most ``max_voxels``
    voxels (every k-th slice, row and column), so the call stays fast.

    Parameters
    ----------
    data : array-like, shape (Z, Y, X)
        NumPy or dask array.
    max_voxels : int
        Largest number of voxels read.

    Returns
    -------
    dict
        ``min``, ``max``, ``mean``, ``std``, ``p1``, ``p50``, ``p99``, ``nan`` (count of
        non-finite voxels in the sample) and ``sampled`` (True when a subsample was used).
    """
    size = int(np.prod(data.shape))
    step = 1
    while size / step**data.ndim > max_voxels:
        step += 1
    sample = data[(slice(None, None, step),) * data.ndim]
    sample = np.asarray(sample, dtype=np.float64)
    finite = np.isfinite(sample)
    values = sample[finite]
    if values.size == 0:
        nan = float("nan")
        return {"min": nan, "max": nan, "mean": nan, "std": nan, "p1": nan, "p50": nan,
                "p99": nan, "nan": int(sample.size), "sampled": step > 1}
    p1, p50, p99 = np.percentile(values, [1, 50, 99])
    return {
        "min": float(values.min()),
        "max": float(values.max()),
        "mean": float(values.mean()),
        "std": float(values.std()),
        "p1": float(p1),
        "p50": float(p50),
        "p99": float(p99),
        "nan": int(sample.size - values.size),
        "sampled": step > 1,
    }


def mean_binary_entropy(prob: Any, *, eps: float = 1e-6) -> float:
    """Mean binary entropy, in bits, of a probability map: how unsure a model is of a volume.

    ``-(p log2 p + (1 - p) log2 (1 - p))`` averaged over voxels: 0 when every voxel is 0 or 1,
    1 when every voxel is 0.5.

    Parameters
    ----------
    prob : array-like
        Probabilities in [0, 1] (clipped to ``[eps, 1 - eps]``).
    eps : float
        Clip, so that 0 and 1 give (almost) no entropy instead of NaN.

    Returns
    -------
    float
    """
    p = np.clip(np.asarray(prob, dtype=np.float64), eps, 1 - eps)
    if p.size == 0:
        return 0.0
    return float(np.mean(-(p * np.log2(p) + (1 - p) * np.log2(1 - p))))
