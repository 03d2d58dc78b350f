"""Test-time adaptation of unsupervised fine-tuning, and the guard that keeps it safe.

Four ways to adapt a trained network to one unlabelled volume (``FinetuneConfig.method``):

- ``"selftrain"``: self-training on confident pseudo-labels with augmentation consistency. A
  teacher (an exponential moving average of the student, starting as the parent) labels each
  patch, averaged over two flips; only voxels whose logit lies at least ``margin`` from the
  threshold's count, each class weighted equally, and the student sees an intensity-jittered
  copy of the patch (gamma, gain, noise), so it learns to give the same answer under the shifts
  a new microscope brings;
- ``"tent"``: entropy minimisation on the normalisation layers' scales and shifts (TENT);
- ``"umis"``: the UMIS compound loss of paper 000, section 4.4 (see :mod:`.finetune_loss`);
- ``"adabn"``: no gradient step: the batch-norm running statistics are re-estimated on the
  volume (AdaBN), the cheapest test-time adaptation; the loop blends them with the parent's
  (:data:`ADABN_BLENDS`, the strongest the drift guard accepts).

The gradient methods add two leashes (weights ``anchor`` and ``keep_size``): binary cross-entropy
to the parent's decision where the parent is sure, and the squared relative change of the mean
probability of each patch from the parent's (the vessels keep their size).

:class:`DriftGuard` measures, on fixed probe patches and in eval mode, how far the predicted
vessel fraction and the skeleton length have moved from the parent's; the loop stops and keeps the
last state within ``max_drift`` as soon as either moves further.
"""

from __future__ import annotations

import copy
import math
from collections.abc import Iterable
from dataclasses import dataclass
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from napari_vessel.errors import InputError
from napari_vessel.training import METHODS
from napari_vessel.training.finetune_loss import ProbabilityNet, forward_parts

__all__ = ["METHODS", "ADABN_BLENDS", "VolumeGuard", "batchnorm_statistics", "blend_batchnorm",
           "reestimate_batchnorm", "SelfTrainingLoss", "EntropyLoss", "Leash", "Drift",
           "DriftGuard", "jitter"]

_BN = nn.modules.batchnorm._BatchNorm

#: Shares of the volume's own batch-norm statistics tried by "adabn", strongest first.
ADABN_BLENDS = (1.0,)


def batchnorm_statistics(model: nn.Module) -> dict[str, torch.Tensor]:
    """Copies of every batch norm's running mean and variance, by state-dict key."""
    return {k: v.detach().clone() for k, v in model.state_dict().items()
            if k.endswith(("running_mean", "running_var"))}


def blend_batchnorm(model: nn.Module, parent: dict, volume: dict, weight: float) -> None:
    """Set the running statistics to ``weight * volume + (1 - weight) * parent``."""
    state = model.state_dict()
    with torch.no_grad():
        for key, value in volume.items():
            state[key].copy_(weight * value + (1.0 - weight) * parent[key])


def reestimate_batchnorm(model: nn.Module, batches: Iterable[torch.Tensor]) -> int:
    """AdaBN: replace every batch norm's running statistics by those of ``batches``.

    The statistics are the plain average over all batches (``momentum=None``); the weights do not
    change. Returns the number of batch-norm layers updated.

    Raises
    ------
    InputError
        The network has no batch-norm layer (nothing to re-estimate).
    """
    layers = [m for m in model.modules() if isinstance(m, _BN)]
    if not layers:
        raise InputError("this network has no batch normalisation: re-estimating its statistics "
                         "(method 'adabn') cannot change it; choose another method")
    momenta = [m.momentum for m in layers]
    model.eval()
    for m in layers:
        m.reset_running_stats()
        m.momentum = None
        m.train()
    try:
        with torch.no_grad():
            for x in batches:
                model(x)
    finally:
        for m, momentum in zip(layers, momenta, strict=True):
            m.momentum = momentum
        model.eval()
    return len(layers)


def jitter(x: torch.Tensor, rng: np.random.Generator) -> torch.Tensor:
    """An intensity-shifted copy of a patch: random gamma (0.67-1.5), gain (0.75-1.33), noise."""
    gamma = float(np.exp(rng.uniform(-0.4, 0.4)))
    gain = float(np.exp(rng.uniform(-0.29, 0.29)))
    noise = float(rng.uniform(0.0, 0.04))
    scale = x.detach().abs().amax().clamp_min(1e-6)
    out = (x.clamp_min(0) / scale) ** gamma * scale * gain
    return out + noise * scale * torch.randn_like(x)


def _logit(p: float) -> float:
    p = min(max(p, 1e-4), 1 - 1e-4)
    return math.log(p / (1 - p))


def _probability(model: nn.Module, x: torch.Tensor, spec: Any) -> torch.Tensor:
    return forward_parts(model, x, spec, reconstruct=False)[0]


