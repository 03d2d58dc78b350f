"""Supervised training of the vessel networks (TV-Net recipe of paper 001, plus soft-clDice).

The loss is eq. 3 of paper 001, balanced binary cross-entropy (eq. 1) + alpha x 3D total variation
of the probability with Sobel derivatives (eq. 2), with the weight decay of AdamW as the L2 term,
plus an optional soft Dice and the soft-clDice of paper 004 (eq. 3-4) that rewards keeping thin
vessels connected. Patches are sampled half on vessel voxels and heavily augmented
(:func:`~napari_vessel.training.data.augment`). Everything random flows from one seed.

The model zoo trains with the same loop: a model whose output is a zoo output type (VC-Net, the
DBAC / DDMAC cascades and their ensemble) gets its paper's loss from
:func:`napari_vessel.training.zoo_losses.model_loss` instead (plus the optional soft-clDice), and a
2D model (``spec.dims == 2``) trains on the slices of the 3D patches (``as_slices``).

After training, the probability threshold is chosen on the *training* volumes (best mean F1) and
stored with the model, so a held-out volume never influences it. The probability maps come from
the plugin's inference engine (:func:`napari_vessel.inference.run.predict`), so they are the model's
final probability exactly as segmenting gives it (2D models slice by slice).

The loss functions are those of :mod:`napari_vessel.training.losses` (re-exported here); the
recipe scales two of them (:data:`BCE_SCALE`, :data:`TV_SCALE`) so it stays the one the shipped
TV-Net was trained with.
"""

from __future__ import annotations

import math
import time
from collections.abc import Callable
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import nn

from napari_vessel.errors import InputError
from napari_vessel.models.registry import ModelSpec
from napari_vessel.models.vcnet import VCNetOutput
from napari_vessel.progress import CancelToken, Progress, no_progress
from napari_vessel.training.checkpoint import load_state, save_checkpoint, save_state
from napari_vessel.training.data import LabelledPatchSampler, Pair, augment
from napari_vessel.training.loop import optimise, run_steps
from napari_vessel.training.losses import balanced_bce, soft_cldice_loss, soft_dice_loss, tv_loss_3d
from napari_vessel.training.zoo_losses import as_slices, has_own_loss, model_loss

