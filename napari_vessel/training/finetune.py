"""Fine-tune a registered network on the open volume: unsupervised, or from the user's corrections.

Unsupervised (transductive) fine-tuning, paper 000, section 4.4: the network keeps training on the
very volume it must segment with the UMIS compound loss (eq. 17-26) on random patches, which needs
no labels. Networks without the UMIS morphological pooling get it added on their output (eq. 12)
and networks without a reconstruction decoder leave out L_rec (eq. 23).

Supervised (human in the loop): the user corrected some vessels; the loss is balanced BCE (paper
001, eq. 1) + total variation (eq. 2) + optionally soft-clDice (paper 004), counted only on the
voxels the user edited or confirmed. The rest of the labels is never treated as truth.

By default the unsupervised mode adapts only the scales and shifts of the normalisation layers
(test-time adaptation: the network's response to the new microscope's intensities changes, the
shapes it learnt stay), and batch-norm layers keep their running statistics throughout, so the
network trains exactly as it predicts (docs/benchmarks-finetune.md shows why).

Either way the run has a time budget (and/or a number of steps), reports progress and a live
update (loss curve, preview of one slice), can be stopped at any time keeping the best state so
far (best = lowest smoothed training loss), and by default falls back to the parent's weights when
the loss on a fixed set of probe patches did not improve. :func:`save_finetuned` writes the result
as a new user model (:mod:`napari_vessel.training.finetune_save`).
"""

from __future__ import annotations

import copy
import math
import threading
import time
from collections.abc import Callable, Sequence
from typing import Any

import numpy as np
import torch

from ..errors import Cancelled, InputError
from ..progress import CancelToken, Progress, no_progress, scaled
from ..stats import mean_binary_entropy
from ..volume import Volume
from .finetune_config import FinetuneConfig, FinetuneResult, FinetuneUpdate
from .finetune_data import (
    PatchSampler,
    add_checked_slices,
    as_volume,
    check_labels,
    edited_mask_from,
    fit_patch_size,
    prepare_image,
    volume_fingerprint,
)
from .finetune_loss import ProbabilityNet, make_loss, probe_loss, run_preview, trainable_spec

__all__ = ["FinetuneConfig", "FinetuneUpdate", "FinetuneResult", "finetune", "save_finetuned",
           "check_new_name", "trainable_models", "is_running", "edited_mask_from", "segment_result"]

_LOCK = threading.Lock()


def is_running() -> bool:
    """True while a fine-tune runs in this process (only one may run at a time)."""
    return _LOCK.locked()


def trainable_models() -> list[str]:
    """Names of the registered networks that fine-tuning can start from (trained weights)."""
    from ..models import registry

    return [s.name for s in registry.list_models()
            if s.is_network and s.trainable and s.has_weights and s.dims == 3]


def _state(model: torch.nn.Module) -> dict:
    return {k: v.detach().to("cpu", copy=True) for k, v in model.state_dict().items()}


def _train_mode(model: torch.nn.Module, freeze_norm: bool) -> None:
    """Training mode; with ``freeze_norm`` batch norms keep their running statistics (eval)."""
    model.train()
    if freeze_norm:
        for module in model.modules():
            if isinstance(module, torch.nn.modules.batchnorm._BatchNorm):
                module.eval()


_NORMS = (torch.nn.modules.batchnorm._BatchNorm, torch.nn.GroupNorm,
          torch.nn.modules.instancenorm._InstanceNorm, torch.nn.LayerNorm)


def _trainable(model: torch.nn.Module, which: str) -> list[torch.nn.Parameter]:
    """All parameters, or only the scales and shifts of the normalisation layers ("norm")."""
    if which == "all":
        return list(model.parameters())
    params = [p for m in model.modules() if isinstance(m, _NORMS) for p in m.parameters()]
    return params or list(model.parameters())


def _supervised_targets(labels: Any, edited_mask: Any, checked_slices: Sequence[int],
                        shape: tuple[int, ...]) -> tuple[np.ndarray, np.ndarray | None]:
    if labels is None:
        raise InputError("supervised fine-tuning needs the corrected labels (labels=...)")
    target = check_labels(labels, shape)
    if edited_mask is None:
        return target, None
    return target, add_checked_slices(check_labels(edited_mask, shape, "edited mask"),
                                      checked_slices)


