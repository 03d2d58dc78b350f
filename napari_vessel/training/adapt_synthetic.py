"""Adaptation on synthetic vessels made to look like the volume (method ``"synthetic"``).

The other adaptation methods learn from the volume's own pixels without labels, so they can only
reinforce what the network already believes (or forget what it knew). This one trains on labels
that are exact: synthetic vessel volumes from :mod:`napari_vessel.data.synthetic` (generator 2, whose
dim branches and grainy interiors cover more of what a new microscope shows), drawn at the
volume's voxel size, preprocessed as the volume is, and then given the volume's intensity
histogram (quantile matching), so that background, vessels and noise span the same grey levels
as on the user's microscope. The network learns "a tube, as this microscope's intensities show
it"; since every label is exact it cannot drift into calling everything (or nothing) vessel.
Each batch also holds patches of the volume itself, where the leash of the other methods
(:class:`~.adapt.Leash`) keeps the parent's sure decisions and the amount of vessel, so what the
synthetic vessels teach changes only what the parent was unsure of; the drift guard on the
volume still watches the result.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Sequence
from typing import Any

import numpy as np
import torch

from napari_vessel.errors import InputError
from napari_vessel.training.data import LabelledPatchSampler as PairSampler
from napari_vessel.training.data import Pair
from napari_vessel.training.finetune_loss import forward_parts
from napari_vessel.training.losses import balanced_bce, soft_dice_loss

__all__ = ["SYNTHETIC_VOLUMES", "reference_quantiles", "match_quantiles", "matched_volumes",
           "SyntheticBatches", "SyntheticLoss"]

#: Synthetic volumes generated per run (about 0.2 s each on one core).
SYNTHETIC_VOLUMES = 24
#: Quantile levels used to describe the volume's histogram.
_LEVELS = 1001
#: Voxels of the volume read to estimate its histogram (a random sample beyond this).
_SAMPLE = 2_000_000


def reference_quantiles(image: np.ndarray, seed: int = 0) -> np.ndarray:
    """The volume's intensity quantiles at :data:`_LEVELS` evenly spaced levels.

    Parameters
    ----------
    image : ndarray
        The preprocessed volume (any shape); large ones are sampled (``_SAMPLE`` voxels).
    seed : int
        Seed of the sample.

    Returns
    -------
    ndarray of float32, shape (_LEVELS,)
    """
    flat = np.asarray(image, np.float32).ravel()
    if flat.size == 0:
        raise InputError("the volume is empty: there is no histogram to match")
    if flat.size > _SAMPLE:
        flat = flat[np.random.default_rng(seed).integers(0, flat.size, _SAMPLE)]
    return np.quantile(flat, np.linspace(0.0, 1.0, _LEVELS)).astype(np.float32)


def match_quantiles(source: np.ndarray, quantiles: np.ndarray) -> np.ndarray:
    """Give ``source`` the histogram described by ``quantiles`` (rank-preserving).

    Each voxel's rank in ``source`` (ties share their mean rank, so a flat background stays
    flat) is mapped through the reference's quantile function.

    Parameters
    ----------
    source : ndarray
        Any shape.
    quantiles : ndarray, shape (L,)
        Non-decreasing quantiles of the reference at levels ``linspace(0, 1, L)``.

    Returns
    -------
    ndarray of float32, shape of ``source``
    """
    values, inverse, counts = np.unique(np.asarray(source, np.float32).ravel(),
                                        return_inverse=True, return_counts=True)
    # mid-rank of each distinct value in [0, 1]
    upper = np.cumsum(counts)
    mid = (upper - 0.5 * counts) / max(int(upper[-1]), 1)
    levels = np.linspace(0.0, 1.0, len(quantiles))
    mapped = np.interp(mid, levels, quantiles).astype(np.float32)
    return mapped[inverse].reshape(np.shape(source))


def _synthetic_config(spacing_zyx: Sequence[float] | None, shape: Sequence[int],
                      labels: str = "exact"):
    """Generator ranges at the volume's voxel size (the defaults when it is unknown or odd)."""
    from napari_vessel.data.synthetic import GENERATOR_2, SyntheticConfig

    depth = int(min(max(int(shape[0]), 8), 24))
    base = SyntheticConfig(shape_zyx=(depth, 160, 160), labels=labels, **GENERATOR_2)
    if spacing_zyx is None:
        return base
    dz, dy, dx = (float(s) for s in spacing_zyx)
    dxy = math.sqrt(dy * dx)
    if not (0.05 <= dz <= 50 and 0.05 <= dxy <= 20):
        return base
    try:
        return SyntheticConfig(shape_zyx=(depth, 160, 160), spacing_z_um=(dz, dz),
                               spacing_xy_um=(dxy, dxy),
                               radius_um=(min(base.radius_um[0], 160 * dxy / 4), base.radius_um[1]),
                               labels=labels, **GENERATOR_2)
    except InputError:
        return base


