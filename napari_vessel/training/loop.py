"""The one training loop: when to take the next step, and the optimisation step itself.

Supervised training (:func:`~napari_vessel.training.train.train`), UMIS training
(:func:`~napari_vessel.training.train_unsupervised.train_unsupervised`) and fine-tuning
(:class:`~napari_vessel.training.finetune_loop.FinetuneLoop`) each say what one step does
(draw a batch, compute the loss, record it, write a checkpoint); :func:`run_steps` decides for all
of them when to stop (the step count, the time budget, Cancel, or the step itself), and
:func:`optimise` takes the gradient step. The device is the caller's: the model and the batches
are on it before the step runs.
"""

from __future__ import annotations

import time
from collections.abc import Callable

import torch

from napari_vessel.progress import CancelToken

__all__ = ["run_steps", "optimise"]


def run_steps(step: Callable[[int], bool | None], *, first: int = 0, total: int | None = None,
              minutes: float | None = None, started: float | None = None,
              cancel: CancelToken | None = None, next_step_s: Callable[[], float] | None = None,
              free_steps: int = 0) -> int:
    """Call ``step(i)`` for ``i = first, first + 1, ...`` until one of the stops below.

    Before step ``i``, in this order: Cancel (``cancel.check()`` raises
    :class:`~napari_vessel.errors.Cancelled`), the step count (``i == total``), and the time budget
    (the time since ``started``, plus the expected length of the next step when ``next_step_s`` is
    given, is past ``minutes``; the first ``free_steps`` steps are exempt). After step ``i``: the
    step returned False (that step counts).

    Parameters
    ----------
    step : callable(int) -> bool or None
        One training step; return False to stop after it.
    first : int
        Index of the first step (a resumed run continues from its checkpoint's step).
    total : int, optional
        Stop before this index (None: no count limit; give ``minutes`` or a step that stops).
    minutes : float, optional
        Time budget in minutes, measured from ``started``.
    started : float, optional
        ``time.monotonic()`` when the run began (default: now).
    cancel : CancelToken, optional
        Checked before every step.
    next_step_s : callable() -> float, optional
        Expected seconds of the next step: stop when it would end past the budget.
    free_steps : int
        Steps taken whatever the time budget says (fine-tuning always takes one).

    Returns
    -------
    int
        The index of the first step not run (``total`` when the count was reached).
    """
    if total is None and minutes is None:
        raise ValueError("give a step count (total) or a time budget (minutes)")
    started = time.monotonic() if started is None else started
    i = first
    while True:
        if cancel is not None:
            cancel.check()
        if total is not None and i >= total:
            return i
        if minutes is not None and i - first >= free_steps:
            ahead = next_step_s() if next_step_s is not None else 0.0
            if time.monotonic() - started + ahead > minutes * 60:
                return i
        go_on = step(i)
        i += 1
        if go_on is False:
            return i


def optimise(optimiser: torch.optim.Optimizer, loss: torch.Tensor) -> float:
    """One gradient step on ``loss``; returns its value."""
    optimiser.zero_grad(set_to_none=True)
    loss.backward()
    optimiser.step()
    return float(loss.detach())
