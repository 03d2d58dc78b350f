"""Settings, live updates and results of fine-tuning (see :mod:`napari_vessel.training.finetune`).

:class:`FinetuneConfig` is the typed, frozen configuration saved with every fine-tuned model;
:class:`FinetuneUpdate` is what a live view receives every few seconds; :class:`FinetuneResult` is
what :func:`~napari_vessel.training.finetune.finetune` returns.
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from dataclasses import asdict, dataclass, field, fields
from typing import Any

import numpy as np
import torch

from napari_vessel.errors import InputError
from napari_vessel.training.adapt import METHODS
from napari_vessel.training.umis_loss import UMIS_LAMBDAS

__all__ = ["FinetuneConfig", "FinetuneUpdate", "FinetuneResult", "MODES"]

#: The two kinds of fine-tuning.
MODES = ("unsupervised", "supervised")


@dataclass(frozen=True)
class FinetuneConfig:
    """Settings of one fine-tuning run (saved in the new model's card and the run manifest).

    Parameters
    ----------
    mode : {"unsupervised", "supervised"}
        Adapt on the image alone, or learn from the user's corrections.
    method : {"adabn", "synthetic", "selftrain", "tent", "umis"}
        Unsupervised: how to adapt (:mod:`napari_vessel.training.adapt`): re-estimating the
        batch-norm statistics on the volume (AdaBN, the default: the only method that never
        lowered F1 on a real volume in ``benchmarks/bench_adapt.py``; seconds), training on
        synthetic vessels drawn at the volume's voxel size and given its intensity histogram
        (exact labels; :mod:`napari_vessel.training.adapt_synthetic`), self-training on
        a slowly moving teacher's confident pseudo-labels, entropy minimisation (TENT), or the
        UMIS loss (paper 000, section 4.4).
    minutes : float or None
        Wall-clock budget, preprocessing included (default 2). None: only ``max_steps``.
    max_steps : int or None
        Stop after this many optimiser steps.
    patch_size_zyx : (int, int, int)
        Training patch, rounded up to the network's input multiple, cut to the volume.
    batch_size : int
        Patches per step.
    lr : float or None
        Adam learning rate; None: 1e-4 for the UMIS loss (the paper's, section 4.3-4.4), 1e-3
        for self-training and TENT (which train only the normalisation layers), 3e-4
        supervised and for matched synthetic training (all weights).
    seed : int
        Seed of the patch positions and of any randomness in the network.
    alpha, beta : float
        Inside / outside weights of the active-contour term (eq. 18; paper: 1 and 2).
    lambdas : dict
        Weights of eq. 17 (``ac, rank, tight, rec, mv, me``; section 4.3).
    tv_weight, dice_weight, cldice_weight : float
        Supervised: weights of the total variation (paper 001, eq. 3), soft Dice and soft-clDice
        (paper 004) next to balanced BCE. Soft Dice (0.5, as the shipped TV-Net was trained)
        keeps the probability scale, so the parent's threshold still fits.
    beta_clip : float
        Supervised: the class weight beta of balanced BCE (paper 001, eq. 1), measured on the
        edited voxels, is clipped to ``[beta_clip, 1 - beta_clip]``. 0.5 (default) is plain BCE:
        the edits count as the user made them. Balanced BCE weights the rarer class of the edits
        up, so strokes that paint missed vessel (mostly vessel voxels) taught the network to
        call *less* vessel (``benchmarks/bench_interactive.py``: sensitivity on untouched voxels
        0.70 -> 0.58 with the paper's weighting, 0.70 -> 0.83 with plain BCE).
    anchor, keep_size : float
        Leashes to the parent (not for "adabn"): binary cross-entropy to the parent's decision
        where the parent is sure (supervised: only on voxels nobody edited, so a few one-class
        strokes cannot flip the whole volume), and, unsupervised only, the squared relative
        change of each patch's mean probability from the parent's (the vessels keep their size).
        0: off.
    margin : float
        Self-training and the anchor: a voxel is sure when its logit lies at least this far from
        the threshold's logit (1.0: probability 0.84 or more at threshold 0.65 ... ).
    ema : float
        Self-training: the teacher's weights move by ``1 - ema`` towards the student's per step.
    max_drift : float or None
        Guard rail: stop and keep the last checked state as soon as the predicted vessel
        fraction or the skeleton length on fixed probe patches moves more than this (relative,
        0.25 = 25 %) from the parent's. Supervised, the probes are uniform over the volume (a
        few strokes must not change how much of the whole volume is vessel by a quarter: a
        simulated user's 20 one-class strokes did, F1 on untouched voxels 0.66 -> 0.25). None:
        no guard.
    guard_every : int
        Steps between two checks of the guard.
    max_voxels : int
        Unsupervised: a larger volume is not loaded whole; the run adapts on random blocks of it
        that fit this many voxels (the result's ``sample`` says so).
    consistency : float
        Weight of a squared difference to the parent's own prediction (not in the papers): a leash
        that keeps the model near its parent (supervised: on unedited voxels only). 0: off.
    train_only : {"all", "norm"} or None
        Which parameters learn: all, or only the scales and shifts of the normalisation layers
        (test-time adaptation of the intensity response; the shapes the network knows stay; all
        of them for a network without normalisation layers). None: "norm" unsupervised, "all"
        supervised.
    freeze_norm : bool
        Batch-norm layers keep the parent's running statistics (their scale and shift still
        learn): a batch of two patches of one volume is a poor estimate of them, and the model
        then trains exactly as it predicts.
    smooth_window : int
        Span of the exponential moving average of the loss that defines the best state.
    min_uncertainty : float
        Unsupervised: adapt only when the parent is unsure of this volume, i.e. when the mean
        binary entropy of its probability map (bits, 0-1) is at least this; otherwise the
        parent is kept and the result says why. 0 (default): no such gate; a network's own
        confidence was wrong on volumes where it failed (docs/benchmarks-adaptation.md), the
        drift guard decides instead.
    keep_parent : bool
        UMIS loss: give back the parent's weights when the best state does not lower the loss
        on fixed probe patches (a safeguard against a fine-tune that drifts).
    probe_patches : int
        Number of fixed patches for that check and for the drift guard.
    preview_every_s : float
        Seconds between live updates (``on_update``); the preview is also spaced so that it costs
        at most a fifth of the time.
    preview : bool
        Compute a preview probability map of one slice in each update.
    preview_size : int or None
        Side of the previewed square (centred); None: the whole slice.
    threshold : float or None
        Supervised without an edit mask: threshold of the model's prediction the edits are found
        against; None: the model card's threshold, else 0.5.
    device : str or None
        ``"cpu"``, ``"cuda"``, ``"mps"`` or None/"auto".
    threads : int or None
        CPU threads for torch; None: every core this process may use. One is faster when other
        programs keep the cores busy.
    synthetic_labels : {"exact", "visible"}
        Method "synthetic": the matched synthetic volumes' labels (``SyntheticConfig.labels``:
        every voxel inside a tube, or what a person would paint).
    """

    mode: str = "unsupervised"
    method: str = "adabn"
    minutes: float | None = 2.0
    max_steps: int | None = None
    patch_size_zyx: tuple[int, int, int] = (16, 64, 64)
    batch_size: int = 2
    lr: float | None = None
    seed: int = 0
    alpha: float = 1.0
    beta: float = 2.0
    lambdas: Mapping[str, float] = field(default_factory=lambda: dict(UMIS_LAMBDAS), hash=False)
    tv_weight: float = 0.05
    dice_weight: float = 0.5
    cldice_weight: float = 0.0
    beta_clip: float = 0.5
    anchor: float = 1.0
    keep_size: float = 10.0
    margin: float = 1.0
    ema: float = 0.99
    max_drift: float | None = 0.25
    guard_every: int = 10
    max_voxels: int = 64_000_000
    consistency: float = 0.0
    train_only: str | None = None
    freeze_norm: bool = True
    smooth_window: int = 10
    min_uncertainty: float = 0.0
    keep_parent: bool = True
    probe_patches: int = 4
    preview_every_s: float = 3.0
    preview: bool = True
    preview_size: int | None = 128
    threshold: float | None = None
    device: str | None = "cpu"
    threads: int | None = None
    synthetic_labels: str = "exact"

    def __post_init__(self) -> None:
        if self.mode not in MODES:
            raise InputError(f"fine-tuning mode must be one of {', '.join(MODES)}, not {self.mode!r}")
        if self.method not in METHODS:
            raise InputError(f"unknown adaptation method {self.method!r}; use one of "
                             f"{', '.join(METHODS)}")
        if self.minutes is None and self.max_steps is None:
            raise InputError("give a time budget (minutes) or a number of steps (max_steps)")
        if self.minutes is not None and not (math.isfinite(self.minutes) and self.minutes > 0):
            raise InputError(f"minutes must be a positive number, not {self.minutes}")
        if self.max_steps is not None and int(self.max_steps) < 1:
            raise InputError(f"max_steps must be at least 1, not {self.max_steps}")
        if int(self.batch_size) < 1 or int(self.smooth_window) < 1:
            raise InputError("batch_size and smooth_window must be at least 1")
        if self.lr is not None and not self.lr > 0:
            raise InputError(f"the learning rate must be positive, not {self.lr}")
        for name in ("tv_weight", "dice_weight", "cldice_weight", "consistency", "alpha", "beta",
                     "anchor", "keep_size", "margin"):
            if not getattr(self, name) >= 0:
                raise InputError(f"{name} must be zero or positive, not {getattr(self, name)}")
        unknown = set(self.lambdas) - set(UMIS_LAMBDAS)
        if unknown:
            raise InputError(f"unknown loss weights {sorted(unknown)}; use {list(UMIS_LAMBDAS)}")
        if not 0 <= self.min_uncertainty <= 1:
            raise InputError(f"min_uncertainty is in bits, between 0 and 1, not "
                             f"{self.min_uncertainty}")
        if not 0 <= self.beta_clip <= 0.5:
            raise InputError(f"beta_clip must be between 0 and 0.5, not {self.beta_clip}")
        if self.train_only not in (None, "all", "norm"):
            raise InputError(f"train_only must be 'all' or 'norm', not {self.train_only!r}")
        if self.threads is not None and int(self.threads) < 1:
            raise InputError(f"threads must be at least 1, not {self.threads}")
        if not 0 <= self.ema < 1:
            raise InputError(f"ema must be in [0, 1), not {self.ema}")
        if self.max_drift is not None and not self.max_drift > 0:
            raise InputError(f"max_drift must be positive (0.25 = 25 %) or None, not "
                             f"{self.max_drift}")
        if int(self.max_voxels) < 1_000:
            raise InputError(f"max_voxels must be at least 1000, not {self.max_voxels}")
        if int(self.guard_every) < 1:
            raise InputError(f"guard_every must be at least 1, not {self.guard_every}")
        if self.synthetic_labels not in ("exact", "visible"):
            raise InputError(f"synthetic_labels must be 'exact' or 'visible', not "
                             f"{self.synthetic_labels!r}")
        if not self.preview_every_s > 0:
            raise InputError("preview_every_s must be positive")
        object.__setattr__(self, "patch_size_zyx", tuple(int(p) for p in self.patch_size_zyx))
        object.__setattr__(self, "lambdas", {**UMIS_LAMBDAS, **dict(self.lambdas)})

    @property
    def learning_rate(self) -> float:
        """``lr``, or the default of the mode and method (see ``lr``)."""
        if self.lr is not None:
            return float(self.lr)
        if self.mode == "supervised" or self.method == "synthetic":
            return 3e-4
        return 1e-4 if self.method == "umis" else 1e-3

    @property
    def trained_parameters(self) -> str:
        """``train_only``, or the default: "all" supervised and for the synthetic method, else
        "norm"."""
        if self.train_only is not None:
            return self.train_only
        return "norm" if self.mode == "unsupervised" and self.method != "synthetic" else "all"

    def to_dict(self) -> dict:
        """JSON-ready form (tuples become lists)."""
        data = asdict(self)
        data["patch_size_zyx"] = list(self.patch_size_zyx)
        data["lambdas"] = dict(self.lambdas)
        return data

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> FinetuneConfig:
        """Inverse of :meth:`to_dict`; unknown keys are an :class:`InputError`."""
        known = {f.name for f in fields(cls)}
        unknown = sorted(set(data) - known)
        if unknown:
            raise InputError(f"unknown fine-tuning settings {unknown}; known: {sorted(known)}")
        return cls(**dict(data))


@dataclass(frozen=True)
class FinetuneUpdate:
    """A snapshot for a live view, passed to ``on_update`` every ``preview_every_s`` seconds.

    Attributes
    ----------
    step : int
        Optimiser steps done.
    elapsed_s, fraction : float
        Seconds since the start; fraction of the budget used, in [0, 1].
    losses, smoothed : tuple of float
        Loss of every step so far and its moving average (the curve to plot).
    terms : dict
        Unweighted loss terms of the last step.
    best_step : int
        Step whose state is currently kept (0: the parent).
    drift : tuple of (int, float, float)
        Unsupervised guard checks so far: (step, relative change of the vessel fraction, of the
        skeleton length).
    preview : ndarray of float32, shape (H, W), or None
        Vessel probability on slice ``preview_z`` in the region starting at ``preview_origin_yx``.
    done : bool
        True for the last update of a run.
    """

    step: int
    elapsed_s: float
    fraction: float
    losses: tuple[float, ...]
    smoothed: tuple[float, ...]
    terms: dict
    best_step: int
    preview: np.ndarray | None = None
    preview_z: int | None = None
    preview_origin_yx: tuple[int, int] | None = None
    done: bool = False
    drift: tuple[tuple[int, float, float], ...] = ()


@dataclass
class FinetuneResult:
    """What :func:`finetune` returns.

    Attributes
    ----------
    model : torch.nn.Module
        The fine-tuned network in eval mode (the parent's weights when ``kept_parent``).
    state_dict : dict of str to Tensor
        Its weights (CPU copies).
    config : FinetuneConfig
    parent : str
        Name of the model it started from.
    steps : int
        Optimiser steps run; ``best_step`` is the one whose state was kept.
    seconds : float
        Wall-clock time of the whole call.
    losses, smoothed : list of float
        Loss per step and its moving average.
    stopped_early : bool
        True when the user cancelled (the best state so far is kept, no exception).
    kept_parent : bool
        True when the result has the parent's weights (no step, or no improvement).
    message : str
        One sentence for the user about how the run ended.
    probe_loss_parent, probe_loss_final : float or None
        Loss on the fixed probe patches before and after (eval mode).
    volume : dict
        Fingerprint of the volume: source, shape, dtype, spacing, sha256 of the voxels.
    preprocessing : dict
        What was applied to the volume before training.
    edited_voxels : int or None
        Supervised: voxels in the edited mask.
    parent_uncertainty : float or None
        Unsupervised: mean binary entropy (bits) of the parent's probability map of the volume,
        compared with ``config.min_uncertainty``.
    drift : tuple of (int, float, float)
        Unsupervised guard checks: (step, relative change of the vessel fraction, of the skeleton
        length); the last one measures the kept state.
    declined : bool
        True when the run did not adapt for a reason it states (nothing to adapt to, the guard).
    sample : str or None
        How the volume was sampled when it was too large to adapt on whole.
    level : float or None
        The threshold the run worked at: ``config.threshold``, else the level the parent's card
        gives this volume (its level rule resolved on the parent's map), else the card's
        threshold. A saved child keeps it as its own threshold.
    """

    model: torch.nn.Module
    state_dict: dict
    config: FinetuneConfig
    parent: str
    steps: int
    seconds: float
    losses: list[float]
    smoothed: list[float]
    stopped_early: bool
    kept_parent: bool
    message: str
    best_step: int = 0
    probe_loss_parent: float | None = None
    probe_loss_final: float | None = None
    volume: dict = field(default_factory=dict)
    preprocessing: Any = None
    edited_voxels: int | None = None
    parent_uncertainty: float | None = None
    drift: tuple = ()
    declined: bool = False
    sample: str | None = None
    level: float | None = None

    def summary(self) -> dict:
        """JSON-ready record of the run (no weights): for cards and manifests."""
        return {"parent": self.parent, "mode": self.config.mode, "steps": self.steps,
                "best_step": self.best_step, "seconds": round(self.seconds, 2),
                "stopped_early": self.stopped_early, "kept_parent": self.kept_parent,
                "message": self.message, "probe_loss_parent": self.probe_loss_parent,
                "probe_loss_final": self.probe_loss_final,
                "final_smoothed_loss": self.smoothed[-1] if self.smoothed else None,
                "edited_voxels": self.edited_voxels,
                "parent_uncertainty": self.parent_uncertainty, "declined": self.declined,
                "drift": [list(d) for d in self.drift], "sample": self.sample,
                "level": self.level,
                "config": self.config.to_dict(),
                "volume": self.volume, "preprocessing": self.preprocessing}
