"""The optimisation loop of fine-tuning (see :mod:`napari_vessel.training.finetune`).

One loop for every mode and method: time budget, live updates, Stop that keeps the best state,
the drift guard of unsupervised runs (:class:`~.adapt.DriftGuard`) and the probe-loss safeguard
of the UMIS loss.

Which state is kept: the lowest smoothed loss for the UMIS loss and the supervised mode (their
loss is fixed, so comparable over steps); the last state for self-training and TENT (their
targets move with the teacher or the model) and for matched synthetic training (each step sees
new synthetic patches). Either way an unsupervised result must pass the
drift guard, else the last state that passed it is kept.
"""

from __future__ import annotations

import copy
import math
import time

import numpy as np
import torch

from napari_vessel.errors import Cancelled
from napari_vessel.training.adapt import (
    ADABN_BLENDS,
    DriftGuard,
    EntropyLoss,
    Leash,
    SelfTrainingLoss,
    VolumeGuard,
    batchnorm_statistics,
    blend_batchnorm,
    reestimate_batchnorm,
)
from napari_vessel.training.adapt_synthetic import SyntheticBatches, SyntheticLoss, matched_volumes
from napari_vessel.training.finetune_config import FinetuneResult, FinetuneUpdate
from napari_vessel.training.finetune_data import PatchSampler, fit_patch_size
from napari_vessel.training.finetune_loss import make_loss, probe_loss, run_preview
from napari_vessel.training.loop import optimise, run_steps

__all__ = ["FinetuneLoop", "model_state"]

_NORMS = (torch.nn.modules.batchnorm._BatchNorm, torch.nn.GroupNorm,
          torch.nn.modules.instancenorm._InstanceNorm, torch.nn.LayerNorm)


def model_state(model: torch.nn.Module) -> dict:
    """CPU copies of a model's weights and buffers."""
    return {k: v.detach().to("cpu", copy=True) for k, v in model.state_dict().items()}


def _train_mode(model: torch.nn.Module, freeze_norm: bool) -> None:
    """Training mode; with ``freeze_norm`` batch norms keep their running statistics (eval)."""
    model.train()
    if freeze_norm:
        for module in model.modules():
            if isinstance(module, torch.nn.modules.batchnorm._BatchNorm):
                module.eval()


def _trainable(model: torch.nn.Module, which: str) -> list[torch.nn.Parameter]:
    """All parameters, or only the scales and shifts of the normalisation layers ("norm")."""
    if which == "all":
        return list(model.parameters())
    params = [p for m in model.modules() if isinstance(m, _NORMS) for p in m.parameters()]
    return params or list(model.parameters())


_METHOD_NAMES = {"selftrain": "self-training", "tent": "entropy minimisation",
                 "synthetic": "training on synthetic vessels matched to the volume",
                 "umis": "the UMIS loss", "adabn": "batch-norm re-estimation"}


