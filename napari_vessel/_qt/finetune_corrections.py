"""The *Corrections* part of the Fine-tune dock: the corrected labels and which voxels count.

Every Labels layer gets an :class:`~napari_vessel._qt.finetune_layers.EditTracker` when it appears
(or when the dock opens), so the voxels painted or erased from then on are known exactly, also
those the Review dock's prompts and tools changed (a click that adds a missed vessel, a click or
an eraser scribble that removes a false one); the count under the choice follows every edit. The
user may instead let the core find the edits as the difference with the model's own
segmentation, and can mark whole slices as checked (every voxel of them is then learnt from).
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import numpy as np
from magicgui.widgets import ComboBox, Container, Label, PushButton

from napari_vessel._qt.finetune_layers import EditTracker
from napari_vessel._qt.layer_choice import LayerCombo
from napari_vessel.errors import InputError

__all__ = ["CorrectionsPanel", "EDIT_SOURCES"]

#: How the edited voxels are known: the label shown -> the internal value.
EDIT_SOURCES = {"painted since the dock opened": "tracked",
                "differences from the model's prediction": "difference"}


class CorrectionsPanel(Container):
    """Labels layer, edit source, checked slices; reads them as fine-tuning input.

    Parameters
    ----------
    viewer : napari.Viewer
    current_slice : callable returning int
        The Z index the viewer shows (in the image's voxels).
    notify : callable(str)
        Shows a user-facing error.

    Attributes
    ----------
    labels_combo, edits_combo : ComboBox
    trackers : dict
        An :class:`EditTracker` per Labels layer (by ``id``).
    """

    def __init__(self, viewer: Any, current_slice: Callable[[], int],
                 notify: Callable[[Any], None]) -> None:
        super().__init__(labels=True)
        self.viewer = viewer
        self._current_slice, self._notify = current_slice, notify
        self.trackers: dict[int, EditTracker] = {}
        self.labels_combo = LayerCombo(viewer, self._labels_layers, label="layer")
        self.labels_combo.tooltip = "the labels you corrected (non-zero = vessel)"
        self.edits_combo = ComboBox(label="edits", choices=list(EDIT_SOURCES))
        self.edits_combo.tooltip = ("which voxels count: those you painted or erased since this "
                                    "dock opened, or wherever the labels differ from the model's "
                                    "own segmentation")
        self.check_button = PushButton(text="Mark current slice as checked")
        self.check_button.tooltip = "every voxel of this slice is right: learn from all of it"
        self.clear_button = PushButton(text="Clear")
        self.clear_button.tooltip = "forget the checked slices"
        row = Container(widgets=[self.check_button, self.clear_button], layout="horizontal",
                        labels=False, label="slices")
        row.margins = (0, 0, 0, 0)
        self.note = Label(label="", value="")
        self.note.native.setWordWrap(True)
        self.extend([self.labels_combo, self.edits_combo, row, self.note])
        self.labels_combo.changed.connect(lambda *_: self.show_state())
        self.edits_combo.changed.connect(lambda *_: self.show_state())
        self.check_button.changed.connect(lambda *_: self.mark_checked())
        self.clear_button.changed.connect(lambda *_: self.clear_checked())
        self.native.destroyed.connect(lambda *_: self.stop_tracking())

    def _labels_layers(self, _widget: Any = None) -> list:
        from napari.layers import Labels

        return [layer for layer in self.viewer.layers if isinstance(layer, Labels)]

    def layers_changed(self) -> None:
        """Track new Labels layers, forget removed ones, refresh the choice."""
        alive = {id(layer): layer for layer in self._labels_layers()}
        for key in [k for k in self.trackers if k not in alive]:
            self.trackers.pop(key).close()
        for key, layer in alive.items():
            if key not in self.trackers:
                self.trackers[key] = EditTracker(layer, on_change=self.show_state)
        self.labels_combo.reset_choices()  # keeps the chosen layer object (see LayerCombo)
        self.show_state()

    def stop_tracking(self) -> None:
        """Stop tracking every layer (the dock was closed)."""
        for tracker in self.trackers.values():
            tracker.close()
        self.trackers.clear()

    def tracker(self) -> EditTracker | None:
        """The tracker of the chosen labels layer."""
        layer = self.labels_combo.value
        return None if layer is None else self.trackers.get(id(layer))

    def mark_checked(self) -> int | None:
        """Mark the viewer's current slice as checked; returns its index (None: no labels)."""
        tracker = self.tracker()
        if tracker is None:
            self._notify("choose the labels layer you corrected first")
            return None
        z = int(self._current_slice())
        tracker.checked.add(z)
        self.show_state()
        return z

    def clear_checked(self) -> None:
        """Forget the checked slices of the chosen labels."""
        tracker = self.tracker()
        if tracker is not None:
            tracker.checked.clear()
        self.show_state()

    def show_state(self) -> None:
        """Say how many voxels were edited and which slices are checked."""
        tracker = self.tracker()
        if tracker is None:
            self.note.value = "no labels layer"
            return
        checked = ", ".join(str(z) for z in sorted(tracker.checked)) or "none"
        if EDIT_SOURCES[self.edits_combo.value] == "tracked":
            text = f"{tracker.count:,} voxels painted or erased here; checked slices: {checked}"
            if tracker.unknown:
                text += " (the labels were replaced once: earlier edits are not known)"
        else:
            text = f"edits are found when you press Start; checked slices: {checked}"
        self.note.value = text

    def read(self, shape: tuple[int, ...]) -> tuple[np.ndarray, np.ndarray | None, list[int]]:
        """The corrections as fine-tuning input, checked against the image's ``shape``.

        Returns
        -------
        labels : ndarray of bool, shape (Z, Y, X)
            A copy of the labels (painting may go on while the fine-tune runs).
        edited_mask : ndarray of bool or None
            The painted voxels; None lets the core find the edits by difference.
        checked_slices : list of int

        Raises
        ------
        InputError
            No labels layer, another shape, nothing painted (in the tracked mode).
        """
        layer, tracker = self.labels_combo.value, self.tracker()
        if layer is None or tracker is None:
            raise InputError("choose the labels layer you corrected (or switch the mode to "
                             "unsupervised)")
        if tuple(layer.data.shape) != tuple(shape):
            raise InputError(f"labels '{layer.name}' have shape {tuple(layer.data.shape)} but the "
                             f"image has {tuple(shape)}; choose the labels made from this image")
        labels = np.asarray(layer.data) > 0
        checked = sorted(tracker.checked)
        if EDIT_SOURCES[self.edits_combo.value] == "difference":
            return labels, None, checked
        mask = tracker.mask()
        if mask is None and not checked:
            raise InputError(f"'{layer.name}' has no edits since this dock opened: paint or "
                             "erase some vessels, mark checked slices, or choose 'differences "
                             "from the model's prediction'")
        return labels, mask if mask is not None else np.zeros(shape, bool), checked