def finetune(model_name: str, volume: Volume | Any, *, labels: Any = None, edited_mask: Any = None,
             checked_slices: Sequence[int] = (), config: FinetuneConfig | None = None,
             progress: Progress | None = None, cancel: CancelToken | None = None,
             on_update: Callable[[FinetuneUpdate], None] | None = None,
             preview_z: int | Callable[[], int] | None = None) -> FinetuneResult:
    """Fine-tune a registered network on one volume (paper 000, section 4.4; or from corrections).

    Parameters
    ----------
    model_name : str
        A registered network with trained weights (see :func:`trainable_models`).
    volume : Volume or array_like, shape (Z, Y, X)
        The raw volume; the model's own preprocessing is applied, as when segmenting.
    labels : array_like, shape (Z, Y, X), optional
        Supervised mode: the corrected labels (non-zero = vessel).
    edited_mask : array_like of bool, shape (Z, Y, X), optional
        Supervised mode: voxels the user edited or confirmed; only they enter the loss. Default:
        where ``labels`` differ from the model's own thresholded prediction.
    checked_slices : sequence of int
        Supervised mode: Z indices of slices the user confirmed whole (added to the mask).
    config : FinetuneConfig, optional
        Settings (mode, budget, loss weights ...).
    progress : callable(fraction, message), optional
        Called after every step.
    cancel : CancelToken, optional
        Stop and keep: once set, the run ends at the next step and returns the best state so far
        with ``stopped_early=True`` (no exception). Before the first step: the parent's weights.
    on_update : callable(FinetuneUpdate), optional
        Called every ``config.preview_every_s`` seconds and once at the end, from this thread (a
        widget forwards it to the GUI thread).
    preview_z : int or callable returning int, optional
        Slice to preview (a callable is asked at each update, e.g. the viewer's current slice);
        default the middle slice.

    Returns
    -------
    FinetuneResult

    Raises
    ------
    InputError
        A classical or untrained model; an empty, constant or non-finite volume; labels or mask of
        another shape; no edited voxel; labels in unsupervised mode; a fine-tune already running.
    """
    config = config or FinetuneConfig()
    if config.mode == "unsupervised" and (labels is not None or edited_mask is not None):
        raise InputError("labels were given but the mode is unsupervised; use "
                         "FinetuneConfig(mode='supervised') to learn from corrections")
    if not _LOCK.acquire(blocking=False):
        raise InputError("a fine-tune is already running; wait for it to finish or stop it "
                         "before starting another")
    try:
        return _finetune(model_name, volume, labels, edited_mask, checked_slices, config,
                         progress or no_progress, cancel, on_update, preview_z)
    finally:
        _LOCK.release()


def _finetune(model_name, volume, labels, edited_mask, checked_slices, cfg, progress, cancel,
              on_update, preview_z) -> FinetuneResult:
    from ..devices import cpu_count, pick_device
    from ..inference import predict
    from ..models import registry

    started = time.monotonic()
    spec = trainable_spec(model_name, trainable_models)
    vol = as_volume(volume)
    shape = vol.shape
    target = mask = None
    if cfg.mode == "supervised":
        target, mask = _supervised_targets(labels, edited_mask, checked_slices, shape)
    device = pick_device(cfg.device)
    model, spec = registry.load_model(spec, device)
    initial = _state(model)
    info = {"volume": volume_fingerprint(vol), "preprocessing": None, "edited_voxels": None,
            "parent_uncertainty": None}
    threads = torch.get_num_threads()
    if device.type == "cpu":
        torch.set_num_threads(int(cfg.threads or cpu_count()))
    try:
        image, info["preprocessing"] = prepare_image(spec, vol, progress=scaled(progress, 0, .03),
                                                     cancel=cancel)
        if cfg.mode == "supervised":
            if mask is None:
                threshold = cfg.threshold if cfg.threshold is not None else \
                    float(spec.card.get("threshold") or 0.5)
                prob = predict(ProbabilityNet(model, spec), image, patch_size=spec.patch_size_zyx,
                               device=device, progress=scaled(progress, .03, .1), cancel=cancel)
                mask = edited_mask_from(target, prob > threshold, checked_slices=checked_slices)
            info["edited_voxels"] = int(mask.sum())
            if not mask.any():
                raise InputError("the labels have no edits: they do not differ from the model's "
                                 "own segmentation; paint or erase some vessels, or mark slices "
                                 "as checked, then fine-tune again")
        elif cfg.min_uncertainty > 0:
            prob = predict(ProbabilityNet(model, spec), image, patch_size=spec.patch_size_zyx,
                           device=device, progress=scaled(progress, .03, .1), cancel=cancel)
            info["parent_uncertainty"] = uncertainty = mean_binary_entropy(prob)
            if uncertainty < cfg.min_uncertainty:
                message = (f"{spec.name} is already confident on this volume (mean entropy "
                           f"{uncertainty:.2f} bits, below {cfg.min_uncertainty:g}): nothing to "
                           "adapt, the parent's weights are kept; set the minimum uncertainty "
                           "to 0 to adapt anyway (--min-uncertainty 0; in the dock, untick "
                           "'only when the model is unsure')")
                progress(1.0, message)
                return FinetuneResult(model.eval(), initial, cfg, spec.name, 0,
                                      time.monotonic() - started, [], [], False, True, message,
                                      **info)
        loop = _Loop(model, spec, image, target, mask, cfg, device, started, progress, cancel,
                     on_update, preview_z)
        return loop.run(initial, info)
    except Cancelled:
        model.load_state_dict(initial)
        return FinetuneResult(model.eval(), initial, cfg, spec.name, 0, time.monotonic() - started,
                              [], [], True, True, "stopped before the first step: the model is "
                              "the parent, unchanged", **info)
    finally:
        torch.set_num_threads(threads)


