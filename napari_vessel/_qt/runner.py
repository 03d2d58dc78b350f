"""One dock's long run: start, progress, Cancel, the "cancelling…" state, errors and the end.

Every dock that runs core work (Segment, Fine-tune, Preprocess, Vessel analysis) hands it to a
:class:`DockRunner`, which owns what is the same in all of them:

- the core function runs in napari's thread worker (:func:`~._common.start_worker`) with a
  :class:`~napari_vessel.progress.CancelToken` and a progress callback;
- while it runs, the run buttons are disabled, Cancel is enabled and the progress bar shows;
  progress messages go to the status line, except once Cancel was pressed ("cancelling…" stays);
- a cancelled run calls no finish callback (so adds no layer): the status says "cancelled" and
  the user is told;
- an error (in the worker or in the finish callback) becomes ``"failed: <message>"`` in the status
  line and one notification; the user's layers are not touched;
- at the end, in every case, the buttons are enabled again and the progress bar hidden.

What differs between docks is said with parameters, not with copies: which buttons, which status
label, the message of a cancelled run, whether the status holds while stopping
(``hold_status``), and whether a stopped run still gives a result (``stop_keeps_result``: the
Fine-tune dock's *Stop* keeps the best state so far, where the other docks' Cancel adds nothing).
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import Any

from napari_vessel._qt._common import Job, error_text, start_worker

__all__ = ["DockRunner", "RunnerMixin"]


def _cancel_pressed(job: Job) -> bool:
    return job.token.cancelled


class DockRunner:
    """Runs a dock's core work in a worker and keeps the dock's buttons, bar and status right.

    Parameters
    ----------
    buttons : sequence of magicgui widgets
        Disabled while a run is on (Segment, Preview, Apply, Start …).
    cancel_button : magicgui widget or None
        Enabled only while a run is on.
    progress : ProgressBar or None
        Range 0-1000; shown while a run is on.
    status : Label
        The dock's status line.
    notify : callable(error)
        Shows an error to the user (the dock's own, so tests can capture it).
    info : callable(str)
        Shows an information to the user.
    cancelled : str
        What the user is told after a cancelled run.
    hold_status : callable(Job) -> bool, optional
        While it returns True, progress messages do not replace the status (default: once Cancel
        was pressed, so "cancelling…" stays).
    stop_keeps_result : bool
        False (default): a run whose Cancel was pressed is treated as cancelled even if the core
        function returned a value, so nothing is added. True: the core function decides; a value
        it returns after a stop (e.g. the best state so far) goes to the finish callback.
    on_idle : callable, optional
        Called at the end of every run, after the buttons are enabled again (e.g. to enable a
        button only when there is something to act on).

    Attributes
    ----------
    job : Job or None
        The running work.
    """

    def __init__(self, *, buttons: Sequence[Any], cancel_button: Any, progress: Any, status: Any,
                 notify: Callable[[Any], None], info: Callable[[str], None],
                 cancelled: str = "cancelled; nothing was changed",
                 hold_status: Callable[[Job], bool] = _cancel_pressed,
                 stop_keeps_result: bool = False,
                 on_idle: Callable[[], None] | None = None) -> None:
        self.buttons = tuple(buttons)
        self.cancel_button = cancel_button
        self.progress = progress
        self.status = status
        self.notify = notify
        self.info = info
        self.cancelled_message = cancelled
        self.hold_status = hold_status
        self.stop_keeps_result = stop_keeps_result
        self.on_idle = on_idle
        self.job: Job | None = None

    @property
    def running(self) -> bool:
        """True while a run is on."""
        return self.job is not None

    def refuse(self, message: str) -> bool:
        """True (and ``message`` shown) when a run is already on; False when one may start."""
        if self.job is None:
            return False
        self.notify(message)
        return True

    def start(self, work: Callable[..., Any], on_done: Callable[[Any], None], *,
              starting: str = "starting…",
              on_cancelled: Callable[[], None] | None = None,
              on_failed: Callable[[BaseException], None] | None = None) -> Job:
        """Run ``work(progress=..., cancel=...)`` in a worker.

        Parameters
        ----------
        work : callable
            The core call; takes ``progress`` and ``cancel`` keyword arguments.
        on_done : callable(result)
            The dock's finish callback, on the main thread, only when the run was not cancelled:
            it adds the layers and sets the status. An exception it raises is shown as a failure.
        starting : str
            The status while the run starts.
        on_cancelled, on_failed : callable, optional
            Extra clean-up of the dock after a cancelled / failed run (the status, the message
            and the buttons are done here).

        Returns
        -------
        Job
        """
        self._set_running(True)
        self.status.value = starting

        def done(result: Any) -> None:
            job = self.job
            if not self.stop_keeps_result and job is not None and job.token.cancelled:
                cancelled()  # pressed after the core's last check: nothing is added all the same
                return
            try:
                on_done(result)
            except Exception as err:  # noqa: BLE001 - the dock added nothing; say why
                failed(err)

        def cancelled() -> None:
            self.status.value = "cancelled"
            self.info(self.cancelled_message)
            if on_cancelled is not None:
                on_cancelled()

        def failed(err: BaseException) -> None:
            self.fail(err)
            if on_failed is not None:
                on_failed(err)

        self.job = start_worker(work, on_progress=self._progress, on_done=done, on_error=failed,
                                on_cancelled=cancelled, on_finished=self._finished)
        return self.job

    def cancel(self, text: str = "cancelling…") -> bool:
        """Ask the running work to stop at its next check; ``text`` shows until it has.

        Returns False when nothing was running.
        """
        if self.job is None:
            return False
        self.job.cancel()
        self.status.value = text
        return True

    def fail(self, err: BaseException | str) -> None:
        """Say that the run failed: ``"failed: <message>"`` in the status and a notification."""
        self.status.value = f"failed: {error_text(err)}"
        self.notify(err)

    def _progress(self, fraction: float, message: str) -> None:
        if self.job is None:
            return  # a late message of a run that has ended
        if self.progress is not None:
            self.progress.value = int(round(1000 * min(max(fraction, 0.0), 1.0)))
        if message and not self.hold_status(self.job):
            self.status.value = message

    def _set_running(self, on: bool) -> None:
        for button in self.buttons:
            button.enabled = not on
        if self.cancel_button is not None:
            self.cancel_button.enabled = on
        if self.progress is not None:
            self.progress.visible = on
            self.progress.value = 0

    def _finished(self) -> None:
        self.job = None
        self._set_running(False)
        if self.on_idle is not None:
            self.on_idle()


class RunnerMixin:
    """For a dock with a :class:`DockRunner` in ``self.runner``: ``job``, the running work."""

    runner: DockRunner

    @property
    def job(self) -> Job | None:
        """The running work, or None."""
        return self.runner.job
