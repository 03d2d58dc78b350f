"""Progress reporting and cancellation for long work, free of any GUI.

Long functions in the core take two optional keyword arguments:

``progress``
    A callable ``progress(fraction, message)`` with ``fraction`` in [0, 1]. The CLI passes a tqdm
    adapter (:func:`tqdm_progress`); the napari widgets pass a function that forwards to a
    thread worker's ``yielded`` signal.
``cancel``
    A :class:`CancelToken`. The function calls ``cancel.check()`` between units of work (a batch, a
    chunk, a training step), which raises :class:`~napari_vessel.errors.Cancelled` once the user has
    asked to stop. Nothing half-finished is returned or written.
"""

from __future__ import annotations

import threading
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from typing import Any

from napari_vessel.errors import Cancelled

__all__ = ["Progress", "CancelToken", "Cancelled", "no_progress", "scaled", "tqdm_progress",
           "check_between_layers"]

Progress = Callable[[float, str], None]


def no_progress(fraction: float, message: str = "") -> None:
    """A progress callback that does nothing."""


class CancelToken:
    """A thread-safe flag the user sets to stop long work.

    Examples
    --------
    >>> token = CancelToken()
    >>> token.check()  # nothing happens
    >>> token.cancel()
    >>> token.cancelled
    True
    """

    def __init__(self) -> None:
        self._event = threading.Event()

    def cancel(self) -> None:
        """Ask the work to stop at its next check."""
        self._event.set()

    @property
    def cancelled(self) -> bool:
        """True once :meth:`cancel` was called."""
        return self._event.is_set()

    def check(self) -> None:
        """Raise :class:`Cancelled` if the user asked to stop."""
        if self._event.is_set():
            raise Cancelled("stopped by the user")


@contextmanager
def check_between_layers(module: Any, cancel: CancelToken | None) -> Iterator[None]:
    """Within the block, every layer of ``module`` checks ``cancel`` before it runs.

    One forward pass of a big network over a whole stack takes seconds; checking the token
    before each of its layers stops it within one layer's time (a fraction of a second), which
    a check between batches cannot. The hooks are removed on leaving the block.

    Parameters
    ----------
    module : torch.nn.Module
        The network (anything with ``modules()`` whose items take forward pre-hooks).
    cancel : CancelToken or None
        None: nothing is registered.
    """
    if cancel is None:
        yield
        return

    def _check(_layer: Any, _inputs: Any) -> None:
        cancel.check()

    handles = [layer.register_forward_pre_hook(_check) for layer in module.modules()]
    try:
        yield
    finally:
        for handle in handles:
            handle.remove()


def scaled(progress: Progress | None, start: float, stop: float, prefix: str = "") -> Progress:
    """Map a sub-task's [0, 1] progress into ``[start, stop]`` of the parent's progress.

    A non-empty ``prefix`` is put before the sub-task's messages (``"preprocessing: done"``), so
    the user can tell which stage speaks.
    """
    if progress is None:
        return no_progress

    def _inner(fraction: float, message: str = "") -> None:
        fraction = min(max(float(fraction), 0.0), 1.0)
        if prefix and message:
            message = f"{prefix}: {message}"
        progress(start + (stop - start) * fraction, message)

    return _inner


@contextmanager
def tqdm_progress(description: str, *, disable: bool = False) -> Iterator[Progress]:
    """Yield a progress callback that drives a tqdm bar (for the command line)."""
    from tqdm.auto import tqdm

    bar = tqdm(total=1000, desc=description, unit="‰", disable=disable, leave=True,
               bar_format="{desc}: {percentage:3.0f}%|{bar}| {elapsed}<{remaining} {postfix}")

    def _update(fraction: float, message: str = "") -> None:
        target = int(round(min(max(fraction, 0.0), 1.0) * 1000))
        if target > bar.n:
            bar.update(target - bar.n)
        if message:
            bar.set_postfix_str(message, refresh=False)

    try:
        yield _update
    finally:
        bar.close()
