"""The vessel tools of the Review & refine widget: clean-up, fill, erase, add and bridge.

Each tool computes a :class:`~napari_vessel.refine.edits.Edit` in a background thread and writes it
into the labels layer as one undo step. Points are picked on a Points layer ("Pick points") or,
as prompts, by clicking on the labels layer: "click a vessel branch to erase it" removes a false
vessel, "click a missed vessel to add it" adds the bright vessel under the click
(:func:`~napari_vessel.refine.grow.add_vessel_at`). Every edit counts as a correction for the
Fine-tune dock (its edit tracker sees the voxels each one changed).
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import numpy as np
from magicgui.widgets import CheckBox, Container, FloatSpinBox, Label, PushButton, SpinBox
from qtpy.QtWidgets import QSizePolicy

from napari_vessel._qt._common import OUTPUT_KEY, name_metadata, output_name, show_info
from napari_vessel._qt.review_sync import apply_edit_to_layer
from napari_vessel._qt.review_watch import run_in_background
from napari_vessel.errors import InputError
from napari_vessel.refine.branch import erase_branch_at
from napari_vessel.refine.edits import (
    erase_small_components,
    fill_holes_with_nearest_label,
    keep_components_at,
)
from napari_vessel.refine.grow import add_vessel_at
from napari_vessel.refine.paths import bridge_gap
from napari_vessel.refine.review import still_valid

__all__ = ["ToolsPanel", "LARGE_EDIT"]

#: An edit that would erase more than this share of the labelled voxels asks first.
LARGE_EDIT = 0.2


class ToolsPanel(Container):
    """Buttons for the vessel-aware label operations.

    Parameters
    ----------
    viewer : napari.Viewer
        The viewer.
    get_layers : callable
        ``get_layers(image=..., labels=...)`` returns the checked ``(image, labels, prob)``
        layers, or raises :class:`InputError` when a needed one is missing or does not fit.
    notify : callable
        Shows a user-facing error.
    """

    def __init__(self, viewer: Any, get_layers: Callable[..., tuple], notify: Callable) -> None:
        super().__init__(labels=True)
        self.viewer, self.get_layers, self.notify = viewer, get_layers, notify
        self.min_size = SpinBox(label="smallest vessel (voxels)", value=50, min=0, max=10**9)
        self.remove_button = PushButton(text="Remove smaller components")
        self.per_slice = CheckBox(text="fill holes slice by slice", value=False)
        self.fill_button = PushButton(text="Fill holes")
        self.pick_button = PushButton(text="Pick points")
        self.keep_button = PushButton(text="Keep components at points")
        self.erase_button = PushButton(text="Erase branch at last point")
        self.click_erase = CheckBox(text="click a vessel branch to erase it", value=False)
        tip = ("erases the branch under the point (the vessel segment between two junctions or "
               "ends), not the whole network; the junction itself stays, so the other branches "
               "stay joined. Ctrl+Z undoes")
        self.erase_button.tooltip = self.click_erase.tooltip = tip
        self.click_add = CheckBox(text="click a missed vessel to add it", value=False)
        self.click_add.tooltip = (
            "adds the bright vessel under the click: the region brighter than halfway between "
            "the local background and the vessel, connected to the click, within 'add within' "
            "µm; labelled voxels stay as they are. Ctrl+Z undoes")
        self.add_radius = FloatSpinBox(label="add within (µm)", value=10.0, min=1.0, max=1000.0,
                                       step=1.0, tooltip="how far from the click the added "
                                       "vessel reaches (µm); also the area of the background")
        self.radius = FloatSpinBox(label="bridge radius (µm)", value=0.0, min=0.0, max=1000.0,
                                   step=0.5, tooltip="0: estimated from the image")
        self.bridge_button = PushButton(text="Bridge last two points")
        self.cancel_button = PushButton(text="Cancel", enabled=False)
        self.status = Label(value="")
        self.extend([self.min_size, self.remove_button, self.per_slice, self.fill_button,
                     self.pick_button, self.keep_button, self.erase_button, self.click_erase,
                     self.click_add, self.add_radius, self.radius, self.bridge_button,
                     self.cancel_button, self.status])
        self.status.native.setWordWrap(True)
        self.status.native.setSizePolicy(QSizePolicy.Policy.Ignored, QSizePolicy.Policy.Preferred)
        self.native.layout().addStretch()
        self.points: Any = None
        self._job: Any = None
        self._click_layer: Any = None
        self.remove_button.changed.connect(self.remove_small)
        self.fill_button.changed.connect(self.fill)
        self.pick_button.changed.connect(self.pick_points)
        self.keep_button.changed.connect(self.keep_at_points)
        self.erase_button.changed.connect(self.erase_at_last_point)
        self.bridge_button.changed.connect(self.bridge)
        self.cancel_button.changed.connect(self.cancel)
        self.click_erase.changed.connect(self._click_erase_changed)
        self.click_add.changed.connect(self._click_add_changed)

    @property
    def busy(self) -> bool:
        """True while a tool runs in the background."""
        return self._job is not None

    # -- running a tool ----------------------------------------------------------------------
    def _run(self, title: str, compute: Callable[[np.ndarray], Any], *, image: bool = False) -> bool:
        """Run ``compute(labels_data)`` (or ``compute(labels_data, image_data)``) in a thread."""
        if self.busy:
            self.notify(f"wait for the running tool to finish (or press Cancel) before '{title}'")
            return False
        try:
            image_layer, labels, _prob = self.get_layers(image=image, labels=True)
        except InputError as err:
            self.notify(err)
            return False
        data = np.asarray(labels.data)
        args = (data, image_layer.data) if image else (data,)

        def work(progress: Callable = lambda *a: None, cancel: Any = None) -> Any:
            progress(0.0, title)
            edit = compute(*args)
            if cancel is not None:
                cancel.check()
            return edit

        self.status.value = f"{title}..."
        self.cancel_button.enabled = True
        self._job = run_in_background(work, on_done=lambda edit: self._apply(title, labels, edit),
                                      on_error=self._failed, on_cancelled=self._cancelled,
                                      on_finished=self._finished)
        return True

    def confirm_large(self, title: str, erased: int, total: int) -> bool:
        """Ask before an edit erases more than :data:`LARGE_EDIT` of the labels (True: go on)."""
        from qtpy.QtWidgets import QMessageBox

        answer = QMessageBox.question(
            self.native, "napari-vessel", f"'{title}' would erase {erased:,} of the {total:,} "
            f"labelled voxels ({100 * erased / total:.0f} %). Go on? (Ctrl+Z undoes it)")
        return answer == QMessageBox.StandardButton.Yes

    def _apply(self, title: str, labels: Any, edit: Any) -> None:
        if labels not in self.viewer.layers:
            self.notify(f"'{labels.name}' was removed; '{title}' was not applied")
            return
        erased = int(np.count_nonzero(edit.new == 0)) if edit.size else 0
        total = int(np.count_nonzero(labels.data))
        if total and erased > LARGE_EDIT * total and not self.confirm_large(title, erased, total):
            self.status.value = f"{title}: not applied (you declined)"
            return
        changed = apply_edit_to_layer(labels, still_valid(edit, labels.data))
        self.status.value = f"{title}: {changed} voxels changed" + (" (Ctrl+Z undoes)" if changed else "")
        if not changed:
            show_info(f"{title}: nothing to change")

    def _failed(self, err: BaseException) -> None:
        self.status.value = ""
        self.notify(err)

    def _cancelled(self) -> None:
        self.status.value = "cancelled; the labels are unchanged"

    def _finished(self) -> None:
        self._job = None
        self.cancel_button.enabled = False

    def cancel(self, _value: Any = None) -> None:
        """Stop the running tool; nothing is written."""
        if self._job is not None:
            self._job.cancel()

    # -- the tools ---------------------------------------------------------------------------
    def remove_small(self, _value: Any = None) -> bool:
        """Erase connected components smaller than the size in the spin box."""
        size = self.min_size.value
        if size < 1:
            self.notify(f"smallest vessel size {size} must be at least 1 voxel")
            return False
        return self._run(f"remove components < {size} voxels",
                         lambda data: erase_small_components(data, size))

    def fill(self, _value: Any = None) -> bool:
        """Fill holes (in 3D, or in each z slice)."""
        per_slice = self.per_slice.value
        return self._run("fill holes", lambda data: fill_holes_with_nearest_label(data, per_slice=per_slice))

    def keep_at_points(self, _value: Any = None) -> bool:
        """Keep only the components touching the picked points."""
        try:
            points = self.picked_points(minimum=1)
        except InputError as err:
            self.notify(err)
            return False
        return self._run("keep components at points",
                         lambda data: keep_components_at(data, points))

    def erase_at_last_point(self, _value: Any = None) -> bool:
        """Erase the branch under the last picked point."""
        try:
            point = self.picked_points(minimum=1)[-1]
        except InputError as err:
            self.notify(err)
            return False
        return self.erase_at(point)

    def _clicked_labels(self, *, image: bool) -> tuple[Any, tuple] | None:
        """The labels layer a click acts on and its voxel size, or None (the user was told)."""
        try:
            _image, labels, _prob = self.get_layers(image=image, labels=True)
        except InputError as err:
            self.notify(err)
            return None
        return labels, tuple(abs(float(s)) for s in labels.scale)

    def erase_at(self, position: Any) -> bool:
        """Erase the branch under ``position`` (data coordinates of the labels)."""
        position = np.asarray(position, dtype=float)
        found = self._clicked_labels(image=False)
        if found is None:
            return False
        spacing = found[1]
        return self._run("erase branch", lambda data: erase_branch_at(data, position, spacing))

    def add_at(self, position: Any) -> bool:
        """Add the vessel under ``position`` (data coordinates of the labels), grown in the image.

        The added voxels get the labels layer's selected label (1 when it is 0).
        """
        position = np.asarray(position, dtype=float)
        found = self._clicked_labels(image=True)
        if found is None:
            return False
        labels, spacing = found
        value = max(int(labels.selected_label), 1)
        radius = float(self.add_radius.value)
        return self._run("add vessel", lambda data, image: add_vessel_at(
            data, image, position, spacing, radius_um=radius, value=value), image=True)

    def bridge(self, _value: Any = None) -> bool:
        """Join the last two picked points along the brightest path of the image."""
        try:
            p0, p1 = self.picked_points(minimum=2)[-2:]
            _image, labels, _prob = self.get_layers(image=True, labels=True)
        except InputError as err:
            self.notify(err)
            return False
        radius = self.radius.value or None
        value = max(int(labels.selected_label), 1)
        spacing = tuple(abs(float(s)) for s in labels.scale)
        return self._run("bridge gap", lambda data, image: bridge_gap(
            data, image, p0, p1, spacing_zyx=spacing, radius=radius, label_value=value),
            image=True)

    # -- points ------------------------------------------------------------------------------
    def pick_points(self, _value: Any = None) -> Any:
        """Add (or select) the Points layer to click points on, in 'add' mode."""
        try:
            _image, labels, _prob = self.get_layers(image=False, labels=True)
        except InputError as err:
            self.notify(err)
            return None
        if self.points is None or self.points not in self.viewer.layers:
            self.points = self.viewer.add_points(
                np.empty((0, labels.ndim)), ndim=labels.ndim,
                name=output_name(labels.name, "points", self.viewer.layers),
                scale=labels.scale, translate=labels.translate, size=max(3 * min(labels.scale), 1),
                face_color="yellow",
                metadata={OUTPUT_KEY: "points", **name_metadata(labels.name, "points")})
        self.viewer.layers.selection.active = self.points
        self.points.mode = "add"
        return self.points

    def picked_points(self, minimum: int = 1) -> np.ndarray:
        """The picked points in data coordinates of the labels, shape (N, 3), oldest first."""
        _image, labels, _prob = self.get_layers(image=False, labels=True)
        count = 0 if self.points is None or self.points not in self.viewer.layers else len(
            self.points.data)
        if count < minimum:
            raise InputError(f"pick {minimum} point{'s' if minimum > 1 else ''} first: press "
                             f"'Pick points' and click on the vessels ({count} picked)")
        world = [self.points.data_to_world(p) for p in self.points.data]
        return np.array([labels.world_to_data(w) for w in world])

    # -- prompts: click to erase, click to add -----------------------------------------------
    def _click_erase_changed(self, on: bool) -> None:
        self._click_mode_changed(self.click_erase, on)

    def _click_add_changed(self, on: bool) -> None:
        self._click_mode_changed(self.click_add, on)

    def _click_mode_changed(self, box: CheckBox, on: bool) -> None:
        """Tick one click mode (unticking the other) or untick it; clicks go to the labels."""
        other = self.click_add if box is self.click_erase else self.click_erase
        if on and other.value:
            other.value = False  # one click mode at a time
        if self._click_layer is not None:
            if self._on_click in self._click_layer.mouse_drag_callbacks:
                self._click_layer.mouse_drag_callbacks.remove(self._on_click)
            self._click_layer = None
        if not on:
            return
        try:  # adding grows in the image, so it needs one that fits the labels
            _image, labels, _prob = self.get_layers(image=box is self.click_add, labels=True)
        except InputError as err:
            self.notify(err)
            box.value = False
            return
        labels.mode = "pan_zoom"  # a click erases or adds instead of painting
        labels.mouse_drag_callbacks.append(self._on_click)
        self.viewer.layers.selection.active = labels
        self._click_layer = labels

    def _on_click(self, layer: Any, event: Any) -> None:
        adding = self.click_add.value
        if event.type != "mouse_press" or not (adding or self.click_erase.value):
            return
        if self.viewer.dims.ndisplay != 2:
            self.notify(f"switch to the 2D view to click a vessel to {'add' if adding else 'erase'}")
            return
        position = layer.world_to_data(event.position)
        if adding:
            self.add_at(position)
        else:
            self.erase_at(position)
