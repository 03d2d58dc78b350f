"""The MIP panel of the Review & refine widget: projections of the image, probability and labels.

The projections are 2D layers placed over the stack (scale and translate of the two kept axes);
sliding MIPs are a stack placed along the projection axis so they follow the slider. They are
updated in place when a setting, a layer or (for a slab) the slider changes. Large or lazy stacks
are projected in a background thread; only the newest request is shown.

Colours are chosen to be told apart: the image MIP keeps the image's colormap (gray), the
probability MIP is added in magenta and the label MIP is drawn on top in one half-transparent
cyan. A depth-coded MIP is shown alone: the probability MIP is removed, the label MIP becomes white
outlines, and a legend under the controls gives the depth of each hue.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import numpy as np
from magicgui.widgets import CheckBox, ComboBox, Container, Label, PushButton, SpinBox
from qtpy.QtCore import Qt
from qtpy.QtGui import QImage, QPixmap
from qtpy.QtWidgets import QSizePolicy

from napari_vessel._qt._common import OUTPUT_KEY, name_metadata, output_name
from napari_vessel._qt.review_sync import LabelMipOverlay
from napari_vessel._qt.review_watch import run_in_background
from napari_vessel.errors import InputError
from napari_vessel.io.volume import is_lazy
from napari_vessel.projection import depth_colours
from napari_vessel.refine.review import (
    MODES,
    check_mode,
    depth_range,
    project,
    projected_geometry,
    projection_summary,
    slab_at,
    sliding_geometry,
)

__all__ = ["MipPanel", "MipRequest", "AXES", "PROB_COLORMAP", "SYNC_VOXELS", "depth_legend_pixmap"]

AXES = ("z", "y", "x")
_SUFFIX = {"full": "MIP", "slab": "slab MIP", "sliding": "sliding MIPs", "depth-coded": "depth MIP"}
#: Colormap of the probability MIP (added over the image MIP); "green" if the image is magenta.
PROB_COLORMAP = "magenta"
_BACKGROUND = "projecting in the background..."
#: Stacks with more voxels than this are projected in a worker (a full MIP of a million voxels
#: takes about a millisecond, a depth-coded one about 15 ms).
SYNC_VOXELS = 1_000_000


def depth_legend_pixmap(width: int = 256, height: int = 12) -> QPixmap:
    """A horizontal bar of the depth-coded MIP's hues, first slice on the left."""
    colours = depth_colours(np.linspace(0.0, 1.0, int(width)))
    rgb = np.ascontiguousarray(
        np.broadcast_to((colours * 255).round().astype(np.uint8), (int(height), int(width), 3)))
    image = QImage(rgb.tobytes(), int(width), int(height), 3 * int(width),
                   QImage.Format.Format_RGB888)
    return QPixmap.fromImage(image.copy())


@dataclass(frozen=True)
class MipRequest:
    """What to project: mode, axis, slab ``[start, stop)`` (slab mode), sliding ``s`` and ``t``."""

    mode: str
    axis: int
    slab: tuple[int, int] | None
    s: int
    t: int


