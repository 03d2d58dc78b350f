"""Segment: run any registered model on a 3D image layer; probability and labels as new layers.

The dock holds the input choice, the model panel (``segment_models``: model list, card, device),
the run options, and Segment / Cancel with a progress bar. :func:`napari_vessel.inference.run.segment`
runs in a worker thread, so the viewer stays responsive; Cancel stops it between batches and
nothing is added. The output layers and the live threshold live in ``segment_results``: the
threshold slider and the minimum size redraw the labels from the stored probability map without
running the model again, and labels the user has edited are never overwritten.

*Preview* (``segment_preview``) segments only the slice on screen, with the slab of z-context the
model needs, in the same worker; the threshold and the minimum size redraw it too.

*Out of core* (``segment_out_of_core``): a stack over the dock's memory budget, or a lazy layer (a
pyramid or a dask / Zarr array on disk), is written block by block to OME-Zarr in the output folder
by :func:`napari_vessel.inference.out_of_core.segment_to_zarr`, and its result comes back as lazy layers read
from the written stores; existing outputs are replaced only when the user agrees. Such a result is
not redrawn by the threshold slider (that would read the whole map): the slider then sets the next
run, and says so.
"""

from __future__ import annotations

import time
from typing import TYPE_CHECKING, Any

from magicgui.widgets import (
    CheckBox,
    Container,
    FloatSlider,
    FloatSpinBox,
    Label,
    ProgressBar,
    PushButton,
    SpinBox,
)
from qtpy.QtCore import QTimer

from napari_vessel._qt._common import OUTPUT_KEY, group_box, notify_error, show_info
from napari_vessel._qt.dock import ScrollDock
from napari_vessel._qt.layer_choice import LayerCombo
from napari_vessel._qt.runner import DockRunner, RunnerMixin
from napari_vessel._qt.segment_input import already_preprocessed, layer_volume
from napari_vessel._qt.segment_models import ModelPanel, card_threshold
from napari_vessel._qt.segment_out_of_core import LAZY_TIP, LazyOutput, OutOfCorePanel, OutOfCoreRuns
from napari_vessel._qt.segment_preview import PreviewOverlay, preview_target
from napari_vessel._qt.segment_results import ROLE_KEY, RunInput, SegmentResults, level_text
from napari_vessel.devices import pick_device
from napari_vessel.errors import InputError
from napari_vessel.inference.preview import segment_slice
from napari_vessel.inference.run import segment
from napari_vessel.io.volume import Volume
from napari_vessel.models.registry import ModelSpec

if TYPE_CHECKING:  # pragma: no cover
    import napari

__all__ = ["SegmentWidget", "layer_volume", "already_preprocessed"]

