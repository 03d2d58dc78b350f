"""Tell what changed in a napari Labels layer: brush strokes, tool edits, undo and redo.

napari 0.9 reports edits in three ways, and :class:`EditWatcher` turns them into two callbacks:

- ``labels_update`` (each mouse move of a drag, each ``data_setitem``) gives the box of the visible
  slice that changed: ``on_live(region)`` at once, so a projection can follow the brush.
- ``paint`` (once per finished stroke or grouped edit) gives the history atoms. Outside
  ``block_history`` napari sends it *before* writing the data, so ``on_edit(regions)`` is called
  on the next turn of the event loop, when the data is written.
- undo and redo only refresh the layer (``set_data``). A ``set_data`` that is not followed by an
  edit event in the same call, and not caused by moving a slider, calls ``on_unknown()``.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from qtpy.QtCore import QTimer

from napari_vessel._qt._common import start_worker
from napari_vessel.errors import InputError
from napari_vessel.projection import regions_from_paint_event
from napari_vessel.refine.review import region_from_update

__all__ = ["EditWatcher", "defer", "run_in_background"]


def defer(func: Callable[[], None], msec: int = 0) -> None:
    """Call ``func`` on the GUI thread after ``msec`` milliseconds (0: next event-loop turn)."""
    QTimer.singleShot(msec, func)


def run_in_background(func: Callable[..., Any], *, on_done: Callable[[Any], None],
                      on_error: Callable[[BaseException], None],
                      on_cancelled: Callable[[], None] | None = None,
                      on_finished: Callable[[], None] | None = None) -> Any:
    """:func:`~napari_vessel._qt._common.start_worker`, silent on cancel unless told otherwise."""
    return start_worker(func, on_done=on_done, on_error=on_error,
                        on_cancelled=on_cancelled or (lambda: None), on_finished=on_finished)


class EditWatcher:
    """Connects to a Labels layer's events and reports changed regions.

    Parameters
    ----------
    viewer : napari.Viewer
        The viewer (its dims tell slider moves from data changes).
    layer : napari.layers.Labels
        The 3D labels to watch.
    on_edit : callable, optional
        ``on_edit(regions)`` after a finished edit, with the data written; ``regions`` is a list
        of tuples of slices or index arrays (see :func:`~napari_vessel.projection.LabelMIP.update`).
    on_live : callable, optional
        ``on_live(region)`` during a drag, with a box (tuple of slices) of the changed view.
    on_unknown : callable, optional
        ``on_unknown()`` when the data changed with no region given (undo, redo, replaced data).
    """

    def __init__(self, viewer: Any, layer: Any, *,
                 on_edit: Callable[[list], None] | None = None,
                 on_live: Callable[[tuple], None] | None = None,
                 on_unknown: Callable[[], None] | None = None) -> None:
        self.viewer, self.layer = viewer, layer
        self.on_edit, self.on_live, self.on_unknown = on_edit, on_live, on_unknown
        self._edits = 0  # edit events seen
        self._view = self._view_state()
        self._check_pending = False
        self.closed = False
        events = layer.events
        events.paint.connect(self._on_paint)
        events.labels_update.connect(self._on_labels_update)
        events.set_data.connect(self._on_set_data)
        events.data.connect(self._on_data)

    def close(self) -> None:
        """Disconnect from the layer."""
        if self.closed:
            return
        self.closed = True
        events = self.layer.events
        for event, handler in ((events.paint, self._on_paint),
                               (events.labels_update, self._on_labels_update),
                               (events.set_data, self._on_set_data), (events.data, self._on_data)):
            event.disconnect(handler)

    def _view_state(self) -> tuple:
        dims = self.viewer.dims
        return tuple(dims.current_step), dims.ndisplay, tuple(dims.order)

    def displayed_axes(self) -> list[int]:
        """The layer's axes shown on screen (world axes shifted to the layer's own)."""
        shift = self.viewer.dims.ndim - self.layer.ndim
        return [d - shift for d in self.viewer.dims.displayed if d - shift >= 0]

    def _on_paint(self, event: Any) -> None:
        self._edits += 1
        try:
            regions = regions_from_paint_event(event.value)
        except InputError:
            regions = None
        defer(lambda: self._deliver(regions))

    def _deliver(self, regions: list | None) -> None:
        if self.closed:
            return
        if regions is None:
            if self.on_unknown is not None:
                self.on_unknown()
        elif self.on_edit is not None:
            self.on_edit(regions)

    def _on_labels_update(self, event: Any) -> None:
        self._edits += 1
        if self.on_live is None:
            return
        offset = list(event.offset)
        region = region_from_update(offset, event.data.shape[: len(offset)],
                                    self.displayed_axes(), self.layer.ndim)
        self.on_live(region)

    def _on_set_data(self, _event: Any = None) -> None:
        view = self._view_state()
        if view != self._view:  # the slider moved or the view changed: a new slice, same data
            self._view = view
            return
        if not self._check_pending:
            self._check_pending = True
            seen = self._edits
            defer(lambda: self._check(seen))

    def _check(self, seen: int) -> None:
        self._check_pending = False
        if self.closed or self._edits != seen:
            return  # an edit event came with it: already reported
        if self.on_unknown is not None:
            self.on_unknown()

    def _on_data(self, _event: Any = None) -> None:
        if not self.closed and self.on_unknown is not None:
            defer(lambda: None if self.closed else self.on_unknown())
