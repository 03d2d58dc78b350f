"""Review & refine: MIPs and overlays, brush refinement with a live label MIP, vessel tools,
and autosave with recovery.

The dock widget holds the layer choice and three tabs, each a panel in its own module:
``review_mip`` (projections and the label-MIP overlay), ``review_tools`` (vessel tools) and
``review_autosave`` (background saving and restore). The computation lives in the core
(:mod:`napari_vessel.projection`, :mod:`napari_vessel.refine.edits`, :mod:`napari_vessel.refine.autosave`,
:mod:`napari_vessel.refine.review`).
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from qtpy.QtWidgets import QTabWidget

from napari_vessel._qt._common import OUTPUT_KEY, notify_error
from napari_vessel._qt.dock import ScrollDock
from napari_vessel._qt.layer_choice import LayerCombo
from napari_vessel._qt.review_autosave import AutosavePanel
from napari_vessel._qt.review_mip import MipPanel
from napari_vessel._qt.review_tools import ToolsPanel
from napari_vessel.errors import InputError
from napari_vessel.refine.edits import check_same_grid
from napari_vessel.refine.review import check_stack

if TYPE_CHECKING:  # pragma: no cover
    import napari

__all__ = ["ReviewWidget"]


class ReviewWidget(ScrollDock):
    """MIPs, label refinement and autosave for a 3D image and its vessel labels.

    Parameters
    ----------
    napari_viewer : napari.Viewer
        The viewer the widget is docked in.

    Attributes
    ----------
    mip : MipPanel
        Projections of the image, probability map and labels.
    tools : ToolsPanel
        Vessel tools (each one undo step).
    autosave : AutosavePanel
        Background saving; set ``autosave.ask_restore`` to decide about recovery files in code.
    """

    def __init__(self, napari_viewer: napari.Viewer) -> None:
        super().__init__(labels=True)
        self.viewer = napari_viewer
        # each choice stays the chosen layer object across renames (see LayerCombo); a removed
        # image or labels layer falls back to the first one that is not a result, a removed
        # probability map to none
        self.image_combo = LayerCombo(napari_viewer, self._choices("image"), label="image",
                                      initial=_plain_image)
        self.labels_combo = LayerCombo(napari_viewer, self._choices("labels"), label="labels")
        self.prob_combo = LayerCombo(napari_viewer, self._choices("image"), label="probability",
                                     initial=None, fallback=None)
        self.extend([self.image_combo, self.labels_combo, self.prob_combo])
        self.mip = MipPanel(napari_viewer, self.checked_layers, self._notify)
        self.tools = ToolsPanel(napari_viewer, self.checked_layers, self._notify)
        self.autosave = AutosavePanel(napari_viewer, lambda: self.image_combo.value, self._notify)
        self.tabs = QTabWidget()
        for panel, title in ((self.mip, "MIP"), (self.tools, "Refine"),
                             (self.autosave, "Autosave")):
            self.tabs.addTab(panel.native, title)
        self.content.layout().addWidget(self.tabs)
        for event in (napari_viewer.layers.events.inserted, napari_viewer.layers.events.removed):
            event.connect(self._reset_choices)
        for combo in (self.image_combo, self.labels_combo, self.prob_combo):
            combo.changed.connect(self._layers_changed)
        self._reset_choices()
        self.native.destroyed.connect(lambda *_: self.autosave.stop_all())

    @staticmethod
    def _notify(err: Any) -> None:
        notify_error(err)  # looked up at call time, so tests can capture it

    def _choices(self, kind: str):
        def choices(_widget: Any = None) -> list:
            from napari.layers import Image, Labels

            cls = Image if kind == "image" else Labels
            return [layer for layer in self.viewer.layers
                    if isinstance(layer, cls) and OUTPUT_KEY not in layer.metadata]

        return choices

    def _reset_choices(self, _event: Any = None) -> None:
        for combo in (self.image_combo, self.labels_combo, self.prob_combo):
            combo.reset_choices()

    def _layers_changed(self, _value: Any = None) -> None:
        if not self.mip.active:
            return
        if self.image_combo.value is None:  # the image was removed: stop following quietly
            self.mip.active = False
            return
        self.mip.show_mips()

    def checked_layers(self, image: bool = True, labels: bool = False) -> tuple:
        """The chosen ``(image, labels, probability)`` layers, checked to fit together.

        Parameters
        ----------
        image, labels : bool
            Whether an image / a labels layer is required.

        Raises
        ------
        InputError
            When a required layer is missing, the image is not a 3D stack, or the labels or the
            probability map do not cover the image's voxels (shape and scale).
        """
        image_layer = self.image_combo.value
        labels_layer = self.labels_combo.value
        prob_layer = self.prob_combo.value if image else None
        if prob_layer is image_layer:
            prob_layer = None
        if image and image_layer is None:
            raise InputError("choose an image layer (open a 3D stack first)")
        if labels and labels_layer is None:
            raise InputError("choose a labels layer (or add one: Layers > New labels layer)")
        if image:
            shape = image_layer.data.shape[:-1] if image_layer.rgb else image_layer.data.shape
            check_stack(shape, image_layer.name)
        if labels_layer is not None:
            check_stack(labels_layer.data.shape, labels_layer.name)
        for other in (labels_layer, prob_layer):
            if image and other is not None:
                try:
                    check_same_grid(other.data, image_layer.data, tuple(other.scale),
                                    tuple(image_layer.scale))
                except InputError as err:
                    raise InputError(f"'{other.name}' does not fit '{image_layer.name}': "
                                     f"{err}") from None
        return image_layer, labels_layer, prob_layer


def _looks_like_probability(layer: Any) -> bool:
    return "prob" in layer.name.lower()


def _plain_image(images: list) -> Any:
    """The first image that does not look like a probability map (else the first), or None."""
    plain = [layer for layer in images if not _looks_like_probability(layer)]
    return (plain or images or [None])[0]