class Leash:
    """The two terms that keep an adapted network near its parent (see the module notes).

    Parameters
    ----------
    parent : nn.Module
        Frozen copy of the parent network, in eval mode.
    spec : ModelSpec
    threshold : float
        The parent's decision threshold.
    anchor, keep_size : float
        Weights of the anchor (BCE to the parent's sure decisions) and of the size term.
    margin : float
        A parent voxel is sure when its logit is at least this far from the threshold's.
    """

    def __init__(self, parent: nn.Module, spec: Any, threshold: float, anchor: float,
                 keep_size: float, margin: float) -> None:
        self.parent, self.spec = parent, spec
        self.level, self.anchor, self.keep_size, self.margin = _logit(threshold), anchor, \
            keep_size, margin

    def __call__(self, prob: torch.Tensor, x: torch.Tensor, valid: torch.Tensor,
                 terms: dict) -> torch.Tensor:
        if self.anchor <= 0 and self.keep_size <= 0:
            return prob.new_zeros(())
        with torch.no_grad():
            ref = _probability(self.parent, x, self.spec).clamp(1e-4, 1 - 1e-4)
        total = prob.new_zeros(())
        if self.anchor > 0:
            distance = torch.log(ref / (1 - ref)) - self.level
            sure = (distance.abs() >= self.margin).to(prob.dtype) * valid
            target = (distance > 0).to(prob.dtype)
            bce = F.binary_cross_entropy(prob.clamp(1e-6, 1 - 1e-6), target, reduction="none")
            value = (bce * sure).sum() / sure.sum().clamp_min(1.0)
            terms["anchor"] = float(value.detach())
            total = total + self.anchor * value
        if self.keep_size > 0:
            dims = tuple(range(1, prob.ndim))
            mean_ref = (ref * valid).sum(dims) / valid.sum(dims).clamp_min(1.0)
            mean_new = (prob * valid).sum(dims) / valid.sum(dims).clamp_min(1.0)
            value = (((mean_new - mean_ref) / mean_ref.clamp_min(1e-3)) ** 2).mean()
            terms["size"] = float(value.detach())
            total = total + self.keep_size * value
        return total