class MipPanel(Container):
    """Controls and output layers of the projections.

    Parameters
    ----------
    viewer : napari.Viewer
        The viewer.
    get_layers : callable
        Returns the checked ``(image, labels or None, probability or None)`` layers, or raises
        :class:`InputError` with what to fix.
    notify : callable
        Shows a user-facing error.
    """

    def __init__(self, viewer: Any, get_layers: Callable[[], tuple], notify: Callable) -> None:
        super().__init__(labels=True)
        self.viewer, self.get_layers, self.notify = viewer, get_layers, notify
        self.mode = ComboBox(label="projection", choices=list(MODES), value="full")
        self.axis = ComboBox(label="along", choices=list(AXES), value="z")
        self.thickness = SpinBox(label="slab slices", value=5, min=0, max=100000,
                                 tooltip="slab MIP: slices around the current one")
        self.s = SpinBox(label="sliding: slices s", value=5, min=0, max=100000)
        self.t = SpinBox(label="sliding: stride t", value=2, min=0, max=100000)
        self.show_labels = CheckBox(text="label MIP overlay", value=True)
        self.paint = CheckBox(text="paint on the label MIP", value=False,
                              tooltip="a dab on the label MIP lands in 3D as one piece at the depth of "
                                      "the vessel under it")
        self.show_button = PushButton(text="Show MIP")
        self.clear_button = PushButton(text="Remove MIP layers")
        self.status = Label(value="")
        self.legend_bar = Label(value="")
        self.legend_first, self.legend_last = Label(value=""), Label(value="")
        ends = Container(widgets=[self.legend_first, self.legend_last], layout="horizontal",
                         labels=False)
        #: The depth-coded MIP's legend: hue bar and the depth of its two ends (shown in that mode).
        self.legend = Container(widgets=[self.legend_bar, ends], labels=False)
        for box in (self.legend, ends):
            box.margins = (0, 0, 0, 0)
        bar = self.legend_bar.native
        bar.setPixmap(depth_legend_pixmap())
        bar.setScaledContents(True)
        bar.setFixedHeight(12)
        bar.setSizePolicy(QSizePolicy.Policy.Ignored, QSizePolicy.Policy.Fixed)
        bar.setToolTip("depth-coded MIP: the hue of a pixel tells the depth of its brightest voxel")
        self.legend_last.native.setAlignment(Qt.AlignmentFlag.AlignRight
                                             | Qt.AlignmentFlag.AlignVCenter)
        for end in (self.legend_first, self.legend_last):  # never widen the dock
            end.native.setSizePolicy(QSizePolicy.Policy.Ignored, QSizePolicy.Policy.Preferred)
        self.extend([self.mode, self.axis, self.thickness, self.s, self.t, self.show_labels,
                     self.paint, self.show_button, self.clear_button, self.status])
        self.status.native.setWordWrap(True)
        self.status.native.setSizePolicy(QSizePolicy.Policy.Ignored, QSizePolicy.Policy.Preferred)
        self.native.layout().addWidget(self.legend.native)  # the dock's full width, no label
        self.legend.visible = False
        self.native.layout().addStretch()
        #: Stacks with more voxels than this (or lazy ones) are projected in a background thread
        #: (25 × 512 × 512 blocked the viewer when this was 8 million); smaller ones at once.
        self.sync_voxels = SYNC_VOXELS
        self.active = False
        self.outputs: dict[str, Any] = {}
        self.overlay: LabelMipOverlay | None = None
        self.request: MipRequest | None = None
        self._job: Any = None
        self._rerun = False
        self._applied = False  # whether the running background job's result was shown
        self.show_button.changed.connect(self.show_mips)
        self.clear_button.changed.connect(self.remove_mips)
        for box in (self.mode, self.axis, self.thickness, self.s, self.t, self.show_labels):
            box.changed.connect(self._settings_changed)
        self.paint.changed.connect(self._paint_changed)
        viewer.dims.events.current_step.connect(self._slider_moved)

    # -- requests ----------------------------------------------------------------------------
    def make_request(self, image: Any) -> MipRequest:
        """The projection the controls ask for, checked against ``image``."""
        mode, axis = check_mode(self.mode.value), AXES.index(self.axis.value)
        size = image.data.shape[axis]
        slab = None
        if mode == "slab":
            position = image.world_to_data(self.viewer.dims.point)[axis]
            slab = slab_at(position, self.thickness.value, size)
        if mode == "sliding":
            if not 1 <= self.s.value <= size:
                raise InputError(f"sliding MIPs of s = {self.s.value} slices are not possible with "
                                 f"{size} slices along {AXES[axis]}; use 1 to {size}")
            if self.t.value < 1:
                raise InputError("the sliding stride t must be at least 1 slice")
        return MipRequest(mode, axis, slab, int(self.s.value), int(self.t.value))

    def show_mips(self, _value: Any = None) -> bool:
        """Compute and show the projections; False (and a notification) on bad input."""
        try:
            image, labels, prob = self.get_layers()
            request = self.make_request(image)
        except InputError as err:
            self.notify(err)
            return False
        self.active = True
        self.request = request
        self._show_labels(labels, request)
        self._project(image, prob, request)
        return True

    def remove_mips(self, _value: Any = None) -> None:
        """Remove the projection layers and stop following the stack."""
        self.active = False
        self.paint.value = False
        if self.overlay is not None:
            self.overlay.close(remove_layer=True)
            self.overlay = None
        for layer in self.outputs.values():
            if layer in self.viewer.layers:
                self.viewer.layers.remove(layer)
        self.outputs.clear()
        self.status.value = ""
        self.legend.visible = False

    def _settings_changed(self, _value: Any = None) -> None:
        if self.active:
            self.show_mips()

    def _slider_moved(self, _event: Any = None) -> None:
        if not (self.active and self.mode.value == "slab"):
            return
        try:
            image, _labels, _prob = self.get_layers()
            request = self.make_request(image)
        except InputError as err:
            self.notify(err)
            return
        if request != self.request:
            self.show_mips()

    # -- label MIP ---------------------------------------------------------------------------
    def _show_labels(self, labels: Any, request: MipRequest) -> None:
        slab = request.slab if request.mode == "slab" else None
        keep = (self.overlay is not None and self.overlay.alive and labels is self.overlay.labels
                and self.overlay.axis == request.axis and self.show_labels.value)
        if keep:
            self.overlay.set_slab(slab)
            self._style_overlay(request)
            return
        if self.overlay is not None:
            self.overlay.close(remove_layer=True)
            self.overlay = None
        if labels is None or not self.show_labels.value:
            self.paint.value = False
            return
        self.overlay = LabelMipOverlay(self.viewer, labels, axis=request.axis, slab=slab,
                                       image_data=self._image_data, on_error=self.notify)
        self._style_overlay(request)
        self.overlay.set_painting(self.paint.value)

    def _style_overlay(self, request: MipRequest) -> None:
        """White outlines over a depth-coded MIP (so its hues show), cyan areas otherwise."""
        outline = request.mode == "depth-coded"
        if self.overlay is not None and self.overlay.outline != outline:
            self.overlay.set_outline(outline)

    def _image_data(self) -> Any:
        image, _labels, _prob = self.get_layers()
        return image.data

    def _paint_changed(self, on: bool) -> None:
        if not on:
            if self.overlay is not None:
                self.overlay.set_painting(False)
            return
        if self.overlay is None or not self.overlay.alive:
            if not self.show_mips():
                self.paint.value = False
                return
            if self.overlay is None:
                self.notify("choose a labels layer and tick 'label MIP overlay' to paint on its MIP")
                self.paint.value = False
                return
        self.overlay.set_painting(True)

    # -- image and probability MIPs ----------------------------------------------------------
    def _project(self, image: Any, prob: Any, request: MipRequest) -> None:
        # a depth-coded MIP is shown without the probability MIP, whose colours would mix with
        # the depth hues (it comes back with the other modes)
        sources = {"image": image, "prob": None if request.mode == "depth-coded" else prob}
        limits = tuple(image.contrast_limits) if not image.rgb else None

        def compute(progress: Callable = lambda *a: None, cancel: Any = None) -> dict:
            out = {}
            for role, layer in sources.items():
                if layer is None:
                    continue
                if cancel is not None:
                    cancel.check()
                progress(0.5 if out else 0.0, f"projecting {layer.name}")
                out[role] = project(layer.data, request.mode, axis=request.axis, slab=request.slab,
                                    s=request.s, t=request.t, contrast_limits=limits)
            return out

        big = any(layer is not None and (is_lazy(layer.data) or layer.data.size > self.sync_voxels)
                  for layer in sources.values())
        if not big:
            self._apply(compute(), request, sources)
            return
        if self._job is not None:  # show only the newest request
            self._rerun = True
            return
        self.status.value = _BACKGROUND
        self._applied = False
        self._job = run_in_background(compute, on_done=lambda out: self._done(out, request, sources),
                                      on_error=self.notify, on_finished=self._finished)

    def _done(self, out: dict, request: MipRequest, sources: dict) -> None:
        if request == self.request and self.active and not self._rerun:
            self._apply(out, request, sources)
            self._applied = True

    def _finished(self) -> None:
        self._job = None
        if self._rerun and self.active:
            self._rerun = False
            self.show_mips()
        elif not self._applied and self.status.value == _BACKGROUND:
            self.status.value = ""  # failed or outdated: nothing new is shown

    def _apply(self, out: dict, request: MipRequest, sources: dict) -> None:
        for role in ("image", "prob"):
            layer = self.outputs.pop(role, None)
            if role not in out:
                if layer is not None and layer in self.viewer.layers:
                    self.viewer.layers.remove(layer)
                continue
            self.outputs[role] = self._put(layer, role, out[role], request, sources[role])
        self._stack_outputs()
        image = sources["image"]
        size, spacing = image.data.shape[request.axis], float(image.scale[request.axis])
        self.status.value = projection_summary(request.mode, size, axis_name=AXES[request.axis],
                                               spacing=spacing, slab=request.slab, s=request.s,
                                               t=request.t)
        depth = request.mode == "depth-coded"
        if depth:
            self.legend_first.value, self.legend_last.value = depth_range(size, spacing)
        self.legend.visible = depth

    def _put(self, layer: Any, role: str, data: Any, request: MipRequest, source: Any) -> Any:
        """Update ``layer`` in place with ``data`` (or replace it when its kind changed)."""
        rgb = request.mode == "depth-coded" and role == "image"
        if request.mode == "sliding":
            scale, translate = sliding_geometry(source.scale, source.translate, request.s,
                                                request.t, request.axis)
        else:
            scale, translate = projected_geometry(source.scale, source.translate, request.axis)
        others = [other for other in self.viewer.layers if other is not layer]
        suffix = f"{_SUFFIX[request.mode]} {AXES[request.axis]}"
        name = output_name(source.name, suffix, others)
        usable = (layer is not None and layer in self.viewer.layers and layer.rgb == rgb
                  and layer.ndim == len(scale))
        if usable:
            layer.data = data
            layer.scale, layer.translate, layer.name = scale, translate, name
            layer.metadata.update(name_metadata(source.name, suffix))
            return layer
        if layer is not None and layer in self.viewer.layers:
            self.viewer.layers.remove(layer)
        options: dict[str, Any] = {"name": name, "scale": scale, "translate": translate,
                                   "metadata": {OUTPUT_KEY: role, "source_layer": source.name,
                                                **name_metadata(source.name, suffix)}}
        if role == "prob":
            image = self.outputs.get("image")
            taken = getattr(getattr(image, "colormap", None), "name", "")
            options.update(colormap="green" if taken == PROB_COLORMAP else PROB_COLORMAP,
                           blending="additive", opacity=0.8,
                           contrast_limits=(0.0, 1.0) if float(data.max()) <= 1.0 else None)
        elif not rgb:
            options.update(colormap=source.colormap.name, contrast_limits=source.contrast_limits)
        if options.get("contrast_limits") is None:
            options.pop("contrast_limits", None)
        return self.viewer.add_image(data, rgb=rgb, **options)

    def _stack_outputs(self) -> None:
        """Keep the image MIP under the probability MIP under the label MIP, on top."""
        order = [self.outputs.get("image"), self.outputs.get("prob"),
                 self.overlay.layer if self.overlay is not None else None]
        order = [layer for layer in order if layer is not None and layer in self.viewer.layers]
        layers = self.viewer.layers
        if [layers.index(layer) for layer in order] == list(range(len(layers) - len(order),
                                                                   len(layers))):
            return
        for layer in order:
            layers.move(layers.index(layer), len(layers))
