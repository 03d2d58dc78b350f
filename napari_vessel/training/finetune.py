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

import threading
import time
from collections.abc import Callable, Sequence
from typing import Any

import numpy as np
import torch

from napari_vessel.errors import Cancelled, InputError
from napari_vessel.io.volume import Volume
from napari_vessel.progress import CancelToken, Progress, no_progress, scaled
from napari_vessel.stats import mean_binary_entropy
from napari_vessel.training.finetune_config import FinetuneConfig, FinetuneResult, FinetuneUpdate
from napari_vessel.training.finetune_data import (
    add_checked_slices,
    as_volume,
    check_labels,
    check_voxels,
    edited_mask_from,
    prepare_image,
    sample_blocks,
    volume_fingerprint,
)
from napari_vessel.training.finetune_loop import FinetuneLoop, model_state
from napari_vessel.training.finetune_loss import ProbabilityNet, trainable_spec

__all__ = ["FinetuneConfig", "FinetuneUpdate", "FinetuneResult", "finetune", "save_finetuned",
           "check_new_name", "trainable_models", "is_running", "edited_mask_from", "segment_result"]

_LOCK = threading.Lock()


def is_running() -> bool:
    """True while a fine-tune runs in this process (only one may run at a time)."""
    return _LOCK.locked()


def trainable_models() -> list[str]:
    """Names of the registered networks that fine-tuning can start from (trained weights)."""
    from napari_vessel.models import registry

    return [s.name for s in registry.list_models()
            if s.is_network and s.trainable and s.has_weights and s.dims == 3]


#: Share of voxels at the volume's maximum above which adapting is declined.
SATURATED = 0.5


def saturation_problem(data: np.ndarray) -> str | None:
    """A sentence when most of the volume is saturated (adapting would learn the clipping).

    Raises :class:`InputError` first for an empty, constant or non-finite volume.
    """
    data = np.asarray(data)
    check_voxels(data)
    top = data.max()
    share = float(np.count_nonzero(data == top)) / max(data.size, 1)
    if share < SATURATED:
        return None
    return (f"declined: {100 * share:.0f} % of the voxels are at the maximum value {top:g} "
            "(saturated), so the volume shows no vessel contrast to adapt to; lower the "
            "detector gain or laser power, or pick another channel")


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
        where ``labels`` differ from the model's own segmentation (its post-processing, or a
        plain threshold at ``config.threshold`` when given, as
        :meth:`~napari_vessel.postprocess.labels.Postprocessing.for_model` makes it).
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
    from napari_vessel.devices import cpu_count, pick_device
    from napari_vessel.inference.run import predict
    from napari_vessel.models import registry
    from napari_vessel.postprocess.labels import Postprocessing

    started = time.monotonic()
    spec = trainable_spec(model_name, trainable_models)
    if cfg.mode == "unsupervised":
        vol, sample = sample_blocks(as_volume(volume, load=False), cfg.max_voxels, cfg.seed)
        if sample:
            progress(0.0, sample)
    else:
        vol, sample = as_volume(volume), None
    shape = vol.shape
    target = mask = None
    if cfg.mode == "supervised":
        target, mask = _supervised_targets(labels, edited_mask, checked_slices, shape)
    device = pick_device(cfg.device)
    model, spec = registry.load_model(spec, device)
    initial = model_state(model)
    info = {"volume": volume_fingerprint(vol), "preprocessing": None, "edited_voxels": None,
            "parent_uncertainty": None, "sample": sample}
    threads = torch.get_num_threads()
    if device.type == "cpu":
        torch.set_num_threads(int(cfg.threads or cpu_count()))
    try:
        if cfg.mode == "unsupervised" and (reason := saturation_problem(vol.data)) is not None:
            progress(1.0, reason)  # before preprocessing, which may find nothing but the clipping
            return FinetuneResult(model.eval(), initial, cfg, spec.name, 0,
                                  time.monotonic() - started, [], [], False, True, reason,
                                  declined=True, **info)
        image, info["preprocessing"] = prepare_image(spec, vol, progress=scaled(progress, 0, .03),
                                                     cancel=cancel)
        threshold = cfg.threshold if cfg.threshold is not None else spec.threshold
        recipe = Postprocessing.for_model(spec, cfg.threshold)
        prob = None
        if recipe.rule is not None or (cfg.mode == "supervised" and mask is None) \
                or (cfg.mode == "unsupervised" and cfg.min_uncertainty > 0):
            prob = predict(ProbabilityNet(model, spec), image, patch_size=spec.patch_size_zyx,
                           device=device, progress=scaled(progress, .03, .1), cancel=cancel)
        if recipe.rule is not None:
            # the level the parent's card chose for this volume: the run works (guard, leash,
            # previews) and the child is saved at it, so the child's labels are not re-levelled
            recipe = recipe.resolve(prob)
            threshold = recipe.threshold
        info["level"] = float(threshold)
        if cfg.mode == "supervised":
            if mask is None:
                # what the user started from: the model's own labels, made as segment makes them
                original = recipe.apply(prob)
                mask = edited_mask_from(target, original, checked_slices=checked_slices)
            info["edited_voxels"] = int(mask.sum())
            if not mask.any():
                raise InputError("the labels have no edits: they do not differ from the model's "
                                 "own segmentation; paint or erase some vessels, or mark slices "
                                 "as checked, then fine-tune again")
        elif cfg.min_uncertainty > 0:
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
                                      declined=True, **info)
        loop = FinetuneLoop(model, spec, image, target, mask, cfg, device, started, progress,
                            cancel, on_update, preview_z, threshold,
                            spacing_zyx=vol.spacing_zyx if vol.spacing_known else None,
                            prepare=lambda raw, spacing: prepare_image(
                                spec, Volume(raw, spacing))[0],
                            parent_prob=prob)
        result = loop.run(initial, info)
        if sample:
            result.message = f"{sample}; {result.message}"
        return result
    except Cancelled:
        model.load_state_dict(initial)
        return FinetuneResult(model.eval(), initial, cfg, spec.name, 0, time.monotonic() - started,
                              [], [], True, True, "stopped before the first step: the model is "
                              "the parent, unchanged", **info)
    finally:
        torch.set_num_threads(threads)


