"""Live preview of a preprocessing pipeline on the current slice or on the MIP of a stack.

Every change (a parameter, the step list, the slice shown) restarts a short timer; when it fires,
the pipeline runs on one plane and a 2D image layer ``"<image> preview"`` shows the result. The
first preview of an input, a pipeline or a mode runs in a worker, where it is timed; only when that
took less than :data:`FAST_MS` are the next planes (e.g. while the slider moves) computed at once on
the main thread. Slower ones (or lazy stacks) run in a worker, one at a time, and a result is shown
only if nothing newer was asked for in the meantime.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from typing import Any

import numpy as np
from magicgui.widgets import CheckBox, ComboBox, Container, Label
from qtpy.QtCore import QTimer

from napari_vessel._qt._common import OUTPUT_KEY, start_worker
from napari_vessel.errors import InputError
from napari_vessel.io.volume import is_lazy
from napari_vessel.preprocess import Pipeline
from napari_vessel.projection import mip as project_mip

__all__ = ["PreviewPanel", "preview_image", "check_image_layer", "PREVIEW_ROLE", "MODES"]

#: Milliseconds of quiet after the last change before the preview is computed.
DEBOUNCE_MS = 100
#: A preview that took less than this (ms) runs on the main thread next time, for the same input,
#: pipeline and mode (the first one always runs in a worker).
FAST_MS = 50
#: ``metadata[OUTPUT_KEY]`` of the preview layer.
PREVIEW_ROLE = "preprocess preview"
#: What the preview shows.
MODES = ("current slice", "MIP")


def check_image_layer(layer: Any) -> None:
    """Raise :class:`InputError` unless ``layer`` holds one 2D image or one 3D stack."""
    if layer is None:
        raise InputError("choose an image layer first")
    if getattr(layer, "rgb", False):
        raise InputError(f"'{layer.name}' is an RGB image; preprocessing works on one channel "
                         "(split the colours first)")
    if getattr(layer, "multiscale", False):
        raise InputError(f"'{layer.name}' is a multiscale (pyramid) layer; open its full-"
                         "resolution level as a plain image layer")
    if layer.ndim not in (2, 3):
        raise InputError(f"'{layer.name}' has {layer.ndim} axes; preprocessing works on one 3D "
                         "stack (z, y, x): split channels or time points first (right-click the "
                         "layer > Split Stack)")
    if 0 in tuple(layer.data.shape):
        raise InputError(f"'{layer.name}' is empty (shape {tuple(layer.data.shape)})")


def layer_spacing(layer: Any) -> tuple[float, float, float] | None:
    """The voxel size (z, y, x) of a 3D layer from its scale; None for 2D layers."""
    return tuple(abs(float(s)) for s in layer.scale) if layer.ndim == 3 else None


def preview_image(pipeline: Pipeline, data: Any, *, z: int = 0, spacing_zyx: Any = None,
                  mip: np.ndarray | None = None, use_mip: bool = False
                  ) -> tuple[np.ndarray, np.ndarray | None]:
    """The pipeline's preview of one plane of ``data``.

    Parameters
    ----------
    pipeline : Pipeline
    data : array-like, shape (Z, Y, X) or (Y, X)
    z : int
        The slice of a stack (ignored for 2D data and for the MIP).
    spacing_zyx : tuple of 3 float, optional
    mip : ndarray, optional
        The MIP of ``data`` if already known.
    use_mip : bool
        Preview the MIP instead of slice ``z``.

    Returns
    -------
    plane : ndarray of float32, shape (Y, X)
    mip : ndarray or None
        The MIP used (to keep for the next call), or None.
    """
    if data.ndim == 2:
        return pipeline.preview(data), None
    if use_mip:
        mip = project_mip(data) if mip is None else mip
        return pipeline.preview(mip, spacing_zyx=spacing_zyx), mip
    return pipeline.preview_plane(data, z, spacing_zyx=spacing_zyx), None


class PreviewPanel(Container):
    """The Preview check box, the plane choice and the preview layer.

    Parameters
    ----------
    viewer : napari.Viewer
    get_input : callable
        Returns the input image layer or None.
    get_pipeline : callable
        Returns the pipeline to preview.
    notify : callable
        Shows an error to the user (the same error is shown once, not at every slice).
    """

    def __init__(self, viewer: Any, get_input: Callable[[], Any],
                 get_pipeline: Callable[[], Pipeline], notify: Callable[[Any], None]) -> None:
        super().__init__(labels=False, layout="horizontal")
        self.viewer = viewer
        self._get_input = get_input
        self._get_pipeline = get_pipeline
        self._notify = notify
        self.toggle = CheckBox(text="Preview", value=False)
        self.toggle.tooltip = "show the pipeline's result on one plane as you edit"
        self.mode = ComboBox(choices=list(MODES), value=MODES[0])
        self.status = Label(value="")
        self.extend([self.toggle, self.mode, self.status])
        self.layer: Any = None
        self.timer = QTimer()
        self.timer.setSingleShot(True)
        self.timer.setInterval(DEBOUNCE_MS)
        self.timer.timeout.connect(self.refresh)
        self._request = 0  # id of the newest request; older results are dropped
        self._busy = False
        self._pending = False
        self._timing: tuple[Any, float] | None = None  # ((input, pipeline, mode), ms) last run
        self._last_error: str | None = None
        self._mip: tuple[Any, np.ndarray] | None = None  # (key, MIP) of the input
        self.toggle.changed.connect(self._toggled)
        self.mode.changed.connect(self.schedule)
        viewer.dims.events.current_step.connect(self._dims_changed)
        viewer.layers.events.removed.connect(self._layer_removed)

    @property
    def active(self) -> bool:
        """True when the Preview box is ticked."""
        return bool(self.toggle.value)

    def schedule(self, _event: Any = None) -> None:
        """Recompute the preview after :data:`DEBOUNCE_MS` of quiet."""
        if self.active:
            self._request += 1  # whatever is running now is stale
            self.timer.start()

    def input_changed(self) -> None:
        """The input layer changed: drop the old preview layer and the cached MIP."""
        self._mip = None
        self._last_error = None
        self.remove_layer()
        self.schedule()

    def _dims_changed(self, _event: Any = None) -> None:
        if self.mode.value == MODES[0]:
            self.schedule()

    def _toggled(self, on: bool) -> None:
        if on:
            self._last_error = None
            self.schedule()
        else:
            self.timer.stop()
            self._request += 1
            self.remove_layer()
            self.status.value = ""

    def _layer_removed(self, event: Any) -> None:
        if self.layer is not None and event.value is self.layer:
            self.layer = None
            self.toggle.value = False  # the user closed the preview

    def remove_layer(self) -> None:
        """Remove the preview layer from the viewer."""
        layer, self.layer = self.layer, None
        if layer is not None and layer in self.viewer.layers:
            self.viewer.layers.remove(layer)

    # ------------------------------------------------------------------------------- compute
    def current_z(self, layer: Any) -> int:
        """The slice of ``layer`` shown by the viewer."""
        if layer.ndim != 3:
            return 0
        z = int(np.round(layer.world_to_data(self.viewer.dims.point)[0]))
        return int(np.clip(z, 0, layer.data.shape[0] - 1))

    def refresh(self) -> None:
        """Compute the preview now (in a worker when it is slow)."""
        if not self.active:
            return
        layer = self._get_input()
        try:
            check_image_layer(layer)
        except InputError as err:
            self._failed(err, self._request)
            return
        if self._busy:
            self._pending = True
            return
        use_mip = self.mode.value == MODES[1] and layer.ndim == 3
        key = (id(layer), id(layer.data))
        mip = self._mip[1] if use_mip and self._mip and self._mip[0] == key else None
        z = self.current_z(layer)
        pipeline, data, request = self._get_pipeline(), layer.data, self._request
        spacing = layer_spacing(layer)

        what = (key, pipeline, use_mip)

        def run(progress: Any = None, cancel: Any = None) -> tuple:
            start = time.perf_counter()
            plane, new_mip = preview_image(pipeline, data, z=z, spacing_zyx=spacing, mip=mip,
                                           use_mip=use_mip)
            return plane, new_mip, what, (time.perf_counter() - start) * 1000

        where = "MIP" if use_mip else (f"slice {z}" if layer.ndim == 3 else "image")
        if self._fast(what, data) and not (use_mip and mip is None):
            try:
                out = run()
            except Exception as err:  # noqa: BLE001 - every failure becomes a notification
                self._failed(err, request)
                return
            self._show(out, request, layer, key, where)
            return
        self._busy = True
        self.status.value = f"{where}: computing…"
        start_worker(run, on_done=lambda out: self._show(out, request, layer, key, where),
                     on_error=lambda err: self._failed(err, request),
                     on_finished=self._worker_finished)

    def _fast(self, what: Any, data: Any) -> bool:
        """True when the same input, pipeline and mode were timed under :data:`FAST_MS`."""
        if is_lazy(data) or self._timing is None:
            return False  # a lazy stack, or nothing timed yet: never on the GUI thread
        timed, ms = self._timing
        return ms < FAST_MS and timed == what

    def _worker_finished(self) -> None:
        self._busy = False
        if self._pending:
            self._pending = False
            self.refresh()

    def _failed(self, err: Any, request: int) -> None:
        if request != self._request:
            return  # a newer request will report for itself
        self.status.value = "no preview (see the message)"
        if str(err) != self._last_error:
            self._last_error = str(err)
            self._notify(err)

    def _show(self, out: tuple, request: int, source: Any, key: Any, where: str) -> None:
        plane, mip, what, ms = out
        self._timing = (what, ms)
        if mip is not None:
            self._mip = (key, mip)
        if request != self._request or not self.active:
            return  # stale: the parameters or the slice changed meanwhile
        self._last_error = None
        self.status.value = f"{where}: {ms:.0f} ms"
        if self.layer is not None and self.layer in self.viewer.layers:
            self.layer.data = plane
            self.layer.reset_contrast_limits()
            return
        self.layer = self.viewer.add_image(
            plane, name=f"{source.name} preview", scale=tuple(source.scale)[-2:],
            translate=tuple(source.translate)[-2:], colormap="gray",
            metadata={OUTPUT_KEY: PREVIEW_ROLE})
