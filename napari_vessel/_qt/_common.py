"""Small helpers shared by the dock widgets: notifications, layer naming, running core work.

Widgets never compute on the GUI thread: :func:`start_worker` runs a core function in napari's
``thread_worker`` with a :class:`~napari_vessel.progress.CancelToken` and a progress callback that
is forwarded to the main thread through the worker's ``yielded`` signal.
"""

from __future__ import annotations

import re
from collections.abc import Callable
from typing import Any

from napari.qt.threading import create_worker
from napari.utils.notifications import show_error, show_info, show_warning
from qtpy.QtCore import QObject, Signal
from qtpy.QtWidgets import QGroupBox, QVBoxLayout

from napari_vessel.errors import Cancelled, InputError
from napari_vessel.progress import CancelToken

__all__ = ["notify_error", "error_text", "show_info", "show_warning", "output_name", "name_metadata",
           "full_name", "shorten", "group_box", "start_worker", "Job", "MAX_NAME", "FULL_NAME_KEY",
           "OUTPUT_KEY"]


def error_text(err: BaseException | str) -> str:
    """What the user is told about ``err``: the message of an :class:`InputError` (or a plain
    string) as it is, any other exception with its type (``"RuntimeError: boom"``)."""
    if isinstance(err, InputError | str):
        return str(err)
    return f"{type(err).__name__}: {err}"


def notify_error(err: BaseException | str) -> None:
    """Show a user-facing error as a napari notification (no traceback dialog)."""
    show_error(error_text(err))


def group_box(title: str, widget: Any) -> QGroupBox:
    """A titled frame around a magicgui widget, for the sections of a dock."""
    box = QGroupBox(title)
    layout = QVBoxLayout(box)
    layout.setContentsMargins(4, 4, 4, 4)
    layout.addWidget(widget.native)
    return box


#: Longest output layer name (characters): napari's layer list shows about this many.
MAX_NAME = 32
#: The suffix keeps at most this many characters when the name is too long (e.g. a model name).
MAX_SUFFIX = 20
#: ``metadata[FULL_NAME_KEY]`` of an output layer: its name before shortening.
FULL_NAME_KEY = "napari_vessel_full_name"
#: ``metadata[OUTPUT_KEY]`` marks a layer napari-vessel derived (a preview, a projection, a
#: graph layer, a point): no input for the docks. Its value names the layer's role.
OUTPUT_KEY = "napari_vessel_output"


def shorten(text: str, width: int) -> str:
    """``text`` cut to ``width`` characters with an ellipsis in the middle (start and end kept).

    Examples
    --------
    >>> shorten("mouse3_cortex_2024-05-17_stack", 16)
    'mouse3_c…7_stack'
    """
    if len(text) <= width:
        return text
    if width < 3:
        return text[:width]
    head, tail = width // 2, (width - 1) // 2
    return f"{text[:head]}…{text[len(text) - tail:]}"


def _shorten_suffix(suffix: str, width: int) -> str:
    """Like :func:`shorten`, but a final ``"(…)"`` (a model name) is cut first."""
    match = re.fullmatch(r"(.*\()(.+)(\))", suffix)
    if match is None or len(suffix) <= width:
        return shorten(suffix, width)
    head, inner, tail = match.groups()
    room = width - len(head) - len(tail)
    return f"{head}{shorten(inner, room)}{tail}" if room >= 5 else shorten(suffix, width)


def full_name(source: str, suffix: str) -> str:
    """The unshortened name ``"<source> <suffix>"`` (kept in ``metadata[FULL_NAME_KEY]``)."""
    return f"{source} {suffix}".strip()


