"""The label-MIP overlay: a 2D Labels layer that follows a 3D labels layer as it is painted.

:class:`LabelMipOverlay` keeps a :class:`~napari_vessel.projection.LabelMIP` of the labels and
shows its array as a 2D layer. Brush strokes update only the columns they touched (live during a
drag); undo and redo recompute the projection after a short pause. With painting on the MIP
switched on, a stroke drawn on the overlay is placed in 3D at the depth of the vessel under it,
each connected piece of the stroke as one connected piece (or, with the eraser, clears the columns
within the slab) as one undo step of the 3D labels.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import numpy as np
from qtpy.QtCore import QTimer

from napari_vessel._qt._common import OUTPUT_KEY, name_metadata, output_name
from napari_vessel._qt.review_watch import EditWatcher, defer
from napari_vessel.errors import InputError
from napari_vessel.projection import LabelMIP
from napari_vessel.refine.review import erase_columns, paint_on_projection, projected_geometry, stroke_pixels

__all__ = ["LabelMipOverlay", "apply_edit_to_layer", "LABEL_MIP_COLOUR",
           "LABEL_OUTLINE_COLOUR"]

#: Every label of the label MIP is drawn in this one colour (half transparent), which no
#: colormap of the image or probability MIPs uses.
LABEL_MIP_COLOUR = "cyan"
#: Over a depth-coded MIP (whose hues include cyan) the label MIP is drawn as outlines of this.
LABEL_OUTLINE_COLOUR = "white"


def _one_colour(colour: str) -> Any:
    from napari.utils.colormaps import DirectLabelColormap

    return DirectLabelColormap(color_dict={None: colour, 0: "transparent"})


def apply_edit_to_layer(layer: Any, edit: Any) -> int:
    """Write a :class:`~napari_vessel.refine.edits.Edit` into a Labels layer as one undo step."""
    if edit.size == 0:
        return 0
    hidden = not layer.visible
    if hidden:  # napari 0.9 cannot write into the current slice of a hidden labels layer
        layer.visible = True
    try:
        with layer.block_history():
            layer.data_setitem(edit.index, edit.new)
    finally:
        if hidden:
            layer.visible = False
    return edit.size


class LabelMipOverlay:
    """A 2D layer showing the MIP of a 3D Labels layer, kept in sync with its edits.

    Parameters
    ----------
    viewer : napari.Viewer
        Where the overlay layer is added.
    labels_layer : napari.layers.Labels
        The 3D labels.
    axis : int
        Projection axis (0 = z).
    slab : (int, int), optional
        ``[start, stop)`` along ``axis``; None for the whole stack.
    image_data : callable, optional
        Returns the image to place strokes drawn on the MIP (needed to paint on the MIP).
    on_error : callable, optional
        Shows a user-facing error (default: raise).
    debounce_ms : int
        Pause after undo/redo before the projection is recomputed.
    """

    def __init__(self, viewer: Any, labels_layer: Any, *, axis: int = 0,
                 slab: tuple[int, int] | None = None,
                 image_data: Callable[[], Any] | None = None,
                 on_error: Callable[[Any], None] | None = None, debounce_ms: int = 150) -> None:
        self.viewer, self.labels = viewer, labels_layer
        self.image_data = image_data
        self.on_error = on_error
        self.mip = LabelMIP(labels_layer.data, axis=axis, mode="max", slab=slab)
        scale, translate = projected_geometry(labels_layer.scale, labels_layer.translate, axis)
        self.layer = viewer.add_labels(
            self.mip.mip, name=output_name(labels_layer.name, "label MIP", viewer.layers),
            scale=scale, translate=translate, opacity=0.5, colormap=_one_colour(LABEL_MIP_COLOUR),
            metadata={OUTPUT_KEY: "label MIP", "source_layer": labels_layer.name,
                      **name_metadata(labels_layer.name, "label MIP")},
        )
        self.outline = False
        self.layer.editable = False
        self._recompute_timer = QTimer()
        self._recompute_timer.setSingleShot(True)
        self._recompute_timer.setInterval(debounce_ms)
        self._recompute_timer.timeout.connect(self.recompute)
        self._refresh_timer = QTimer()
        self._refresh_timer.setSingleShot(True)
        self._refresh_timer.setInterval(30)  # at most ~30 redraws a second during a drag
        self._refresh_timer.timeout.connect(self._refresh)
        self.watcher = EditWatcher(viewer, labels_layer, on_edit=self.update, on_live=self.update,
                                   on_unknown=self._recompute_timer.start)
        self.painting = False
        self.layer.events.paint.connect(self._on_mip_stroke)
        self.layer.bind_key("Control-Z", lambda _layer: self.labels.undo(), overwrite=True)
        self.layer.bind_key("Control-Shift-Z", lambda _layer: self.labels.redo(), overwrite=True)

    @property
    def axis(self) -> int:
        """The projection axis."""
        return self.mip.axis

    @property
    def slab(self) -> tuple[int, int] | None:
        """The projected slab ``[start, stop)`` along the axis, or None for the whole stack."""
        return self.mip.slab

    @property
    def alive(self) -> bool:
        """True while both the overlay and the labels layer are in the viewer."""
        layers = self.viewer.layers
        return not self.watcher.closed and self.layer in layers and self.labels in layers

    def close(self, remove_layer: bool = False) -> None:
        """Stop following the labels (and remove the overlay layer if asked)."""
        self.watcher.close()
        self._recompute_timer.stop()
        self._refresh_timer.stop()
        if remove_layer and self.layer in self.viewer.layers:
            self.viewer.layers.remove(self.layer)

    def set_outline(self, on: bool) -> None:
        """Draw the labels as white outlines (over a depth-coded MIP) or as cyan areas."""
        self.outline = bool(on)
        self.layer.colormap = _one_colour(LABEL_OUTLINE_COLOUR if on else LABEL_MIP_COLOUR)
        self.layer.contour = 1 if on else 0
        self.layer.opacity = 0.6 if on else 0.5

    def set_slab(self, slab: tuple[int, int] | None) -> None:
        """Project another slab (e.g. when the slider moved)."""
        if slab != self.mip.slab:
            self.mip.set_slab(self.labels.data, slab)
            self._show(None)

    def update(self, region: Any) -> None:
        """Recompute the projection where ``region`` of the labels changed."""
        if not self.alive:
            return
        try:
            box = self.mip.update(self.labels.data, region)
        except InputError:  # the labels changed shape
            self.recompute()
            return
        if box is not None:
            self._show(box)

    def recompute(self) -> None:
        """Recompute the whole projection (after undo/redo or replaced data)."""
        if not self.alive:
            return
        if tuple(self.labels.data.shape) != self.mip.shape:
            self.close()
            self._error(InputError(
                f"'{self.labels.name}' changed shape to {tuple(self.labels.data.shape)}; its label "
                "MIP stopped following it. Press 'Show MIP' again."))
            return
        self.mip.recompute(self.labels.data)
        self._show(None)

    def _show(self, box: tuple[slice, slice] | None) -> None:
        if self.layer.data is not self.mip.mip:  # napari made its own copy (e.g. of bool labels)
            key = box if box is not None else (slice(None), slice(None))
            self.layer.data[key] = self.mip.mip[key]
        if box is None:
            self._refresh()
        elif not self._refresh_timer.isActive():
            self._refresh_timer.start()

    def _refresh(self) -> None:
        if self.layer in self.viewer.layers:
            self.layer.refresh()

    def _error(self, err: Any) -> None:
        if self.on_error is None:
            raise err
        self.on_error(err)

    # -- painting on the MIP ----------------------------------------------------------------
    def set_painting(self, on: bool) -> None:
        """Let the user paint on the overlay; strokes go into the 3D labels."""
        self.painting = bool(on)
        self.layer.editable = self.painting
        if self.painting:
            self.layer.visible = True
            self.layer.selected_label = max(int(self.labels.selected_label), 1)
            self.viewer.layers.selection.active = self.layer
            self.layer.mode = "paint"

    def _on_mip_stroke(self, event: Any) -> None:
        coords, value = stroke_pixels(event.value, self.mip.mip.shape)
        if len(coords):  # after napari wrote the stroke into the overlay (it may write after)
            defer(lambda: self.place_stroke(coords, value))

    def place_stroke(self, coords: Any, value: int) -> int:
        """Put a stroke drawn on the MIP into the 3D labels; returns the voxels changed.

        ``value`` > 0 paints at the depth of the vessel under each piece of the stroke within the
        slab, as one connected piece (:func:`~napari_vessel.refine.review.paint_on_projection`); 0 (the
        eraser) clears the labels under the stroke within the slab. Either way the overlay shows
        the true projection afterwards.
        """
        coords = np.asarray(coords)
        changed = 0
        try:
            if not self.painting:
                return 0
            if value == 0:
                edit = erase_columns(self.labels.data, coords, axis=self.axis, slab=self.slab)
            else:
                if self.image_data is None:
                    raise InputError("choose an image layer to paint on its MIP")
                edit = paint_on_projection(np.asarray(self.labels.data), self.image_data(),
                                           coords, axis=self.axis, slab=self.slab,
                                           label_value=value)
            changed = apply_edit_to_layer(self.labels, edit)
        except InputError as err:
            self._error(err)
        finally:  # show the true projection where the stroke was drawn
            self.update((coords[:, 0], coords[:, 1]))
        return changed