class SegmentWidget(OutOfCoreRuns, RunnerMixin, ScrollDock):
    """Segment vessels in an image layer with a model from the registry.

    Parameters
    ----------
    napari_viewer : napari.Viewer
        The viewer the widget is docked in.

    Attributes
    ----------
    layer_combo : LayerCombo
        The image layer to segment.
    models : ModelPanel
        Model choice, its card, the device.
    threshold : FloatSlider
        Probability above which a voxel is vessel; moving it redraws the current labels.
    results : SegmentResults
        The output layers of this dock.
    previews : PreviewOverlay
        The preview layer of this dock and the probabilities behind it.
    runner : DockRunner
        Runs the segmentation or preview: buttons, progress, Cancel, errors.
    job : Job or None
        The running segmentation or preview, if any.
    output : OutOfCorePanel
        Memory budget and output folder of out-of-core runs, and the path the next run takes.
    lazy : LazyOutput or None
        The latest result when it was written out of core (see :class:`OutOfCoreRuns`).
    """

    def __init__(self, napari_viewer: napari.Viewer) -> None:
        super().__init__(labels=False)
        self.viewer = napari_viewer
        self.results = SegmentResults(napari_viewer)
        self.previews = PreviewOverlay(napari_viewer)
        self._quiet = False  # True while the threshold is set by code, not by the user
        self.lazy: LazyOutput | None = None
        self.output = OutOfCorePanel()
        self.layer_combo = LayerCombo(napari_viewer, self._image_layers, label="image",
                                      status=self._status)
        self.summary = Label(label="", value="no image layer")
        self.models = ModelPanel(self._model_changed)
        self.overlap = FloatSpinBox(label="overlap", value=0.25, min=0.0, max=0.9, step=0.05)
        self.overlap.tooltip = ("fraction of a patch shared with its neighbours: more is smoother "
                                "at patch borders and slower")
        self.tta = CheckBox(text="test-time augmentation (flips)", value=False)
        self.tta.tooltip = ("test-time augmentation: average over four flipped copies; about 4× "
                            "slower, often a little better")
        self.threshold = FloatSlider(label="threshold", value=0.5, min=0.0, max=1.0, step=0.01)
        self.threshold.tooltip = self._threshold_tip = (
            "voxels with a probability above this are vessel; moving it redraws the labels "
            "without running the model again")
        self.paper_post = CheckBox(text="the model's own post-processing", value=True,
                                   visible=False)
        self.paper_post.tooltip = ("the model card's post-processing instead of the threshold: "
                                   "hysteresis thresholds and morphological clean-up (cascade "
                                   "models, paper 003) or a level read from the stack's vessel "
                                   "fraction (a level rule); after the run the slider shows the "
                                   "level used, and moving it redraws with the same "
                                   "post-processing, the slider setting its (low) threshold")
        self.min_size = SpinBox(label="min size", value=0, min=0, max=10**9, step=10)
        self.min_size.tooltip = "remove vessel pieces with fewer voxels than this (0 keeps all)"
        self.target = Label(label="", value="")
        self.visible_only = CheckBox(text="preview the visible area only", value=True)
        self.visible_only.tooltip = ("Preview segments the slice on screen; ticked, only the part "
                                     "of it in view (zoom in for a quicker preview)")
        self.preview_button = PushButton(text="Preview")
        self.preview_button.tooltip = ("segment only the slice on screen (with the slices of "
                                       "context the model needs) to try a model and a threshold")
        self.segment_button = PushButton(text="Segment")
        self.cancel_button = PushButton(text="Cancel", enabled=False)
        self.progress = ProgressBar(min=0, max=1000, value=0, visible=False)
        self.progress_text = Label(value="")
        inputs = Container(widgets=[self.layer_combo, self.summary], labels=True)
        options = Container(widgets=[self.overlap, self.tta, self.threshold, self.paper_post,
                                     self.min_size, self.visible_only,
                                     self.target], labels=True)
        buttons = Container(widgets=[self.preview_button, self.segment_button,
                                     self.cancel_button],
                            layout="horizontal", labels=False)
        layout = self.content.layout()
        for title, part in (("Image", inputs), ("Model", self.models), ("Options", options),
                            ("Output", self.output)):
            layout.addWidget(group_box(title, part))
        for part in (buttons, self.progress, self.progress_text):
            layout.addWidget(part.native)
        layout.addStretch(1)
        self._parts = (inputs, options, buttons)  # keep the containers alive with the widget
        self.target.native.setWordWrap(True)
        self.progress_text.native.setWordWrap(True)
        self.runner = DockRunner(
            buttons=(self.segment_button, self.preview_button), cancel_button=self.cancel_button,
            progress=self.progress, status=self.progress_text, notify=self._notify,
            info=self._info, cancelled="segmentation cancelled; no layer was added")
        self._timer = QTimer()
        self._timer.setSingleShot(True)
        self._timer.setInterval(150)  # redraw once the slider rests, not on every step
        self._timer.timeout.connect(self.apply_threshold)
        self.preview_button.changed.connect(lambda *_: self.preview())
        self.threshold.changed.connect(self._threshold_moved)
        self.min_size.changed.connect(self._threshold_moved)
        self.layer_combo.changed.connect(self._input_changed)
        self.output.budget.changed.connect(lambda *_: self._update_route())
        self.segment_button.changed.connect(lambda *_: self.segment())
        self.cancel_button.changed.connect(lambda *_: self.cancel())
        events = napari_viewer.layers.events
        for event in (events.inserted, events.removed, events.renamed):
            event.connect(self._reset_choices)
        self._model_changed(self._current_spec())
        self._reset_choices()

    @staticmethod
    def _notify(err: Any) -> None:
        notify_error(err)  # looked up at call time, so tests can capture it

    @staticmethod
    def _info(text: str) -> None:
        show_info(text)

    def _status(self, text: str) -> None:
        self.progress_text.value = text

    # ------------------------------------------------------------------------------- the input
    def _image_layers(self, _widget: Any = None) -> list:
        from napari.layers import Image

        return [layer for layer in self.viewer.layers if isinstance(layer, Image)
                and OUTPUT_KEY not in layer.metadata and ROLE_KEY not in layer.metadata]

    def _reset_choices(self, _event: Any = None) -> None:
        self.layer_combo.reset_choices()  # keeps the chosen layer object (see LayerCombo)
        self._input_changed()
        self._update_target()

    def _input_changed(self, _value: Any = None) -> None:
        layer = self.layer_combo.value
        if layer is None:
            self.summary.value = "no image layer"
            self.output.set_default_folder(None)
            self._update_route()
            return
        try:
            volume, source = layer_volume(layer)
        except InputError:
            self.summary.value = (" × ".join(str(s) for s in layer.data.shape)
                                  + "  (not a one-channel 3D stack)")
            self._update_route()
            return
        shape = " × ".join(str(s) for s in volume.shape)
        voxel = " × ".join(f"{s:g}" for s in volume.spacing_zyx)
        self.summary.value = f"{shape}  {volume.dtype}\nvoxel {voxel} µm"
        self.output.set_default_folder(source)
        self._update_route()

    # ------------------------------------------------------------------------------- the model
    def _current_spec(self) -> ModelSpec | None:
        try:
            return self.models.spec()
        except InputError:
            return None

    def _model_changed(self, spec: ModelSpec | None) -> None:
        if not hasattr(self, "threshold"):
            return  # the model panel fills itself before the rest of the dock exists
        self.tta.enabled = spec is None or spec.is_network
        self.overlap.enabled = spec is None or spec.is_network
        recipe = getattr(spec, "postprocessing", None) if spec is not None else None
        self.paper_post.visible = bool(recipe)
        if recipe:
            self.paper_post.text = f"the model's own post-processing ({_recipe_text(recipe)})"
        self._quiet = True  # the card's threshold is a default for the next run, not a redraw
        try:
            self.threshold.value = card_threshold(spec)
        finally:
            self._quiet = False
        self._update_route()

    # ----------------------------------------------------------------------------------- run
    def _read_run(self) -> tuple[Volume, RunInput, ModelSpec, dict, dict]:
        """The checked input, model and options of a run (InputError: say what to fix).

        Returns the volume, its source, the model, the options as the dock shows them, and the
        keyword arguments for the core (no threshold when the model's own post-processing runs).
        """
        if self.job is not None:
            raise InputError("segmentation is already running; wait for it or press Cancel")
        volume, source = layer_volume(self.layer_combo.value)
        spec = self.models.spec()
        device = self.models.device_combo.value
        if spec.is_network:
            pick_device(device)  # an unavailable device is refused before starting
        options = {"threshold": float(self.threshold.value), "min_size": int(self.min_size.value),
                   "overlap": float(self.overlap.value), "tta": bool(self.tta.value),
                   "device": device}
        if spec.preprocessing and already_preprocessed(self.layer_combo.value):
            options["preprocess"] = False  # the Preprocess dock made it: not twice
        own = bool(getattr(spec, "postprocessing", None)) and bool(self.paper_post.value)
        return volume, source, spec, options, ({**options, "threshold": None} if own else options)

    def segment(self) -> Any:
        """Start segmenting the chosen image in a worker; returns the job, or None if refused.

        In memory, or out of core into the output folder when the stack is over the memory budget
        or the layer is lazy (see :mod:`.segment_out_of_core`).
        """
        try:
            volume, source, spec, options, run = self._read_run()
            route = self._route(volume, spec)
            if route.out_of_core:
                return self._segment_out_of_core(volume, source, spec, options, run, route)
        except InputError as err:
            if self.job is None:
                self.progress_text.value = f"not started: {err}"
            self._notify(err)
            return None

        def work(progress: Any, cancel: Any) -> Any:
            return segment(volume, spec.name, progress=progress, cancel=cancel, **run)

        started, own = time.perf_counter(), run["threshold"] is None
        return self.runner.start(
            work, lambda result: self._done(result, source, options, started, own=own),
            starting=f"starting {spec.name} in memory ({route.reason})…")


    def preview(self) -> Any:
        """Segment only the slice on screen (the visible part) in a worker; the job, or None.

        The result replaces the dock's preview layer; the user's layers are not touched.
        """
        try:
            volume, source, spec, options, run = self._read_run()
            z, box = preview_target(self.viewer, self.layer_combo.value, volume.shape,
                                    bool(self.visible_only.value))
        except InputError as err:
            self.progress_text.value = f"no preview: {err}"
            self._notify(err)
            return None

        def work(progress: Any, cancel: Any) -> Any:
            return segment_slice(volume, z, spec.name, box_yx=box, progress=progress,
                                 cancel=cancel, **run)

        started, own = time.perf_counter(), run["threshold"] is None
        return self.runner.start(
            work, lambda result: self._previewed(result, source, options, started, own=own),
            starting=f"starting a preview of slice {z} with {spec.name}…")

    def _previewed(self, result: Any, source: RunInput, options: dict, started: float, *,
                   own: bool = False) -> None:
        level = self._follow_level(result.manifest, options["threshold"], own)
        self.previews.show(result, source, level, options["min_size"])
        h, w = result.labels.shape[-2:]
        self.progress_text.value = (
            f"preview of slice {result.z} ({h} × {w}) with {result.manifest.model.name}: "
            f"{float(result.labels.mean()):.1%} vessel in {time.perf_counter() - started:.1f} s"
            f"{level_text(result.manifest, ', ')}; move the threshold to redraw it")

    def cancel(self) -> None:
        """Stop the running segmentation at its next batch; no layer is added."""
        self.runner.cancel()

    def _follow_level(self, manifest: Any, threshold: float, own: bool) -> float:
        """The level a result was drawn at: with the model's own post-processing, the run's
        (a level rule's choice, a hysteresis low level), which the slider then shows (quietly:
        not a redraw); else the slider's ``threshold``."""
        if not own:
            return float(threshold)
        level = float(manifest.parameters.threshold)
        self._quiet = True
        try:
            self.threshold.value = level
        finally:
            self._quiet = False
        return float(self.threshold.value)  # what the slider holds: unmoved, it does not redraw

    def _done(self, result: Any, source: RunInput, options: dict, started: float, *,
              own: bool = False) -> None:
        prob, labels, manifest = result
        level = self._follow_level(manifest, options["threshold"], own)
        output, reused = self.results.show(prob, labels, manifest, source,  # all or nothing
                                           level, options["min_size"])
        seconds = time.perf_counter() - started
        self.progress_text.value = (f"{manifest.model.name} on {manifest.device}: "
                                    f"{float(labels.mean()):.1%} vessel in {seconds:.1f} s"
                                    f"{level_text(manifest, ', ')}"
                                    + ("\n(layer already preprocessed: the model's own "
                                       "preprocessing was not applied again)"
                                       if options.get("preprocess") is False else ""))
        verb = "updated" if reused else "added"
        self.lazy = None
        self._info(f"{verb} '{output.prob_layer.name}' and '{output.labels_layer.name}'")
        self.previews.remove()  # the full result replaces the preview
        self._update_target()

    # ---------------------------------------------------------------------- live threshold
    def _threshold_moved(self, _value: Any = None) -> None:
        if self._quiet:
            return
        if self.results.current is not None or self.previews.current is not None:
            self._timer.start()
        lazy = self._lazy_current()
        if lazy is not None and self.job is None:
            self.progress_text.value = (
                f"threshold {self.threshold.value:.2f} and min size {self.min_size.value} apply "
                f"to the next Segment: '{lazy.labels_layer.name}' was written out of core and is "
                "not redrawn (that would read and rewrite the whole map on disk)")


    def apply_threshold(self) -> Any:
        """Redraw the current labels with the slider's threshold and the minimum size.

        Unedited labels are updated in place; edited labels are kept and a new labels layer
        takes the new threshold (and follows the slider from then on). The preview, if any, is
        redrawn from its stored probabilities too. Returns the labels layer written, or None when
        there was nothing to do.
        """
        self._timer.stop()
        try:
            self.previews.relabel(self.threshold.value, self.min_size.value)
        except InputError as err:
            self._notify(err)
        try:
            done = self.results.relabel(self.threshold.value, self.min_size.value)
        except InputError as err:
            self._notify(err)
            return None
        if done is None:
            return None
        what, layer = done
        if what == "new":
            kept = self.results.current.replaced[-1].name
            self._info(f"'{kept}' has your edits and was kept; threshold "
                       f"{self.threshold.value:.2f} went to the new layer '{layer.name}'")
        self._update_target()
        return layer

    def _update_target(self) -> None:
        output = self.results.current
        lazy = self._lazy_current()
        self.threshold.tooltip = LAZY_TIP if lazy is not None else self._threshold_tip
        if lazy is not None:
            self.target.value = (f"'{lazy.labels_layer.name}' was written out of core: the "
                                 "threshold and min size set the next run, it is not redrawn")
        elif output is None:
            self.target.value = ""
        elif output.labels_layer not in self.viewer.layers:
            self.target.value = "its labels layer was removed: press Segment"
        else:
            self.target.value = f"threshold and min size act on '{output.labels_layer.name}'"


def _recipe_text(recipe: Any) -> str:
    """A short description of a card's post-processing, e.g. 'hysteresis 0.45/0.95' or
    'threshold from the vessel fraction' (a level rule: the level follows the stack)."""
    if recipe.get("method") == "hysteresis":
        return f"hysteresis {float(recipe['low']):.3g}/{float(recipe['high']):.3g}"
    if recipe.get("level_rule"):
        return "threshold from the vessel fraction"
    return str(recipe.get("method", "custom"))
