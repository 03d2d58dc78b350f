"""Supervised training of the vessel networks (TV-Net recipe of paper 001, plus soft-clDice).

The loss is eq. 3 of paper 001, balanced binary cross-entropy (eq. 1) + alpha x 3D total variation
of the probability with Sobel derivatives (eq. 2), with the weight decay of AdamW as the L2 term,
plus an optional soft Dice and the soft-clDice of paper 004 (eq. 3-4) that rewards keeping thin
vessels connected. Patches are sampled half on vessel voxels and heavily augmented
(:func:`~napari_vessel.training.data.augment`). Everything random flows from one seed.

After training, the probability threshold is chosen on the *training* volumes (best mean F1) and
stored with the model, so a held-out volume never influences it.
"""

from __future__ import annotations

import json
import math
import os
import time
from collections.abc import Callable
from dataclasses import asdict, dataclass, field
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from ..errors import InputError
from ..progress import CancelToken, Progress, no_progress
from .data import Pair, PatchSampler, augment

__all__ = ["TrainConfig", "TrainResult", "train", "predict_volume", "choose_threshold",
           "balanced_bce", "tv_loss_3d", "soft_dice_loss", "soft_cldice_loss", "f1_score"]


@dataclass(frozen=True)
class TrainConfig:
    """Settings of one supervised training run (saved in the model card).

    Parameters
    ----------
    steps : int
        Optimiser steps; the learning-rate schedule (warm-up then cosine) spans them.
    batch_size : int
        Patches per step.
    patch_size : (int, int, int)
        Training patch (Z, Y, X).
    lr, weight_decay : float
        AdamW settings (weight decay is the gamma term of paper 001 eq. 3).
    tv_weight, dice_weight, cldice_weight : float
        Weights of the total-variation, soft Dice and soft-clDice terms (balanced BCE has weight 1).
    foreground_fraction : float
        Share of patches centred on a vessel voxel.
    z_subsample : float
        Probability of a patch with every second slice (a coarser Z step).
    augment_strength : float
        Scale of the intensity augmentation.
    seed : int
        Seed of every random choice (weights, patches, augmentation).
    minutes : float or None
        Wall-clock cap; the run stops early (and says so in the result) when it is reached.
    checkpoint_every : int
        Steps between atomic checkpoints (0: none).
    """

    steps: int = 800
    batch_size: int = 4
    patch_size: tuple[int, int, int] = (8, 64, 64)
    lr: float = 3e-3
    weight_decay: float = 1e-2
    tv_weight: float = 0.05
    dice_weight: float = 0.5
    cldice_weight: float = 0.0
    foreground_fraction: float = 0.5
    z_subsample: float = 0.25
    augment_strength: float = 1.0
    seed: int = 0
    minutes: float | None = None
    checkpoint_every: int = 250
    extra: dict = field(default_factory=dict)


@dataclass
class TrainResult:
    """What :func:`train` returns: the trained model (eval mode) and its record."""

    model: nn.Module
    steps: int
    minutes: float
    losses: list[float]
    threshold: float
    train_f1: dict[str, float]


# -- losses -----------------------------------------------------------------------------------