class SelfTrainingLoss:
    """Self-training on a slowly moving teacher's confident pseudo-labels (method "selftrain").

    Parameters
    ----------
    model : nn.Module
        The student (the network being adapted); the teacher starts as a copy of it.
    spec : ModelSpec
    threshold : float
        The decision threshold; pseudo-labels are the voxels whose teacher logit lies at least
        ``margin`` above (vessel) or below (background) its logit.
    margin : float
    ema : float
        The teacher's weights follow the student's: ``t = ema * t + (1 - ema) * s`` per step.
    leash : Leash or None
    seed : int
        Seed of the intensity jitter.
    """

    def __init__(self, model: nn.Module, spec: Any, threshold: float, margin: float, ema: float,
                 leash: Leash | None, seed: int) -> None:
        self.teacher = copy.deepcopy(model).eval()
        for p in self.teacher.parameters():
            p.requires_grad_(False)
        self.spec, self.level, self.margin, self.ema = spec, _logit(threshold), margin, ema
        self.leash, self.rng = leash, np.random.default_rng(seed)

    def pseudo_labels(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """(vessel, background) masks of the teacher's confident voxels, flip-averaged."""
        with torch.no_grad():
            p = (_probability(self.teacher, x, self.spec)
                 + _probability(self.teacher, x.flip(-1), self.spec).flip(-1)) / 2
            p = p.clamp(1e-4, 1 - 1e-4)
            distance = torch.log(p / (1 - p)) - self.level
        return (distance >= self.margin).to(x.dtype), (distance <= -self.margin).to(x.dtype)

    def __call__(self, model, x, valid, target=None, mask=None, *, probe=False):
        vessel, background = self.pseudo_labels(x)
        vessel, background = vessel * valid, background * valid
        view = x if probe else jitter(x, self.rng)
        prob = _probability(model, view, self.spec).clamp(1e-6, 1 - 1e-6)
        terms: dict = {}
        total = prob.new_zeros(())
        for name, where, label in (("vessel", vessel, 1.0), ("background", background, 0.0)):
            if float(where.sum()) > 0:
                bce = F.binary_cross_entropy(prob, torch.full_like(prob, label), reduction="none")
                value = (bce * where).sum() / where.sum()
                terms[name] = float(value.detach())
                total = total + value
        if not probe and self.leash is not None:
            total = total + self.leash(prob, x, valid, terms)
        terms["total"] = float(total.detach())
        return total, terms

    def after_step(self, model: nn.Module) -> None:
        """Move the teacher a step towards the student."""
        with torch.no_grad():
            for t, s in zip(self.teacher.parameters(), model.parameters(), strict=True):
                t.mul_(self.ema).add_(s.detach(), alpha=1 - self.ema)


class EntropyLoss:
    """TENT: the mean binary entropy of the prediction, plus the leash (method "tent")."""

    def __init__(self, spec: Any, leash: Leash | None) -> None:
        self.spec, self.leash = spec, leash

    def __call__(self, model, x, valid, target=None, mask=None, *, probe=False):
        prob = _probability(model, x, self.spec).clamp(1e-6, 1 - 1e-6)
        entropy = -(prob * prob.log() + (1 - prob) * (1 - prob).log())
        value = (entropy * valid).sum() / valid.sum().clamp_min(1.0)
        terms = {"entropy": float(value.detach())}
        total = value if probe or self.leash is None else value + self.leash(prob, x, valid,
                                                                               terms)
        terms["total"] = float(total.detach())
        return total, terms


@dataclass(frozen=True)
class Drift:
    """Relative change of the predicted vessel fraction and skeleton length from the parent's."""

    fraction: float
    skeleton: float

    def worst(self) -> float:
        """The larger of the two absolute changes."""
        return max(abs(self.fraction), abs(self.skeleton))

    def describe(self) -> str:
        """E.g. 'vessel fraction -32 %, skeleton length +4 %'."""
        return (f"vessel fraction {100 * self.fraction:+.0f} %, skeleton length "
                f"{100 * self.skeleton:+.0f} %")


class DriftGuard:
    """Watches the predicted vessel fraction and skeleton length on fixed probe patches.

    Parameters
    ----------
    parent : nn.Module
        The parent network (its measures are taken once, here).
    spec : ModelSpec
    probes : torch.Tensor, shape (N, 1, Z, Y, X)
        Fixed patches of the volume; ``valid`` marks voxels that are not padding.
    valid : torch.Tensor
    threshold : float
    limit : float
        Largest allowed relative change (0.25: 25 %) of either measure.
    """

    def __init__(self, parent: nn.Module, spec: Any, probes: torch.Tensor, valid: torch.Tensor,
                 threshold: float, limit: float) -> None:
        self.spec, self.probes, self.valid = spec, probes, valid.cpu().numpy() > 0
        self.threshold, self.limit = threshold, limit
        self.vessel0, self.skeleton0 = self._measure(parent)

    def _measure(self, model: nn.Module) -> tuple[int, int]:
        from skimage.morphology import skeletonize

        was_training = model.training
        model.eval()
        try:
            with torch.no_grad():
                prob = _probability(model, self.probes, self.spec).float().cpu().numpy()
        finally:
            model.train(was_training)
        labels = (prob > self.threshold) & self.valid
        skeleton = sum(int(skeletonize(patch[0]).sum()) for patch in labels)
        return int(labels.sum()), skeleton

    @property
    def empty(self) -> bool:
        """True when the parent finds no vessel voxel in the probe patches."""
        return self.vessel0 == 0

    def measure(self, model: nn.Module) -> Drift:
        """The drift of ``model`` from the parent."""
        vessel, skeleton = self._measure(model)
        return Drift(vessel / max(self.vessel0, 1) - 1.0, skeleton / max(self.skeleton0, 1) - 1.0)

    def within(self, drift: Drift) -> bool:
        """True when both changes are within the limit."""
        return drift.worst() <= self.limit


class VolumeGuard(DriftGuard):
    """The drift guard measured on the whole (sampled) volume, as segmentation will see it.

    The probe patches of :class:`DriftGuard` are cheap enough to check every few steps, but a
    few dozen training-size patches need not move as the whole volume does: on one real stack
    AdaBN's statistics moved the probes' vessel fraction by +23 % and the volume's by +85 %
    (F1 0.80 -> 0.52). This guard runs the segmentation's own sliding window over the whole
    prepared volume (one inference per check) and is the last word on an unsupervised run.

    Parameters
    ----------
    parent : nn.Module
    spec : ModelSpec
    image : ndarray, shape (Z, Y, X)
        The prepared volume (or its sample of blocks).
    threshold, limit : float
        As for :class:`DriftGuard`.
    device : torch.device
    cancel : CancelToken, optional
        Checked between the sliding window's batches (Stop during a check gives the parent).
    parent_prob : ndarray, optional
        The parent's probability map of ``image`` when the caller has it already (the same
        sliding window): the parent's measures then need no second inference.
    """

    def __init__(self, parent: nn.Module, spec: Any, image: np.ndarray, threshold: float,
                 limit: float, device: Any, cancel: Any = None,
                 parent_prob: np.ndarray | None = None) -> None:
        self.spec, self.image, self.device, self.cancel = spec, image, device, cancel
        self.threshold, self.limit = threshold, limit
        self.vessel0, self.skeleton0 = (self._counts(parent_prob) if parent_prob is not None
                                        else self._measure(parent))

    def _counts(self, prob: np.ndarray) -> tuple[int, int]:
        from skimage.morphology import skeletonize

        labels = np.asarray(prob) > self.threshold
        return int(labels.sum()), int(skeletonize(labels).sum())

    def _measure(self, model: nn.Module) -> tuple[int, int]:
        from napari_vessel.inference.run import predict

        was_training = model.training
        model.eval()
        try:
            prob = predict(ProbabilityNet(model, self.spec), self.image,
                           patch_size=self.spec.patch_size_zyx, device=self.device,
                           cancel=self.cancel)
        finally:
            model.train(was_training)
        return self._counts(prob)