class _Loop:
    """The optimisation loop with its time budget, best state, live updates and safeguard."""

    def __init__(self, model, spec, image, target, mask, cfg, device, started, progress, cancel,
                 on_update, preview_z) -> None:
        self.model, self.spec, self.image, self.cfg, self.device = model, spec, image, cfg, device
        self.started, self.progress, self.cancel = started, progress, cancel
        self.on_update, self.preview_z = on_update, preview_z
        patch = fit_patch_size(cfg.patch_size_zyx, image.shape, spec.input_multiple_zyx)
        self.sampler = PatchSampler(image, patch, target=target, mask=mask)
        self.rng = np.random.default_rng(cfg.seed)
        torch.manual_seed(cfg.seed)
        parent = copy.deepcopy(model).eval() if cfg.consistency > 0 else None
        self.loss = make_loss(cfg, spec, parent)
        self.losses: list[float] = []
        self.smoothed: list[float] = []
        self.terms: dict = {}
        self.best_step = 0
        self.next_update = 0.0

    def elapsed(self) -> float:
        return time.monotonic() - self.started

    def fraction(self, step: int) -> float:
        parts = [step / self.cfg.max_steps] if self.cfg.max_steps else []
        if self.cfg.minutes is not None:
            parts.append(self.elapsed() / (60 * self.cfg.minutes))
        return float(min(1.0, max(parts)))

    def _batch(self, rng: np.random.Generator, size: int) -> list[torch.Tensor | None]:
        return [None if a is None else torch.from_numpy(a).to(self.device)
                for a in self.sampler.batch(rng, size)]

    def update(self, step: int, done: bool = False) -> None:
        if self.on_update is None or (not done and time.monotonic() < self.next_update):
            return
        t0 = time.monotonic()
        preview = z = origin = None
        if self.cfg.preview:
            wanted = self.preview_z() if callable(self.preview_z) else self.preview_z
            z = self.image.shape[0] // 2 if wanted is None else int(wanted)
            preview, z, origin = run_preview(self.model, self.spec, self.image, z,
                                             self.cfg.preview_size, self.device)
        cost = time.monotonic() - t0
        self.next_update = time.monotonic() + max(self.cfg.preview_every_s, 5 * cost)
        self.on_update(FinetuneUpdate(step, self.elapsed(), self.fraction(step),
                                      tuple(self.losses), tuple(self.smoothed), dict(self.terms),
                                      self.best_step, preview, z, origin, done))

    def run(self, initial: dict, info: dict) -> FinetuneResult:
        cfg, model = self.cfg, self.model
        probes = None
        if cfg.keep_parent and cfg.probe_patches > 0:
            probes = self._batch(np.random.default_rng(cfg.seed + 1), cfg.probe_patches)
        probe_parent = probe_loss(self.loss, model, probes)
        optimiser = torch.optim.Adam(_trainable(model, cfg.trained_parameters),
                                     lr=cfg.learning_rate)
        best_state, best_loss = initial, math.inf
        decay = 2.0 / (cfg.smooth_window + 1)
        ema, step, stopped, step_s, message = 0.0, 0, False, 0.0, ""
        self.update(0)
        try:
            while True:
                if self.cancel is not None:
                    self.cancel.check()
                if cfg.max_steps is not None and step >= cfg.max_steps:
                    break
                if step and cfg.minutes is not None and \
                        self.elapsed() + step_s > 60 * cfg.minutes:
                    break
                t0 = time.monotonic()
                _train_mode(model, cfg.freeze_norm)
                x, valid, target, mask = self._batch(self.rng, cfg.batch_size)
                total, self.terms = self.loss(model, x, valid, target, mask)
                if not torch.isfinite(total):
                    message = f"the loss became {float(total)} at step {step + 1}; stopped there. "
                    break
                optimiser.zero_grad(set_to_none=True)
                total.backward()
                optimiser.step()
                step += 1
                value = float(total.detach())
                self.losses.append(value)
                ema = decay * value + (1 - decay) * ema
                self.smoothed.append(ema / (1 - (1 - decay) ** step))  # bias-corrected EMA
                if self.smoothed[-1] < best_loss:
                    best_loss, best_state, self.best_step = self.smoothed[-1], _state(model), step
                step_s = (time.monotonic() - t0) if step == 1 else 0.8 * step_s + 0.2 * (
                    time.monotonic() - t0)
                self.progress(0.1 + 0.88 * self.fraction(step),
                              f"step {step}, loss {self.smoothed[-1]:.4g}")
                self.update(step)
        except Cancelled:
            stopped = True
        return self._finish(initial, best_state, probes, probe_parent, step, stopped, message,
                            info)

    def _finish(self, initial, best_state, probes, probe_parent, step, stopped, message,
                info) -> FinetuneResult:
        model = self.model
        model.load_state_dict(best_state)
        probe_final = probe_loss(self.loss, model, probes) if step else probe_parent
        kept = step == 0 or self.best_step == 0
        if step and not kept and probe_parent is not None and not probe_final < probe_parent:
            model.load_state_dict(initial)
            kept, self.best_step = True, 0
            message += (f"the loss on the probe patches did not improve ({probe_parent:.4g} -> "
                        f"{probe_final:.4g}): the parent's weights are kept")
        elif step == 0:
            message += "stopped before the first step: the model is the parent, unchanged"
        else:
            message += (f"kept the state of step {self.best_step} of {step} (lowest smoothed "
                        "loss)")
            if probe_parent is not None:
                message += f"; probe loss {probe_parent:.4g} -> {probe_final:.4g}"
        if stopped:
            message = "stopped by the user; " + message
        model.eval()
        self.update(step, done=True)
        self.progress(1.0, message)
        state = initial if kept else best_state
        return FinetuneResult(model, state, self.cfg, self.spec.name, step, self.elapsed(),
                              self.losses, self.smoothed, stopped, kept, message, self.best_step,
                              probe_parent, probe_final if step else None, **info)