def balanced_bce(logits: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
    """Class-balanced BCE, paper 001 eq. 1, with beta = |Y-|/|Y| from the batch (mean over voxels)."""
    beta = 1.0 - target.mean().clamp(1e-3, 1 - 1e-3)
    weight = beta * target + (1 - beta) * (1 - target)
    return 2.0 * F.binary_cross_entropy_with_logits(logits, target, weight=weight)


def _sobel_kernels(dtype: torch.dtype) -> torch.Tensor:
    smooth = torch.tensor([1.0, 2.0, 1.0], dtype=dtype)
    diff = torch.tensor([-1.0, 0.0, 1.0], dtype=dtype)
    kz = diff[:, None, None] * smooth[None, :, None] * smooth[None, None, :]
    ky = smooth[:, None, None] * diff[None, :, None] * smooth[None, None, :]
    kx = smooth[:, None, None] * smooth[None, :, None] * diff[None, None, :]
    return torch.stack([kz, ky, kx])[:, None] / 16.0


def tv_loss_3d(prob: torch.Tensor) -> torch.Tensor:
    """Mean 3D total variation |dz| + |dy| + |dx| of a probability map with Sobel operators (eq. 2)."""
    grads = F.conv3d(F.pad(prob, (1, 1, 1, 1, 1, 1), mode="replicate"),
                     _sobel_kernels(prob.dtype))
    return grads.abs().sum(dim=1).mean()


def soft_dice_loss(prob: torch.Tensor, target: torch.Tensor, eps: float = 1.0) -> torch.Tensor:
    """1 - soft Dice over the whole batch."""
    inter = (prob * target).sum()
    return 1 - (2 * inter + eps) / (prob.sum() + target.sum() + eps)


def _soft_erode(x: torch.Tensor) -> torch.Tensor:
    a = -F.max_pool3d(-x, (3, 1, 1), 1, (1, 0, 0))
    b = -F.max_pool3d(-x, (1, 3, 1), 1, (0, 1, 0))
    c = -F.max_pool3d(-x, (1, 1, 3), 1, (0, 0, 1))
    return torch.minimum(torch.minimum(a, b), c)


def _soft_skeleton(x: torch.Tensor, iterations: int) -> torch.Tensor:
    """Soft skeleton of paper 004 (algorithm 1) with min/max pooling."""
    def opening(t: torch.Tensor) -> torch.Tensor:
        return F.max_pool3d(_soft_erode(t), 3, 1, 1)

    skel = F.relu(x - opening(x))
    for _ in range(iterations):
        x = _soft_erode(x)
        delta = F.relu(x - opening(x))
        skel = skel + F.relu(delta - skel * delta)
    return skel


def soft_cldice_loss(prob: torch.Tensor, target: torch.Tensor, iterations: int = 3,
                     eps: float = 1.0) -> torch.Tensor:
    """1 - soft clDice (paper 004, eq. 3-4): topology precision and sensitivity of skeletons."""
    skel_p, skel_t = _soft_skeleton(prob, iterations), _soft_skeleton(target, iterations)
    tprec = ((skel_p * target).sum() + eps) / (skel_p.sum() + eps)
    tsens = ((skel_t * prob).sum() + eps) / (skel_t.sum() + eps)
    return 1 - 2 * tprec * tsens / (tprec + tsens)


def _loss(logits: torch.Tensor, target: torch.Tensor, cfg: TrainConfig) -> torch.Tensor:
    prob = torch.sigmoid(logits)
    loss = balanced_bce(logits, target) + cfg.tv_weight * tv_loss_3d(prob)
    if cfg.dice_weight:
        loss = loss + cfg.dice_weight * soft_dice_loss(prob, target)
    if cfg.cldice_weight:
        loss = loss + cfg.cldice_weight * soft_cldice_loss(prob, target)
    return loss


# -- prediction and scoring -------------------------------------------------------------------

@torch.inference_mode()
def predict_volume(model: nn.Module, image: np.ndarray, *, tile: int = 256,
                   overlap: int = 32) -> np.ndarray:
    """Vessel probability of a normalised (Z, Y, X) volume, full depth, tiled in Y and X.

    A small stand-alone sliding window used for validation; the plugin's engine is
    :mod:`napari_vessel.inference`.
    """
    model.eval()
    z, y, x = image.shape
    out = np.zeros(image.shape, np.float32)
    step = tile - 2 * overlap
    for y0 in range(0, y, step):
        for x0 in range(0, x, step):
            ya, xa = max(0, y0 - overlap), max(0, x0 - overlap)
            yb, xb = min(y, y0 + step + overlap), min(x, x0 + step + overlap)
            patch = torch.from_numpy(np.ascontiguousarray(image[:, ya:yb, xa:xb]))[None, None]
            prob = torch.sigmoid(model(patch))[0, 0].numpy()
            ye, xe = min(y, y0 + step), min(x, x0 + step)
            out[:, y0:ye, x0:xe] = prob[:, y0 - ya: ye - ya, x0 - xa: xe - xa]
    return out


def f1_score(pred: np.ndarray, labels: np.ndarray) -> float:
    """Dice / F1 of two boolean arrays (1.0 when both are empty)."""
    tp = np.count_nonzero(pred & labels)
    total = np.count_nonzero(pred) + np.count_nonzero(labels)
    return 1.0 if total == 0 else 2 * tp / total


def choose_threshold(probs: list[np.ndarray], labels: list[np.ndarray],
                     candidates: np.ndarray | None = None) -> tuple[float, list[float]]:
    """The threshold with the best mean F1 over volumes, and the per-volume F1 at it."""
    candidates = np.arange(0.05, 0.96, 0.025) if candidates is None else candidates
    table = np.array([[f1_score(p > t, lab) for t in candidates]
                      for p, lab in zip(probs, labels, strict=True)])
    best = int(np.argmax(table.mean(axis=0)))
    return float(candidates[best]), table[:, best].tolist()


# -- the loop ---------------------------------------------------------------------------------

def _schedule(step: int, total: int, warmup: int = 50) -> float:
    if step < warmup:
        return (step + 1) / warmup
    return 0.5 * (1 + math.cos(math.pi * min(1.0, (step - warmup) / max(1, total - warmup))))


def save_checkpoint(model: nn.Module, path: str | Path, info: dict) -> None:
    """Write model weights (safetensors) and ``info`` (JSON) atomically: tmp file + os.replace."""
    from safetensors.torch import save_file

    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    state = {k: v.detach().contiguous().clone() for k, v in model.state_dict().items()}
    tmp = path.with_name(path.name + ".tmp")
    save_file(state, str(tmp))
    os.replace(tmp, path)
    meta = path.with_suffix(".json")
    tmp_meta = meta.with_name(meta.name + ".tmp")
    tmp_meta.write_text(json.dumps(info, indent=1))
    os.replace(tmp_meta, meta)


def train(model: nn.Module, pairs: list[Pair], config: TrainConfig | None = None, *,
          extra_pairs: list[Pair] | None = None, checkpoint: str | Path | None = None,
          progress: Progress | None = None, cancel: CancelToken | None = None,
          log: Callable[[str], None] | None = None) -> TrainResult:
    """Train ``model`` on labelled volumes and choose its threshold on them.

    Parameters
    ----------
    model : nn.Module
        A network mapping (N, 1, Z, Y, X) to logits of the same spatial shape; trained in place.
    pairs : list of Pair
        Normalised real volumes (used for patches and for the threshold).
    config : TrainConfig, optional
        Settings; defaults when None.
    extra_pairs : list of Pair, optional
        More volumes for patches only (e.g. synthetic phantoms), not for the threshold.
    checkpoint : path, optional
        Where to write the periodic checkpoint (``.safetensors`` and ``.json``).
    progress : callable(fraction, message), optional
        Called after every step.
    cancel : CancelToken, optional
        Checked before every step; raises :class:`~napari_vessel.errors.Cancelled`.
    log : callable(str), optional
        Receives a line of text now and then.

    Returns
    -------
    TrainResult
    """
    cfg = config or TrainConfig()
    if cfg.steps < 1 or cfg.batch_size < 1:
        raise InputError("steps and batch size must be at least 1")
    progress = progress or no_progress
    torch.manual_seed(cfg.seed)
    rng = np.random.default_rng(cfg.seed)
    gen = torch.Generator().manual_seed(cfg.seed)
    everything = list(pairs) + list(extra_pairs or [])
    sampler = PatchSampler(everything, cfg.patch_size, foreground_fraction=cfg.foreground_fraction,
                           z_subsample=cfg.z_subsample)
    decay, no_decay = [], []
    for name, p in model.named_parameters():
        (no_decay if p.ndim <= 1 or name.endswith("bias") else decay).append(p)
    opt = torch.optim.AdamW([{"params": decay, "weight_decay": cfg.weight_decay},
                             {"params": no_decay, "weight_decay": 0.0}], lr=cfg.lr)
    start = time.monotonic()
    losses: list[float] = []
    step = 0
    model.train()
    for step in range(cfg.steps):
        if cancel is not None:
            cancel.check()
        if cfg.minutes is not None and time.monotonic() - start > cfg.minutes * 60:
            break
        for group in opt.param_groups:
            group["lr"] = cfg.lr * _schedule(step, cfg.steps)
        batch = [sampler.sample(rng) for _ in range(cfg.batch_size)]
        image = torch.from_numpy(np.stack([b[0] for b in batch]))[:, None]
        target = torch.from_numpy(np.stack([b[1] for b in batch]))[:, None]
        image, target = augment(image, target, gen, strength=cfg.augment_strength)
        loss = _loss(model(image), target, cfg)
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()
        losses.append(loss.item())
        progress((step + 1) / cfg.steps * 0.9, f"step {step + 1}/{cfg.steps} loss {loss:.3f}")
        if log is not None and (step + 1) % 100 == 0:
            log(f"step {step + 1} loss {np.mean(losses[-100:]):.4f} "
                f"{(time.monotonic() - start) / 60:.1f} min")
        if checkpoint is not None and cfg.checkpoint_every and (step + 1) % cfg.checkpoint_every == 0:
            save_checkpoint(model, checkpoint, {"step": step + 1, "config": _jsonable(cfg)})
    else:
        step = cfg.steps
    if cancel is not None:
        cancel.check()
    model.eval()
    progress(0.9, "choosing the threshold on the training volumes")
    probs = [predict_volume(model, p.image) for p in pairs]
    threshold, scores = choose_threshold(probs, [p.labels for p in pairs])
    progress(1.0, f"done: threshold {threshold:.3f}")
    return TrainResult(model, step, (time.monotonic() - start) / 60, losses, threshold,
                       {p.name: s for p, s in zip(pairs, scores, strict=True)})


def _jsonable(cfg: TrainConfig) -> dict:
    data = asdict(cfg)
    data["patch_size"] = list(cfg.patch_size)
    return data