def segment_result(result: FinetuneResult, volume: Volume | Any, *, threshold: float | None = None,
                   progress: Progress | None = None, cancel: CancelToken | None = None
                   ) -> tuple[np.ndarray, np.ndarray]:
    """Segment a volume with a fine-tuned network before (or without) saving it.

    The parent's preprocessing and sliding window are used, as
    :func:`napari_vessel.inference.run.segment` would with the saved model.

    Parameters
    ----------
    result : FinetuneResult
    volume : Volume or array_like, shape (Z, Y, X)
    threshold : float, optional
        A plain threshold; default the level the run worked at when the parent's card has a
        level rule (the saved model keeps it), else the parent card's post-processing (e.g. a
        cascade's hysteresis), else its threshold, else 0.5
        (:meth:`~napari_vessel.postprocess.labels.Postprocessing.for_model`).

    Returns
    -------
    prob : ndarray of float32, shape (Z, Y, X)
    labels : ndarray of uint8, same shape
    """
    from napari_vessel.inference.run import predict
    from napari_vessel.models import registry
    from napari_vessel.postprocess.labels import Postprocessing

    spec = registry.get(result.parent)
    image, _ = prepare_image(spec, as_volume(volume), cancel=cancel)
    prob = predict(ProbabilityNet(result.model, spec), image, patch_size=spec.patch_size_zyx,
                   device=next(result.model.parameters()).device, progress=progress,
                   cancel=cancel)
    recipe = Postprocessing.for_model(spec, threshold)
    if recipe.rule is not None and result.level is not None:  # as the saved child labels it
        recipe = recipe.rethreshold(result.level)
    return prob, recipe.apply(prob)


def save_finetuned(result: FinetuneResult, name: str, *, parent: str | None = None,
                   volume_source: Any = None, folder: Any = None, extra: dict | None = None):
    """Save a fine-tuned model as a new user model; see :func:`.finetune_save.save_finetuned`."""
    from napari_vessel.training.finetune_save import save_finetuned as _save

    return _save(result, name, parent=parent, volume_source=volume_source, folder=folder,
                 extra=extra)


def check_new_name(name: str, folder: Any = None) -> str:
    """Check a new model name is valid and free; see :func:`.finetune_save.check_new_name`."""
    from napari_vessel.training.finetune_save import check_new_name as _check

    return _check(name, folder)