def segment_result(result: FinetuneResult, volume: Volume | Any, *, threshold: float | None = None,
                   progress: Progress | None = None, cancel: CancelToken | None = None
                   ) -> tuple[np.ndarray, np.ndarray]:
    """Segment a volume with a fine-tuned network before (or without) saving it.

    The parent's preprocessing and sliding window are used, as
    :func:`napari_vessel.inference.segment` would with the saved model.

    Parameters
    ----------
    result : FinetuneResult
    volume : Volume or array_like, shape (Z, Y, X)
    threshold : float, optional
        Default: the parent card's threshold, else 0.5.

    Returns
    -------
    prob : ndarray of float32, shape (Z, Y, X)
    labels : ndarray of uint8, same shape
    """
    from ..inference import predict
    from ..models import registry

    spec = registry.get(result.parent)
    image, _ = prepare_image(spec, as_volume(volume), cancel=cancel)
    prob = predict(ProbabilityNet(result.model, spec), image, patch_size=spec.patch_size_zyx,
                   device=next(result.model.parameters()).device, progress=progress,
                   cancel=cancel)
    level = float(threshold if threshold is not None else spec.card.get("threshold") or 0.5)
    return prob, (prob > level).astype(np.uint8)


def save_finetuned(result: FinetuneResult, name: str, *, parent: str | None = None,
                   volume_source: Any = None, folder: Any = None, extra: dict | None = None):
    """Save a fine-tuned model as a new user model; see :func:`.finetune_save.save_finetuned`."""
    from .finetune_save import save_finetuned as _save

    return _save(result, name, parent=parent, volume_source=volume_source, folder=folder,
                 extra=extra)


def check_new_name(name: str, folder: Any = None) -> str:
    """Check a new model name is valid and free; see :func:`.finetune_save.check_new_name`."""
    from .finetune_save import check_new_name as _check

    return _check(name, folder)
