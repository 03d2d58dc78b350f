"""Errors that carry a message meant for the user.

Every check on user input raises :class:`InputError` (a ``ValueError``) with a message that names the
problem and says what to do. The CLI prints it without a traceback and exits non-zero; the napari
widgets show it as a notification.
"""

from __future__ import annotations

__all__ = ["InputError", "Cancelled"]


class InputError(ValueError):
    """Bad input from the user: wrong file, shape, parameter or model name."""


class Cancelled(RuntimeError):
    """Long work was stopped by the user through a :class:`~napari_vessel.progress.CancelToken`."""
