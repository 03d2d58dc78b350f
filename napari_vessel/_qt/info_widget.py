"""Stack info: shape, dtype, voxel size and intensity statistics of an image layer."""

from __future__ import annotations

from typing import TYPE_CHECKING

from magicgui.widgets import FloatSpinBox, Label, PushButton

from napari_vessel._qt._common import notify_error, show_info
from napari_vessel._qt.dock import ScrollDock
from napari_vessel._qt.layer_choice import LayerCombo
from napari_vessel.errors import InputError
from napari_vessel.io.volume import check_spacing, is_lazy
from napari_vessel.stats import intensity_stats

#: Decimals of the voxel-size boxes: 4 keep 0.065 µm and 0.9943 µm to within 0.01 %.
SPACING_DECIMALS = 4

if TYPE_CHECKING:  # pragma: no cover
    import napari

__all__ = ["InfoWidget"]


class InfoWidget(ScrollDock):
    """Shows what an image layer holds and lets the user set its voxel size (the layer scale).

    Parameters
    ----------
    napari_viewer : napari.Viewer
        The viewer the widget is docked in.
    """

    def __init__(self, napari_viewer: napari.Viewer) -> None:
        super().__init__(labels=True)
        self.viewer = napari_viewer
        self.layer_combo = LayerCombo(napari_viewer, self._image_layers, label="image")
        self.summary = Label(label="stack", value="no image layer")
        self.stats = Label(label="intensity", value="")
        self.spacing = [
            FloatSpinBox(label=f"voxel {axis} (µm)", value=1.0, min=0.0, max=1e6, step=0.01)
            for axis in "zyx"
        ]
        for box in self.spacing:  # 0.065 µm or 0.9943 µm must survive a round trip
            box.native.setDecimals(SPACING_DECIMALS)
        self.apply_button = PushButton(text="Set voxel size")
        self.extend([self.layer_combo, self.summary, self.stats, *self.spacing, self.apply_button])
        self.layer_combo.changed.connect(self._refresh)
        self.apply_button.changed.connect(self._apply_spacing)
        for event in (napari_viewer.layers.events.inserted, napari_viewer.layers.events.removed):
            event.connect(self._reset_choices)
        self._reset_choices()

    def _image_layers(self, _widget=None) -> list:
        from napari.layers import Image

        return [layer for layer in self.viewer.layers if isinstance(layer, Image)]

    def _reset_choices(self, _event=None) -> None:
        self.layer_combo.reset_choices()  # keeps the chosen layer object (see LayerCombo)
        self._refresh()

    def _refresh(self, _value=None) -> None:
        layer = self.layer_combo.value
        if layer is None:
            self.summary.value = "no image layer"
            self.stats.value = ""
            return
        data = layer.data
        known = layer.metadata.get("spacing_known", True)
        scale = tuple(float(s) for s in layer.scale)
        lazy = " (lazy)" if is_lazy(data) else ""
        self.summary.value = (
            f"{' × '.join(str(s) for s in data.shape)}  {data.dtype}{lazy}\n"
            f"voxel {' × '.join(f'{s:g}' for s in scale)} µm"
            + ("" if known else "  (not in file: please set it)")
        )
        if len(scale) == 3:
            for box, value in zip(self.spacing, scale, strict=True):
                box.value = value
        stats = intensity_stats(data)
        sampled = " (sampled)" if stats["sampled"] else ""
        self.stats.value = (
            f"min {stats['min']:.4g}  max {stats['max']:.4g}  mean {stats['mean']:.4g}\n"
            f"p1 {stats['p1']:.4g}  median {stats['p50']:.4g}  p99 {stats['p99']:.4g}{sampled}"
            + (f"\n{stats['nan']} non-finite voxels" if stats["nan"] else "")
        )

    def _apply_spacing(self, _value=None) -> None:
        layer = self.layer_combo.value
        if layer is None:
            notify_error("choose an image layer first")
            return
        if layer.ndim != 3:
            notify_error(f"'{layer.name}' has {layer.ndim} axes; the voxel size is set on 3D stacks")
            return
        try:
            spacing = check_spacing([box.value for box in self.spacing], 3)
        except InputError as err:
            notify_error(err)
            return
        layer.scale = spacing
        layer.metadata["spacing_known"] = True
        show_info(f"voxel size of '{layer.name}' set to {spacing} µm")
        self._refresh()