__all__ = ["TrainConfig", "TrainResult", "train", "predict_volume", "choose_threshold",
           "calibrate_threshold", "model_device",
           "training_spec", "default_patch_size", "balanced_bce", "tv_loss_3d", "soft_dice_loss",
           "soft_cldice_loss", "f1_score", "warmup_cosine", "save_checkpoint"]


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
        A zoo model with its own loss uses only ``cldice_weight`` (added to its paper's loss).
    foreground_fraction : float
        Share of patches centred on a vessel voxel.
    z_subsample : float
        Probability of a patch with every second slice (a coarser Z step).
    augment_strength : float
        Scale of the intensity augmentation.
    balance : bool
        Weight the two classes of the cross-entropy equally (paper 001, eq. 1); False: plain
        binary cross-entropy, whose probabilities follow the sampled vessel fraction.
    seed : int
        Seed of every random choice (weights, patches, augmentation).
    minutes : float or None
        Wall-clock cap; the run stops early (and says so in the result) when it is reached.
    checkpoint_every : int
        Steps between atomic checkpoints (0: none).
    threshold_crop : int or None
        Choose the threshold on the central ``threshold_crop`` x ``threshold_crop`` pixels of
        each training volume instead of the whole volumes (for networks whose full-resolution
        prediction is slow on a CPU); None: the whole volumes.
    extra : dict
        Free-form settings; ``extra["loss"]`` holds keyword options of a zoo model's loss
        (e.g. ``{"balanced": True}`` for the cascades, ``{"mip_weight": 0.2}`` for VC-Net).
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
    balance: bool = True
    seed: int = 0
    minutes: float | None = None
    checkpoint_every: int = 250
    threshold_crop: int | None = None
    extra: dict = field(default_factory=dict)

    def to_dict(self, *, with_extra: bool = True) -> dict:
        """JSON-ready form (the patch size as a list), as checkpoints and model cards store it.

        Parameters
        ----------
        with_extra : bool
            Include the free-form ``extra`` settings (checkpoints compare them on resume); the
            model card's ``training.config`` leaves them out.

        Returns
        -------
        dict
        """
        data = asdict(self)
        data["patch_size"] = list(self.patch_size)
        if not with_extra:
            data.pop("extra", None)
        return data


@dataclass
class TrainResult:
    """What :func:`train` returns: the trained model (eval mode) and its record."""

    model: nn.Module
    steps: int
    minutes: float
    losses: list[float]
    threshold: float
    train_f1: dict[str, float]
    probs: dict[str, np.ndarray] = field(default_factory=dict)
    #: A :class:`~napari_vessel.postprocess.level.LevelRule` fitted on the training volumes
    #: (``napari-vessel train --level-rule``), or None.
    level_rule: Any = None


# -- losses -----------------------------------------------------------------------------------

#: The recipe's balanced BCE is twice :func:`~napari_vessel.training.losses.balanced_bce` (so that
#: it equals plain BCE when both classes are equally frequent), with beta clipped to [1e-3, 0.999].
BCE_SCALE, BCE_CLIP = 2.0, 1e-3

#: The recipe's TV term uses Sobel kernels divided by 16 (the sum of the smoothing weights):
#: 1/16 of :func:`~napari_vessel.training.losses.tv_loss_3d`, which uses the unnormalised operator.
TV_SCALE = 1.0 / 16.0

#: Soft-skeleton iterations of the recipe's soft-clDice term.
CLDICE_ITERATIONS = 3


def _loss(output, target: torch.Tensor, cfg: TrainConfig, model: nn.Module) -> torch.Tensor:
    """The training loss: a zoo model's paper loss, else the TV-Net recipe (paper 001 eq. 3)."""
    if has_own_loss(output):
        options = dict(cfg.extra.get("loss", {}))
        if isinstance(output, VCNetOutput):  # the label MIPs must match the model's
            options.setdefault("slab", model.slab)
            options.setdefault("step", model.step)
        return model_loss(output, target, cldice_weight=cfg.cldice_weight,
                          cldice_iterations=CLDICE_ITERATIONS, **options)
    prob = torch.sigmoid(output)
    if cfg.balance:
        loss = BCE_SCALE * balanced_bce(output, target, clip=BCE_CLIP)
    else:
        loss = nn.functional.binary_cross_entropy_with_logits(output, target.to(output.dtype))
    if cfg.tv_weight and prob.ndim == 5:
        loss = loss + cfg.tv_weight * TV_SCALE * tv_loss_3d(prob)
    if cfg.dice_weight:
        loss = loss + cfg.dice_weight * soft_dice_loss(prob, target)
    if cfg.cldice_weight:
        loss = loss + cfg.cldice_weight * soft_cldice_loss(prob, target, CLDICE_ITERATIONS)
    return loss


# -- prediction and scoring -------------------------------------------------------------------

def training_spec(model: nn.Module, spec: ModelSpec | None = None) -> ModelSpec:
    """The spec that tells the inference engine how to run ``model`` (dims, output, patches).

    ``spec`` when given; else a spec for a single-output 3D network that returns logits (TV-Net
    and the like), with the model's ``input_multiple`` or ``total_stride`` when it has one.
    """
    if spec is not None:
        return spec
    multiple = getattr(model, "input_multiple", None) or getattr(model, "total_stride", None)
    return ModelSpec(name="training", kind="supervised", description="model being trained",
                     builder=type(model), patch_size_zyx=(32, 256, 256),
                     input_multiple_zyx=tuple(multiple or (1, 1, 1)), output="logits",
                     dims=int(getattr(model, "dims", 3)))


def predict_volume(model: nn.Module, image: np.ndarray, *, spec: ModelSpec | None = None,
                   overlap: float = 0.25, patch_size: tuple[int, int, int] | None = None
                   ) -> np.ndarray:
    """Vessel probability of a normalised (Z, Y, X) volume, with the plugin's inference engine.

    Runs :func:`napari_vessel.inference.run.predict` with PyTorch on the device the model's
    parameters are on (:func:`model_device`; the CPU for a model without any) and the threads
    torch is set to, so a validation prediction is what segmenting with the saved model gives
    (exactly with ``runtime="torch"`` on the CPU; within 1e-6 on the exported CPU runtimes): the
    final probability (sigmoid of logits, or a fused probability), 2D models slice by slice.

    Parameters
    ----------
    model : nn.Module
        The network (put in eval mode here).
    image : ndarray, shape (Z, Y, X)
        Normalised as for training.
    spec : ModelSpec, optional
        The model's registry spec (see :func:`training_spec` for the default).
    overlap : float
        Overlap of the sliding-window patches.
    patch_size : (int, int, int), optional
        Sliding-window patch; default the spec's, except whole 512 x 512 slices for 2D models
        (one tile per slice instead of nine overlapping ones: about half the time).

    Returns
    -------
    ndarray of float32, shape (Z, Y, X)
    """
    from napari_vessel.inference.run import predict

    model.eval()
    spec = training_spec(model, spec)
    if patch_size is None and spec.dims == 2:
        patch_size = (1, 512, 512)
    return predict(model, image, spec=spec, device=model_device(model), overlap=overlap,
                   patch_size=patch_size, threads=torch.get_num_threads(), runtime="torch")


def model_device(model: nn.Module) -> torch.device:
    """The device of the model's first parameter (or buffer); the CPU for a model without any."""
    for tensor in (*model.parameters(), *model.buffers()):
        return tensor.device
    return torch.device("cpu")


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

def warmup_cosine(step: int, total: int, warmup: int) -> float:
    """Learning-rate factor: linear warm-up over ``warmup`` steps, then cosine decay to 0."""
    if step < warmup:
        return (step + 1) / warmup
    return 0.5 * (1 + math.cos(math.pi * min(1.0, (step - warmup) / max(1, total - warmup))))


def _schedule(step: int, total: int, warmup: int = 50) -> float:
    return warmup_cosine(step, total, min(warmup, max(1, total // 10)))  # short runs: a tenth


def train(model: nn.Module, pairs: list[Pair], config: TrainConfig | None = None, *,
          extra_pairs: list[Pair] | None = None, checkpoint: str | Path | None = None,
          progress: Progress | None = None, cancel: CancelToken | None = None,
          log: Callable[[str], None] | None = None, spec: ModelSpec | None = None,
          resume: bool = False, device=None, threshold_pairs: list[Pair] | None = None
          ) -> TrainResult:
    """Train ``model`` on labelled volumes and choose its threshold on them.

    A model whose output is a zoo output (VC-Net, the cascades, their ensemble) is trained with
    its paper's loss (:func:`~napari_vessel.training.zoo_losses.model_loss`, plus
    ``cldice_weight`` x soft-clDice); a single-logit model with the TV-Net recipe. A 2D model
    (``spec.dims == 2``) trains on the slices of the 3D patches
    (:func:`~napari_vessel.training.zoo_losses.as_slices`) and is validated slice by slice.

    Parameters
    ----------
    model : nn.Module
        A registry network, mapping (N, 1, Z, Y, X) (2D: (N, 1, Y, X)) to logits or a zoo output
        of the same spatial shape; trained in place.
    pairs : list of Pair
        Normalised real volumes (used for patches and for the threshold).
    config : TrainConfig, optional
        Settings; defaults when None.
    extra_pairs : list of Pair, optional
        More volumes for patches only (e.g. synthetic phantoms), not for the threshold.
    checkpoint : path, optional
        Where to write the periodic resumable checkpoint (``.safetensors`` and ``.json``:
        weights, optimiser moments, random generators; see
        :mod:`~napari_vessel.training.checkpoint`).
    progress : callable(fraction, message), optional
        Called after every step.
    cancel : CancelToken, optional
        Checked before every step; raises :class:`~napari_vessel.errors.Cancelled`.
    log : callable(str), optional
        Receives a line of text now and then.
    spec : ModelSpec, optional
        The model's registry spec: its ``dims``, ``output``, patch size and input multiple tell
        how to run it for the threshold (default: :func:`training_spec`).
    resume : bool
        Continue from ``checkpoint`` when it exists (same settings: the result equals an
        uninterrupted run); a finished run is not repeated.
    device : str or torch.device, optional
        Where to train: ``None``/``"auto"`` picks CUDA, then Apple MPS, then the CPU
        (:func:`~napari_vessel.devices.pick_device`); an unknown or unavailable device is an
        :class:`~napari_vessel.errors.InputError`. The threshold is chosen on that device too;
        the model is returned on the CPU.
    threshold_pairs : list of Pair, optional
        Volumes to choose the threshold on instead of ``pairs`` (e.g. held-out synthetic volumes
        when ``pairs`` is empty).

    Returns
    -------
    TrainResult
        With the training volumes' probability maps in ``probs``.
    """
    from napari_vessel.devices import pick_device

    cfg = config or TrainConfig()
    dev = pick_device(device)
    if cfg.steps < 1 or cfg.batch_size < 1:
        raise InputError("steps and batch size must be at least 1")
    threshold_pairs = list(pairs) if threshold_pairs is None else list(threshold_pairs)
    if not threshold_pairs:
        raise InputError("no volumes to choose the threshold on: give labelled pairs")
    progress = progress or no_progress
    spec = training_spec(model, spec)
    torch.manual_seed(cfg.seed)
    rng = np.random.default_rng(cfg.seed)
    gen = torch.Generator().manual_seed(cfg.seed)
    everything = list(pairs) + list(extra_pairs or [])
    sampler = LabelledPatchSampler(everything, cfg.patch_size, foreground_fraction=cfg.foreground_fraction,
                           z_subsample=cfg.z_subsample)
    decay, no_decay = [], []
    for name, p in model.named_parameters():
        (no_decay if p.ndim <= 1 or name.endswith("bias") else decay).append(p)
    opt = torch.optim.AdamW([{"params": decay, "weight_decay": cfg.weight_decay},
                             {"params": no_decay, "weight_decay": 0.0}], lr=cfg.lr)
    model.to(dev)
    start = time.monotonic()
    losses: list[float] = []
    first = 0
    if resume and checkpoint is not None and Path(checkpoint).exists():
        info = load_state(checkpoint, model, opt, rng, gen)
        if info.get("config") != cfg.to_dict():
            raise InputError(f"{checkpoint} was written with other settings; resume with the same "
                             "ones, or delete it to start afresh")
        first, losses = int(info["step"]), list(info.get("losses", []))
        if log is not None:
            log(f"resumed from {checkpoint} at step {first}")
    model.train()

    def one_step(step: int) -> None:
        for group in opt.param_groups:
            group["lr"] = cfg.lr * _schedule(step, cfg.steps)
        batch = [sampler.sample(rng) for _ in range(cfg.batch_size)]
        image = torch.from_numpy(np.stack([b[0] for b in batch]))[:, None]
        target = torch.from_numpy(np.stack([b[1] for b in batch]))[:, None]
        image, target = augment(image, target, gen, strength=cfg.augment_strength)
        if spec.dims == 2:
            image, target = as_slices(image, target)
        image, target = image.to(dev), target.to(dev)
        value = optimise(opt, _loss(model(image), target, cfg, model))
        losses.append(value)
        progress((step + 1) / cfg.steps * 0.9, f"step {step + 1}/{cfg.steps} loss {value:.3f}")
        if log is not None and (step + 1) % 100 == 0:
            log(f"step {step + 1} loss {np.mean(losses[-100:]):.4f} "
                f"{(time.monotonic() - start) / 60:.1f} min")
        if checkpoint is not None and cfg.checkpoint_every and (step + 1) % cfg.checkpoint_every == 0:
            save_state(checkpoint, model, opt, rng, gen,
                       {"step": step + 1, "config": cfg.to_dict(), "losses": losses})

    step = run_steps(one_step, first=first, total=cfg.steps, minutes=cfg.minutes, started=start,
                     cancel=cancel)
    if cancel is not None:
        cancel.check()
    model.eval()
    progress(0.9, "choosing the threshold on the training volumes")
    threshold, scores, probs = calibrate_threshold(model, threshold_pairs, spec=spec,
                                                   crop=cfg.threshold_crop)
    model.to("cpu")
    progress(1.0, f"done: threshold {threshold:.3f}")
    return TrainResult(model, step, (time.monotonic() - start) / 60, losses, threshold,
                       scores, probs)


def calibrate_threshold(model: nn.Module, pairs: list[Pair], *, spec: ModelSpec | None = None,
                        crop: int | None = None
                        ) -> tuple[float, dict[str, float], dict[str, np.ndarray]]:
    """The threshold with the best mean F1 of ``model`` on labelled ``pairs``.

    Returns
    -------
    threshold : float
    scores : dict
        F1 of each pair at that threshold, by name.
    probs : dict
        The probability map of each pair (of its central ``crop`` when given), by name.
    """
    if not pairs:
        raise InputError("no labelled volumes to choose the threshold on")
    model.eval()
    spec = training_spec(model, spec)
    crops = [_central(p, crop) for p in pairs]
    probs = [predict_volume(model, image, spec=spec) for image, _ in crops]
    threshold, scores = choose_threshold(probs, [labels for _, labels in crops])
    return (threshold, {p.name: s for p, s in zip(pairs, scores, strict=True)},
            {p.name: prob for p, prob in zip(pairs, probs, strict=True)})


def _central(pair: Pair, size: int | None) -> tuple[np.ndarray, np.ndarray]:
    """The central ``size`` x ``size`` pixels of a pair's image and labels (all when None)."""
    if not size:
        return pair.image, pair.labels
    y0, x0 = (max(0, (n - size) // 2) for n in pair.image.shape[1:])
    window = (slice(None), slice(y0, y0 + size), slice(x0, x0 + size))
    return pair.image[window], pair.labels[window]


def default_patch_size(spec: ModelSpec) -> tuple[int, int, int]:
    """A training patch (Z, Y, X) for a model: 4 x 128 x 128 (16 images per batch of 4) for 2D
    models, else 8 x 64 x 64 (the TV-Net recipe), rounded up to the model's input multiple."""
    base = (4, 128, 128) if spec.dims == 2 else (8, 64, 64)
    multiple = (1, *spec.input_multiple_zyx[1:]) if spec.dims == 2 else spec.input_multiple_zyx
    return tuple(-(-b // m) * m for b, m in zip(base, multiple, strict=True))