def output_name(source: str, suffix: str, existing: Any = ()) -> str:
    """Name of an output layer: ``"<source> <suffix>"``, short, unique among ``existing`` names.

    A name longer than :data:`MAX_NAME` is shortened in the middle of each part (the suffix to
    :data:`MAX_SUFFIX` characters first, cutting a model name in parentheses, then the source),
    so the layer list shows its start and end, e.g. ``"mouse3_co…05-17 vessels (tvnet)"``; the
    full name goes in the layer's
    ``metadata[FULL_NAME_KEY]`` (see :func:`name_metadata`). A taken name gets ``" [2]"``,
    ``" [3]"``, … .
    """
    names = {getattr(layer, "name", layer) for layer in existing}
    base = full_name(source, suffix)
    if len(base) > MAX_NAME:
        suffix = _shorten_suffix(suffix.strip(),
                                 max(MAX_SUFFIX, MAX_NAME - 1 - len(source.strip())))
        source = shorten(source.strip(), max(MAX_NAME - 1 - len(suffix), 8))
        base = full_name(source, suffix)
    name, k = base, 2
    while name in names:
        name, k = f"{base} [{k}]", k + 1
    return name


def name_metadata(source: str, suffix: str) -> dict[str, str]:
    """``{FULL_NAME_KEY: "<source> <suffix>"}``, to add to an output layer's metadata."""
    return {FULL_NAME_KEY: full_name(source, suffix)}


class Job:
    """A running piece of core work: its worker, its cancel token and its progress queue."""

    def __init__(self, worker: Any, token: CancelToken) -> None:
        self.worker = worker
        self.token = token

    def cancel(self) -> None:
        """Ask the core function to stop at its next check."""
        self.token.cancel()


class _Outcome:
    """What the worker function gave: a value or an exception."""

    def __init__(self, value: Any = None, error: BaseException | None = None) -> None:
        self.value = value
        self.error = error


class _Relay(QObject):
    """Carries progress from the worker thread to the main thread (queued signal)."""

    progress = Signal(float, str)


def start_worker(
    func: Callable[..., Any],
    *,
    on_progress: Callable[[float, str], None] | None = None,
    on_done: Callable[[Any], None] | None = None,
    on_error: Callable[[BaseException], None] | None = None,
    on_cancelled: Callable[[], None] | None = None,
    on_finished: Callable[[], None] | None = None,
) -> Job:
    """Run ``func(progress=..., cancel=...)`` in a thread; callbacks run on the main thread.

    Parameters
    ----------
    func : callable
        Core function accepting ``progress`` and ``cancel`` keyword arguments.
    on_progress : callable, optional
        Receives ``(fraction, message)`` on the main thread.
    on_done : callable, optional
        Receives the return value of ``func`` on the main thread.
    on_error : callable, optional
        Receives an exception raised by ``func`` (default: a notification).
    on_cancelled : callable, optional
        Called instead of ``on_done`` when the user cancelled (default: an info notification).
    on_finished : callable, optional
        Called last in every case (to re-enable buttons).
    """
    token = CancelToken()
    relay = _Relay()
    if on_progress is not None:
        relay.progress.connect(on_progress)

    def _run() -> Any:
        # Exceptions travel back as a value: napari's workers would otherwise also report them as
        # traceback notifications, on top of our own message.
        try:
            return _Outcome(value=func(progress=relay.progress.emit, cancel=token))
        except BaseException as err:  # noqa: BLE001 - handed to the main thread below
            return _Outcome(error=err)

    worker = create_worker(_run, _start_thread=False, _ignore_errors=True)
    worker._vessel_relay = relay  # keep the relay alive as long as the worker

    def _returned(outcome: _Outcome) -> None:
        err = outcome.error
        if err is None:
            if on_done is not None:
                on_done(outcome.value)
        elif isinstance(err, Cancelled):
            if on_cancelled is not None:
                on_cancelled()
            else:
                show_info("cancelled; nothing was changed")
        elif on_error is not None:
            on_error(err)
        else:
            notify_error(err)

    worker.returned.connect(_returned)
    if on_finished is not None:
        worker.finished.connect(on_finished)
    worker.start()
    return Job(worker, token)
