"""Train UMIS from scratch without labels (paper 000, sections 4.2-4.3).

The network learns from unlabelled volumes with the UMIS compound loss (eq. 17-26: the active
contour through the morphological pooling, rank, tightness, reconstruction, maximum variance and
maximum entropy terms, lambdas of section 4.3) on random patches. Labels, when the caller has them,
are only used afterwards to *score* the result, never to train or to choose the threshold: an
unsupervised model's threshold is 0.5 (the active contour's inside/outside split).

The volumes must already be preprocessed the way the model will see them at inference time
(:func:`umis_preprocessing`, written into the card as ``preprocessing``).
"""

from __future__ import annotations

import time
from collections.abc import Callable, Sequence
from dataclasses import asdict, dataclass, field
from typing import Any

import numpy as np
import torch

from napari_vessel.errors import InputError
from napari_vessel.progress import CancelToken, Progress, no_progress
from napari_vessel.training.data import augment
from napari_vessel.training.loop import optimise, run_steps
from napari_vessel.training.train import save_checkpoint, warmup_cosine
from napari_vessel.training.umis_loss import UMISLoss

__all__ = ["UnsupervisedConfig", "UnsupervisedResult", "train_unsupervised",
           "umis_preprocessing", "predict_probability"]


def umis_preprocessing() -> dict:
    """The preprocessing of UMIS's training and test volumes (JSON form, for the card).

    Per-slice median subtraction (the depth-dependent background) and percentile scaling to
    [0, 1]: the active contour compares region means of the image itself, so the input must span
    the same range on every volume.
    """
    from napari_vessel.training.data import PREPROCESSING

    return dict(PREPROCESSING)


@dataclass(frozen=True)
class UnsupervisedConfig:
    """Settings of one unsupervised UMIS training run (saved in the model card).

    Parameters
    ----------
    steps : int
        Optimiser steps (warm-up then cosine learning rate).
    batch_size : int
        Patches per step.
    patch_size : (int, int, int)
        Training patch (Z, Y, X); a multiple of the network's input multiple.
    lr, weight_decay : float
        AdamW settings.
    alpha, beta : float
        Inside and outside weights of the active-contour term (eq. 18; the paper's 1 and 2).
    lambdas : dict
        Overrides of the loss weights (keys ``ac, rank, tight, rec, mv, me``).
    augment_strength : float
        Scale of the intensity augmentation (flips and rotations are always on).
    seed : int
        Seed of every random choice.
    minutes : float or None
        Wall-clock cap.
    checkpoint_every : int
        Steps between atomic checkpoints (0: none).
    """

    steps: int = 600
    batch_size: int = 2
    patch_size: tuple[int, int, int] = (8, 96, 96)
    lr: float = 2e-3
    weight_decay: float = 1e-4
    alpha: float = 1.0
    beta: float = 2.0
    lambdas: dict = field(default_factory=dict)
    augment_strength: float = 0.3
    seed: int = 0
    minutes: float | None = None
    checkpoint_every: int = 200

    def to_dict(self) -> dict:
        """JSON-ready form."""
        data = asdict(self)
        data["patch_size"] = list(self.patch_size)
        return data


@dataclass
class UnsupervisedResult:
    """What :func:`train_unsupervised` returns: the model (eval mode) and its record."""

    model: torch.nn.Module
    steps: int
    minutes: float
    losses: list[float]
    terms: dict[str, float]


def _check(images: Sequence[np.ndarray], patch: Sequence[int], multiple: Sequence[int]) -> None:
    from napari_vessel.io.volume import check_voxels

    if not images:
        raise InputError("unsupervised training needs at least one volume")
    for image in images:
        if np.ndim(image) != 3:
            raise InputError(f"expected 3D (Z, Y, X) volumes, got shape {np.shape(image)}")
        check_voxels(image, "training volume", constant=False)
    bad = [p for p, m in zip(patch, multiple, strict=True) if p % m]
    if bad:
        raise InputError(f"patch size {tuple(patch)} must be a multiple of {tuple(multiple)}")


def _sample(images: Sequence[np.ndarray], patch: Sequence[int],
            rng: np.random.Generator) -> np.ndarray:
    """One patch of a random volume, reflection-padded where the volume is smaller."""
    image = images[int(rng.integers(len(images)))]
    pad = [(0, max(0, p - s)) for p, s in zip(patch, image.shape, strict=True)]
    if any(b for _, b in pad):
        image = np.pad(image, pad, mode="reflect" if all(s > 1 for s in image.shape) else "edge")
    start = [int(rng.integers(0, s - p + 1)) for p, s in zip(patch, image.shape, strict=True)]
    return image[tuple(slice(a, a + p) for a, p in zip(start, patch, strict=True))]