def matched_volumes(image: np.ndarray, spacing_zyx: Sequence[float] | None,
                    prepare: Callable[[np.ndarray, tuple], np.ndarray], *,
                    count: int = SYNTHETIC_VOLUMES, seed: int = 0,
                    progress: Callable[[float, str], None] | None = None,
                    labels: str = "exact") -> list[Pair]:
    """Synthetic vessel volumes with exact labels that look like ``image``.

    Parameters
    ----------
    image : ndarray, shape (Z, Y, X)
        The volume to adapt to, preprocessed as the network sees it.
    spacing_zyx : (float, float, float) or None
        Its voxel size in µm; the synthetic vessels are drawn at it (None: random sizes).
    prepare : callable(raw, spacing) -> ndarray
        The network's preprocessing (the same as applied to ``image``).
    count : int
        Number of synthetic volumes (>= 1).
    seed : int
        Seed of the synthetic series.
    progress : callable(fraction, message), optional
    labels : {"exact", "visible"}
        The synthetic labels' convention (``SyntheticConfig.labels``).

    Returns
    -------
    list of Pair
        Images with ``image``'s intensity quantiles, and their labels.
    """
    from napari_vessel.data.synthetic import synthetic_volume

    if isinstance(count, bool) or not isinstance(count, int) or count < 1:
        raise InputError(f"the number of synthetic volumes must be a whole number >= 1, "
                         f"not {count!r}")
    quantiles = reference_quantiles(image, seed)
    config = _synthetic_config(spacing_zyx, image.shape, labels)
    pairs = []
    for i in range(count):
        vol = synthetic_volume(i, seed=int(seed), config=config)
        prepared = prepare(vol.image, vol.spacing_zyx)
        pairs.append(Pair(f"matched{seed}-{i}", match_quantiles(prepared, quantiles),
                          vol.labels > 0))
        if progress is not None:
            progress((i + 1) / count, f"synthetic vessels like this volume: {i + 1}/{count}")
    return pairs


class SyntheticBatches:
    """Training batches ``(x, valid, target, mask)``: matched synthetic patches, then patches of
    the volume itself.

    The first ``size`` patches are synthetic (half centred on a vessel voxel), with ``mask`` 1
    (their labels are exact); then ``size // 2`` (at least one) patches of the volume from
    ``real`` (a :class:`~.finetune_data.PatchSampler`), with ``mask`` 0 and ``target`` 0 (no
    label: the leash holds them to the parent). Without ``real`` only the synthetic patches.
    """

    def __init__(self, pairs: list[Pair], patch_size: Sequence[int], real: Any = None) -> None:
        self.sampler = PairSampler(pairs, tuple(int(p) for p in patch_size),
                                   foreground_fraction=0.5)
        self.real = real

    def batch(self, rng: np.random.Generator, size: int) -> list[np.ndarray]:
        images, labels = zip(*(self.sampler.sample(rng) for _ in range(size)), strict=True)
        x = np.stack(images)[:, None].astype(np.float32)
        y = np.stack(labels)[:, None].astype(np.float32)
        valid, mask = np.ones_like(x), np.ones_like(x)
        if self.real is None:
            return [x, valid, y, mask]
        rx, rvalid = self.real.batch(rng, max(1, size // 2))[:2]
        zeros = np.zeros_like(rx)
        return [np.concatenate([x, rx]), np.concatenate([valid, rvalid]),
                np.concatenate([y, zeros]), np.concatenate([mask, zeros])]


class SyntheticLoss:
    """The pretraining loss on the exact labels (``mask`` 1): 2 x class-balanced BCE + 0.5 x
    soft Dice; plus the ``leash`` (:class:`~.adapt.Leash`) on the volume's patches (``mask`` 0).
    """

    def __init__(self, spec: Any, leash: Callable[..., torch.Tensor] | None = None) -> None:
        self.spec, self.leash = spec, leash

    def __call__(self, model, x, valid, target, mask, *, probe: bool = False):
        prob, _, _, logits = forward_parts(model, x, self.spec, reconstruct=False)
        exact = valid * mask
        bce = balanced_bce(logits if logits is not None else prob, target, exact,
                           logits=logits is not None, clip=1e-3)
        dice = soft_dice_loss(prob, target, exact)
        total = 2.0 * bce + 0.5 * dice
        terms = {"bce": float(bce.detach()), "dice": float(dice.detach())}
        real = mask.flatten(1).amax(1) == 0  # the volume's own patches
        if self.leash is not None and bool(real.any()):
            total = total + self.leash(prob[real], x[real], valid[real], terms)
        terms["total"] = float(total.detach())
        return total, terms