class FinetuneLoop:
    """The optimisation loop with its time budget, kept state, live updates and guards."""

    def __init__(self, model, spec, image, target, mask, cfg, device, started, progress, cancel,
                 on_update, preview_z, threshold: float, spacing_zyx=None,
                 prepare=None, parent_prob=None) -> None:
        self.model, self.spec, self.image, self.cfg, self.device = model, spec, image, cfg, device
        self.started, self.progress, self.cancel = started, progress, cancel
        self.on_update, self.preview_z, self.threshold = on_update, preview_z, threshold
        patch = fit_patch_size(cfg.patch_size_zyx, image.shape, spec.input_multiple_zyx)
        self.sampler = PatchSampler(image, patch, target=target, mask=mask)
        self.patch, self.spacing_zyx, self.prepare = patch, spacing_zyx, prepare
        self.volume_guard: VolumeGuard | None = None  # set by run() for unsupervised runs
        self.parent_prob = parent_prob  # the parent's map of ``image``, when already made
        self.synthetic: SyntheticBatches | None = None
        self.rng = np.random.default_rng(cfg.seed)
        torch.manual_seed(cfg.seed)
        self.unsupervised = cfg.mode == "unsupervised"
        self.method = cfg.method if self.unsupervised else "supervised"
        self.loss = self._make_loss()
        self.keep_lowest = self.method in ("umis", "supervised")
        self.losses: list[float] = []
        self.smoothed: list[float] = []
        self.terms: dict = {}
        self.drift: list[tuple[int, float, float]] = []
        self.best_step = 0
        self.next_update = 0.0

    def _make_loss(self):
        cfg, model, spec = self.cfg, self.model, self.spec
        # supervised: the anchor holds the parent's sure decisions on the voxels nobody edited;
        # the size term stays off (corrections may rightly change how much is vessel)
        keep_size = cfg.keep_size if self.unsupervised else 0.0
        parent = copy.deepcopy(model).eval() if (
            cfg.consistency > 0 or cfg.anchor > 0 or keep_size > 0) else None
        leash = Leash(parent, spec, self.threshold, cfg.anchor, keep_size, cfg.margin) \
            if parent is not None and (cfg.anchor > 0 or keep_size > 0) else None
        if self.method == "selftrain":
            return SelfTrainingLoss(model, spec, self.threshold, cfg.margin, cfg.ema, leash,
                                    cfg.seed)
        if self.method == "tent":
            return EntropyLoss(spec, leash)
        if self.method == "synthetic":
            return SyntheticLoss(spec, leash)
        return make_loss(cfg, spec, parent, leash=leash, level=self.threshold)

    def elapsed(self) -> float:
        return time.monotonic() - self.started

    def fraction(self, step: int) -> float:
        parts = [step / self.cfg.max_steps] if self.cfg.max_steps else []
        if self.cfg.minutes is not None:
            parts.append(self.elapsed() / (60 * self.cfg.minutes))
        return float(min(1.0, max(parts)))

    def _batch(self, rng: np.random.Generator, size: int, train: bool = False
               ) -> list[torch.Tensor | None]:
        """Patches of the volume (probes, AdaBN); training patches of the matched synthetic
        volumes when ``train`` and the method is "synthetic"."""
        source = self.synthetic if train and self.synthetic is not None else self.sampler
        return [None if a is None else torch.from_numpy(a).to(self.device)
                for a in source.batch(rng, size)]

    def _make_synthetic(self) -> None:
        """Draw the synthetic volumes that look like this one (method "synthetic")."""
        if self.prepare is None:
            raise ValueError("the synthetic method needs the network's preprocessing (prepare)")
        cancel = self.cancel

        def progress(fraction: float, message: str) -> None:
            if cancel is not None:
                cancel.check()
            self.progress(0.03 + 0.07 * fraction, message)

        pairs = matched_volumes(self.image, self.spacing_zyx, self.prepare, seed=self.cfg.seed,
                                progress=progress, labels=self.cfg.synthetic_labels)
        self.synthetic = SyntheticBatches(pairs, self.patch, real=self.sampler)

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
                                      self.best_step, preview, z, origin, done,
                                      tuple(self.drift)))

    def _guard(self, probes) -> DriftGuard | None:
        """The drift guard on fixed patches; supervised, on uniform patches (the training and
        probe patches are centred on the edits, where change is wanted)."""
        cfg = self.cfg
        if cfg.max_drift is None or cfg.probe_patches < 1:
            return None
        if self.unsupervised:
            return DriftGuard(self.model, self.spec, probes[0], probes[1], self.threshold,
                              cfg.max_drift)
        x, valid, _, _ = self.sampler.batch(np.random.default_rng(cfg.seed + 2),
                                            cfg.probe_patches, uniform=True)
        guard = DriftGuard(self.model, self.spec, torch.from_numpy(x).to(self.device),
                           torch.from_numpy(valid).to(self.device), self.threshold, cfg.max_drift)
        return None if guard.empty else guard  # nothing to compare with: painting adds vessel

    def _result(self, state: dict, steps: int, stopped: bool, kept: bool, message: str,
                info: dict, probe_parent=None, probe_final=None, declined=False
                ) -> FinetuneResult:
        self.model.load_state_dict(state)
        self.model.eval()
        self.update(steps, done=True)
        self.progress(1.0, message)
        return FinetuneResult(self.model, state, self.cfg, self.spec.name, steps, self.elapsed(),
                              self.losses, self.smoothed, stopped, kept, message, self.best_step,
                              probe_parent, probe_final, drift=tuple(self.drift),
                              declined=declined, **info)

    def run(self, initial: dict, info: dict) -> FinetuneResult:
        cfg, model = self.cfg, self.model
        probes = None
        if cfg.probe_patches > 0 and (cfg.keep_parent or self.unsupervised):
            probes = self._batch(np.random.default_rng(cfg.seed + 1), cfg.probe_patches)
        guard = self._guard(probes)
        if guard is not None and guard.empty:
            return self._result(initial, 0, False, True, (
                f"declined: {self.spec.name} finds no vessel in {cfg.probe_patches} sample "
                f"patches of this volume at its threshold {self.threshold:g}, so there is "
                "nothing to adapt to; check the channel, or segment to see the whole volume"),
                info, declined=True)
        # unsupervised: the guard's last word is on the whole volume, as segmentation sees it
        self.volume_guard = VolumeGuard(model, self.spec, self.image, self.threshold,
                                        cfg.max_drift, self.device, self.cancel,
                                        self.parent_prob) \
            if self.unsupervised and guard is not None else None
        if self.method == "adabn":
            return self._adabn(initial, info, self.volume_guard)
        if self.method == "synthetic":
            try:
                self._make_synthetic()
            except Cancelled:
                return self._result(initial, 0, True, True, "stopped by the user; the model is "
                                    "the parent, unchanged", info)
        use_probe_loss = cfg.keep_parent and self.keep_lowest and probes is not None
        probe_parent = probe_loss(self.loss, model, probes) if use_probe_loss else None
        optimiser = torch.optim.Adam(_trainable(model, cfg.trained_parameters),
                                     lr=cfg.learning_rate)
        best_state, best_loss = initial, math.inf
        checked_state, checked_step, crossed = initial, 0, None
        decay = 2.0 / (cfg.smooth_window + 1)
        ema, step, stopped, step_s, message = 0.0, 0, False, 0.0, ""
        after_step = getattr(self.loss, "after_step", None)
        self.update(0)

        def one_step(_: int) -> bool:
            nonlocal best_state, best_loss, checked_state, checked_step, crossed, ema, step, \
                step_s, message
            t0 = time.monotonic()
            _train_mode(model, cfg.freeze_norm)
            x, valid, target, mask = self._batch(self.rng, cfg.batch_size, train=True)
            total, self.terms = self.loss(model, x, valid, target, mask)
            if not torch.isfinite(total):
                message = f"the loss became {float(total)} at step {step + 1}; stopped there. "
                return False
            value = optimise(optimiser, total)
            if after_step is not None:
                after_step(model)
            step += 1
            self.losses.append(value)
            ema = decay * value + (1 - decay) * ema
            self.smoothed.append(ema / (1 - (1 - decay) ** step))  # bias-corrected EMA
            if not self.keep_lowest:
                self.best_step = step
            elif self.smoothed[-1] < best_loss:
                best_loss, best_state, self.best_step = self.smoothed[-1], model_state(model), step
            if guard is not None and step % cfg.guard_every == 0:
                drift = guard.measure(model)
                self.drift.append((step, drift.fraction, drift.skeleton))
                if not guard.within(drift):
                    crossed = drift
                    return False
                checked_state, checked_step = model_state(model), step
            step_s = (time.monotonic() - t0) if step == 1 else 0.8 * step_s + 0.2 * (
                time.monotonic() - t0)
            self.progress(0.1 + 0.88 * self.fraction(step),
                          f"step {step}, loss {self.smoothed[-1]:.4g}")
            self.update(step)
            return True

        try:
            run_steps(one_step, total=cfg.max_steps, minutes=cfg.minutes, started=self.started,
                      cancel=self.cancel, next_step_s=lambda: step_s, free_steps=1)
        except Cancelled:
            stopped = True
        if not self.keep_lowest and step:
            best_state = checked_state if crossed is not None else model_state(model)
        return self._finish(initial, best_state, (checked_state, checked_step, crossed), guard,
                            probes, probe_parent, step, stopped, message, info)

    def _finish(self, initial, best_state, checked, guard, probes, probe_parent, step, stopped,
                message, info) -> FinetuneResult:
        model, cfg = self.model, self.cfg
        checked_state, checked_step, crossed = checked
        limit = f"±{100 * cfg.max_drift:.0f} %" if cfg.max_drift is not None else ""
        if crossed is not None:
            best_state, self.best_step = checked_state, checked_step
            message += (f"stopped at step {step}: {crossed.describe()} from the parent's, beyond "
                        f"the {limit} guard; ")
        model.load_state_dict(best_state)
        if guard is not None and step and self.best_step and crossed is None:
            drift = guard.measure(model)
            self.drift.append((self.best_step, drift.fraction, drift.skeleton))
            if not guard.within(drift):
                best_state, self.best_step = checked_state, checked_step
                model.load_state_dict(best_state)
                message += (f"the state of step {step} had {drift.describe()}, beyond the "
                            f"{limit} guard; ")
        probe_final = probe_loss(self.loss, model, probes) if (
            step and probe_parent is not None) else None
        kept = step == 0 or self.best_step == 0
        if not kept and probe_parent is not None and not probe_final < probe_parent:
            best_state, self.best_step, kept = initial, 0, True
            message += (f"the loss on the probe patches did not improve ({probe_parent:.4g} -> "
                        f"{probe_final:.4g}): the parent's weights are kept")
        elif step == 0:
            message += "stopped before the first step: the model is the parent, unchanged"
        elif kept:
            message += "the parent's weights are kept"
        else:
            message += self._kept_message(step, probe_parent, probe_final)
        declined = self.unsupervised and kept and step > 0 and probe_parent is None
        if not kept and self.volume_guard is not None:
            model.load_state_dict(best_state)
            if stopped:  # Stop keeps the best state: its check runs to the end (a few seconds)
                self.volume_guard.cancel = None
            drift = self.volume_guard.measure(model)
            self.drift.append((self.best_step, drift.fraction, drift.skeleton))
            if not self.volume_guard.within(drift):
                best_state, self.best_step, kept, declined = initial, 0, True, True
                message = (f"declined: on the whole volume the adapted model moves the "
                           f"{drift.describe()} from the parent's, beyond the {limit} guard "
                           f"(the training patches: {message}); the parent's weights are kept")
        if stopped:
            message = "stopped by the user; " + message
        return self._result(initial if kept else best_state, step, stopped, kept, message, info,
                            probe_parent, probe_final if step else None, declined)

    def _kept_message(self, step: int, probe_parent, probe_final) -> str:
        if not self.unsupervised or self.method == "umis":
            text = f"kept the state of step {self.best_step} of {step} (lowest smoothed loss)"
            if probe_parent is not None:
                text += f"; probe loss {probe_parent:.4g} -> {probe_final:.4g}"
        else:
            text = f"adapted by {_METHOD_NAMES[self.method]}: kept step {self.best_step} of {step}"
        # the drift of the kept state (after a crossing, the last entry is the crossing's)
        kept = next((d for d in reversed(self.drift) if d[0] == self.best_step), None)
        if kept is not None:
            text += (f"; vessel fraction {100 * kept[1]:+.0f} %, skeleton length "
                     f"{100 * kept[2]:+.0f} % from the parent's")
        return text

    def _adabn(self, initial: dict, info: dict, guard: DriftGuard | None) -> FinetuneResult:
        cfg, model = self.cfg, self.model
        count = min(cfg.max_steps or 16, 16)
        rng = np.random.default_rng(cfg.seed)
        batches = []
        for _ in range(count):
            if self.cancel is not None and self.cancel.cancelled:
                return self._result(initial, 0, True, True, "stopped by the user; the model is "
                                    "the parent, unchanged", info)
            batches.append(self._batch(rng, cfg.batch_size)[0])
        parent = batchnorm_statistics(model)
        reestimate_batchnorm(model, batches)
        volume = batchnorm_statistics(model)
        self.best_step = 1
        patches = f"{count * cfg.batch_size} patches"
        if guard is None:
            return self._result(model_state(model), 1, False, False,
                                f"adapted by {_METHOD_NAMES['adabn']} on {patches}", info)
        tried = []
        for weight in ADABN_BLENDS:
            blend_batchnorm(model, parent, volume, weight)
            drift = guard.measure(model)
            self.drift.append((1, drift.fraction, drift.skeleton))
            if guard.within(drift):
                share = "" if weight == 1 else f", blended {100 * weight:.0f} % with the parent's"
                return self._result(model_state(model), 1, False, False, (
                    f"adapted by {_METHOD_NAMES['adabn']} on {patches}{share}; "
                    f"{drift.describe()} from the parent's"), info)
            tried.append(f"{100 * weight:.0f} %: {drift.describe()}")
        self.best_step = 0
        how = tried[0].split(": ", 1)[1] if len(tried) == 1 else \
            "even blended with the parent's (" + "; ".join(tried) + ")"
        return self._result(initial, 1, False, True, (
            "declined: the volume's batch-norm statistics move the segmentation beyond the "
            f"±{100 * cfg.max_drift:.0f} % guard ({how}); the parent's weights are kept"), info,
            declined=True)