def train_unsupervised(model: torch.nn.Module, images: Sequence[np.ndarray],
                       config: UnsupervisedConfig | None = None, *,
                       checkpoint: str | None = None, progress: Progress | None = None,
                       cancel: CancelToken | None = None,
                       log: Callable[[str], None] | None = None,
                       device: Any = None) -> UnsupervisedResult:
    """Train a UMIS network on unlabelled, preprocessed volumes with the compound loss.

    Parameters
    ----------
    model : UMIS
        Returns ``UMISOutput(seg, seg_raw, recon)``; trained in place.
    images : sequence of (Z, Y, X) float arrays
        Preprocessed volumes in [0, 1] (see :func:`umis_preprocessing`).
    config : UnsupervisedConfig, optional
    checkpoint : path, optional
        Periodic atomic checkpoint (``.safetensors`` + ``.json``).
    progress, cancel, log
        Progress callback ``(fraction, message)``, cancel token checked before every step, and
        a receiver of a line of text every 50 steps.
    device : str or torch.device, optional
        Where to train: ``None``/``"auto"`` picks CUDA, then Apple MPS, then the CPU
        (:func:`~napari_vessel.devices.pick_device`); an unknown or unavailable device is an
        :class:`~napari_vessel.errors.InputError`. Patches are drawn and augmented on the CPU
        (the same random stream on every device) and then moved; checkpoints hold CPU tensors
        and the model is returned on the CPU.

    Returns
    -------
    UnsupervisedResult
    """
    from napari_vessel.devices import pick_device

    cfg = config or UnsupervisedConfig()
    dev = pick_device(device)
    if cfg.steps < 1 or cfg.batch_size < 1:
        raise InputError("steps and batch size must be at least 1")
    if not hasattr(model, "rec_decoder"):
        raise InputError("unsupervised training from scratch is for UMIS networks (they have the "
                         "reconstruction decoder); fine-tune other networks with 'finetune'")
    _check(images, cfg.patch_size, getattr(model, "input_multiple", (1, 1, 1)))
    progress = progress or no_progress
    torch.manual_seed(cfg.seed)
    rng = np.random.default_rng(cfg.seed)
    gen = torch.Generator().manual_seed(cfg.seed)
    model.to(dev)
    loss_fn = UMISLoss(cfg.alpha, cfg.beta, dict(cfg.lambdas)).to(dev)
    opt = torch.optim.AdamW(model.parameters(), lr=cfg.lr, weight_decay=cfg.weight_decay)
    warmup = min(50, cfg.steps // 5 + 1)
    start = time.monotonic()
    losses: list[float] = []
    sums: dict[str, float] = {}
    model.train()

    def one_step(step: int) -> None:
        for group in opt.param_groups:
            group["lr"] = cfg.lr * warmup_cosine(step, cfg.steps, warmup)
        batch = np.stack([_sample(images, cfg.patch_size, rng) for _ in range(cfg.batch_size)])
        x = torch.from_numpy(np.ascontiguousarray(batch, dtype=np.float32))[:, None]
        x, _ = augment(x, torch.zeros_like(x), gen, strength=cfg.augment_strength)
        x = x.clamp(0, 1).to(dev)
        out = model(x, reconstruct=True)
        loss, terms = loss_fn(out.seg, x, raw=out.seg_raw, recon=out.recon)
        losses.append(optimise(opt, loss))
        for key, value in terms.items():
            sums[key] = 0.9 * sums.get(key, value) + 0.1 * value
        progress((step + 1) / cfg.steps, f"step {step + 1}/{cfg.steps} loss {losses[-1]:.4f}")
        if log is not None and (step + 1) % 50 == 0:
            log(f"step {step + 1} loss {np.mean(losses[-50:]):.4f} "
                + " ".join(f"{k} {v:.4f}" for k, v in sums.items())
                + f" {(time.monotonic() - start) / 60:.1f} min")
        if checkpoint is not None and cfg.checkpoint_every and (step + 1) % cfg.checkpoint_every == 0:
            save_checkpoint(model, checkpoint, {"step": step + 1, "config": cfg.to_dict()})

    step = run_steps(one_step, total=cfg.steps, minutes=cfg.minutes, started=start, cancel=cancel)
    if cancel is not None:
        cancel.check()
    model.to("cpu").eval()
    return UnsupervisedResult(model, step, (time.monotonic() - start) / 60, losses, sums)


def predict_probability(model: torch.nn.Module, image: np.ndarray, *, device: str = "cpu",
                        threads: int | None = None) -> np.ndarray:
    """UMIS's smoothed segmentation ``S`` of a preprocessed volume, with the plugin's engine."""
    from napari_vessel.inference.run import predict
    from napari_vessel.models.registry import get

    return np.asarray(predict(model.eval(), image, spec=get("umis"), device=device,
                              threads=threads))
