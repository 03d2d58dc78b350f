"""What the Fine-tune dock runs in its worker thread: fine-tune, save, optionally segment.

Kept apart from the widget so it reads top to bottom: the core's
:func:`~napari_vessel.training.finetune.finetune`, then
:func:`~napari_vessel.training.finetune.save_finetuned` (atomic; a full or read-only disk is an
:class:`~napari_vessel.errors.InputError` that says so), then, when asked,
:func:`~napari_vessel.inference.run.segment` with the new model. Nothing here touches the viewer.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from napari_vessel.errors import Cancelled
from napari_vessel.io.volume import Volume
from napari_vessel.progress import CancelToken, Progress, scaled
from napari_vessel.training.finetune import FinetuneConfig, FinetuneResult, finetune, save_finetuned

__all__ = ["FinetuneJob", "FinetuneOutcome", "run_finetune"]


@dataclass
class FinetuneJob:
    """Everything one run needs, read from the dock on the GUI thread.

    Parameters
    ----------
    model : str
        The registered network to start from.
    volume : Volume
        The image.
    name : str
        Name of the new model (already checked).
    config : FinetuneConfig
    labels : ndarray of bool, shape (Z, Y, X), optional
        Supervised: a copy of the corrected labels (non-zero = vessel).
    edited_mask : ndarray of bool, optional
        Supervised: the voxels the user edited; None lets the core find them as the difference
        with the model's prediction.
    checked_slices : sequence of int
        Supervised: slices the user confirmed whole.
    segment : bool
        Segment the volume with the new model when done.
    preview_z : callable returning int, optional
        The slice to preview (the viewer's current slice).
    segment_token : CancelToken
        Stops the segmentation that follows the training (not the training).
    phase : str
        What the worker is doing: ``"training"``, ``"saving"`` or ``"segmenting"`` (set by
        :func:`run_finetune`; *Stop* during training keeps the segmentation asked for).
    """

    model: str
    volume: Volume
    name: str
    config: FinetuneConfig
    labels: np.ndarray | None = None
    edited_mask: np.ndarray | None = None
    checked_slices: Sequence[int] = ()
    segment: bool = False
    preview_z: Callable[[], int] | None = None
    segment_token: CancelToken = field(default_factory=CancelToken)
    phase: str = "training"


@dataclass
class FinetuneOutcome:
    """What a run gave back to the GUI thread.

    Attributes
    ----------
    result : FinetuneResult
    weights : Path or None
        The saved ``.safetensors`` (None: nothing saved, the run stopped before its first step).
    segmentation : tuple (prob, labels, manifest) or None
        The new model's segmentation, when asked for and not stopped.
    segment_stopped : bool
        True when the user stopped the segmentation (the model is saved all the same).
    parent_labels : ndarray of uint8 or None
        The parent's labels of the same volume, for the before / after comparison.
    """

    result: FinetuneResult
    weights: Path | None = None
    segmentation: tuple | None = None
    segment_stopped: bool = False
    parent_labels: np.ndarray | None = None


def run_finetune(job: FinetuneJob, *, progress: Progress, cancel: CancelToken,
                 on_update: Callable[[Any], None] | None = None) -> FinetuneOutcome:
    """Fine-tune, save the new model, and segment with it if asked (in a worker thread).

    Parameters
    ----------
    job : FinetuneJob
    progress : callable(fraction, message)
    cancel : CancelToken
        Stops the training and keeps the best state so far (the model is still saved, and
        segments the volume when ``job.segment``); ``job.segment_token`` stops the
        segmentation that follows.
    on_update : callable(FinetuneUpdate), optional
        Live loss curve and preview, called from this thread.

    Returns
    -------
    FinetuneOutcome

    Raises
    ------
    InputError
        Bad input (from the core), or the model could not be saved.
    """
    train_share = 0.8 if job.segment else 1.0
    job.phase = "training"
    result = finetune(job.model, job.volume, labels=job.labels, edited_mask=job.edited_mask,
                      checked_slices=job.checked_slices, config=job.config,
                      progress=scaled(progress, 0.0, train_share), cancel=cancel,
                      on_update=on_update, preview_z=job.preview_z)
    if result.kept_parent:  # declined, guarded or stopped at once: the parent is the answer
        return FinetuneOutcome(result)
    job.phase = "saving"
    progress(train_share, "saving the new model…")
    weights = save_finetuned(result, job.name, extra={"started_from": "napari Fine-tune dock"})
    outcome = FinetuneOutcome(result, weights)
    if job.segment:
        from napari_vessel.inference.run import segment
        from napari_vessel.training.finetune_save import segment_finetuned

        job.phase = "segmenting"  # from here on, Stop stops the segmentation
        middle = (train_share + 1.0) / 2
        progress(train_share, f"segmenting with {job.name}…")
        try:
            outcome.segmentation = segment_finetuned(
                job.volume, job.name, weights, device=job.config.device,
                progress=scaled(progress, train_share, middle), cancel=job.segment_token)
            progress(middle, f"segmenting with {job.model} for the comparison…")
            outcome.parent_labels = segment(job.volume, job.model, device=job.config.device,
                                            progress=scaled(progress, middle, 1.0),
                                            cancel=job.segment_token)[1]
        except Cancelled:
            outcome.segment_stopped = outcome.segmentation is None
    return outcome
