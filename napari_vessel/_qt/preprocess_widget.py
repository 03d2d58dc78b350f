"""Preprocess: build a pipeline, preview it live, and apply it to a whole stack.

The dock widget has four parts, three of them in their own modules: the pipeline editor
(``preprocess_editor``: steps, parameters, presets, JSON files), the histogram-scaling reference
picker (``preprocess_reference``) and the live preview (``preprocess_preview``). This module holds
the input choice and Apply, which runs :meth:`~napari_vessel.preprocess.Pipeline.apply` in a
worker and adds the result as a new layer; the input layer is never modified.
"""

from __future__ import annotations

from functools import partial
from typing import TYPE_CHECKING, Any

from magicgui.widgets import Container, Label, ProgressBar, PushButton

from napari_vessel._qt._common import (
    OUTPUT_KEY,
    group_box,
    name_metadata,
    notify_error,
    output_name,
    show_info,
)
from napari_vessel._qt.dock import ScrollDock
from napari_vessel._qt.layer_choice import LayerCombo
from napari_vessel._qt.preprocess_editor import PipelineEditor
from napari_vessel._qt.preprocess_preview import PreviewPanel, check_image_layer, layer_spacing
from napari_vessel._qt.preprocess_reference import ReferencePanel
from napari_vessel._qt.runner import DockRunner, RunnerMixin
from napari_vessel.errors import InputError
from napari_vessel.io.volume import is_dask
from napari_vessel.preprocess import Pipeline, compute
from napari_vessel.progress import CancelToken, Progress, scaled

if TYPE_CHECKING:  # pragma: no cover
    import napari

__all__ = ["PreprocessWidget", "run_pipeline"]

def run_pipeline(pipeline: Pipeline, data: Any, spacing_zyx: Any = None, *,
                 progress: Progress | None = None, cancel: CancelToken | None = None) -> Any:
    """The pipeline's result on a whole NumPy or dask stack, as a NumPy array.

    A dask stack is processed lazily, then computed slab by slab (progress and cancel between
    slabs); a NumPy stack step by step (progress and cancel between steps).
    """
    if not is_dask(data):
        return pipeline.apply(data, spacing_zyx=spacing_zyx, progress=progress, cancel=cancel)
    lazy = pipeline.apply(data, spacing_zyx=spacing_zyx, progress=scaled(progress, 0.0, 0.2),
                          cancel=cancel)
    return compute(lazy, progress=scaled(progress, 0.2, 1.0), cancel=cancel)


class PreprocessWidget(RunnerMixin, ScrollDock):
    """Build a preprocessing pipeline, preview it live and apply it to an image layer.

    Parameters
    ----------
    napari_viewer : napari.Viewer
        The viewer the widget is docked in.

    Attributes
    ----------
    editor : PipelineEditor
        The steps and their parameters (``editor.pipeline`` is the current pipeline).
    reference : ReferencePanel
        The histogram-scaling reference picker.
    preview : PreviewPanel
        The live preview (``preview.toggle.value = True`` turns it on).
    runner : DockRunner
        Runs Apply: buttons, progress, Cancel, errors.
    job : Job or None
        The running Apply, if any.
    """

    def __init__(self, napari_viewer: napari.Viewer) -> None:
        super().__init__(labels=False)
        self.viewer = napari_viewer
        self._watched: Any = None  # the input layer whose data changes refresh the preview
        self.progress_text = Label(value="")
        # the input stays the chosen layer object across renames; its removal falls back to the
        # first image that is not a result (see LayerCombo), said in the status line
        self.layer_combo = LayerCombo(napari_viewer, self._image_layers, label="image",
                                      status=self._status)
        self.summary = Label(value="no image layer")
        inputs = Container(widgets=[self.layer_combo, self.summary], labels=True)
        self.editor = PipelineEditor(self._pipeline_changed, self._notify)
        self.reference = ReferencePanel(napari_viewer, self.editor, self.input_layer, self._notify)
        self.preview = PreviewPanel(napari_viewer, self.input_layer, lambda: self.editor.pipeline,
                                    self._notify)
        self.apply_button = PushButton(text="Apply to the whole stack")
        self.apply_button.tooltip = "process every slice in the background into a new layer"
        self.cancel_button = PushButton(text="Cancel", enabled=False)
        self.progress = ProgressBar(min=0, max=1000, value=0, visible=False)
        run = Container(widgets=[self.apply_button, self.cancel_button], layout="horizontal",
                        labels=False)
        layout = self.content.layout()
        layout.addWidget(inputs.native)
        for title, part in (("Pipeline", self.editor), ("Histogram-scaling reference",
                                                        self.reference)):
            layout.addWidget(group_box(title, part))
        for part in (self.preview, run, self.progress, self.progress_text):
            layout.addWidget(part.native)
        layout.addStretch(1)
        self._parts = (inputs, run)  # keep the containers alive with the widget
        self.runner = DockRunner(
            buttons=(self.apply_button,), cancel_button=self.cancel_button,
            progress=self.progress, status=self.progress_text, notify=self._notify,
            info=self._info, cancelled="preprocessing cancelled; no layer was added")
        self.layer_combo.changed.connect(self._input_changed)
        self.apply_button.changed.connect(lambda *_: self.apply())
        self.cancel_button.changed.connect(lambda *_: self.cancel())
        for event in (napari_viewer.layers.events.inserted, napari_viewer.layers.events.removed):
            event.connect(self._reset_choices)
        self._reset_choices()
        self._input_changed()  # the first choice may be made before the handler is connected

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
                and not layer.metadata.get(OUTPUT_KEY)]

    def input_layer(self) -> Any:
        """The chosen image layer, or None."""
        return self.layer_combo.value

    def _reset_choices(self, _event: Any = None) -> None:
        self.layer_combo.reset_choices()
        self.reference.reset_choices()

    def _input_changed(self, _value: Any = None) -> None:
        layer = self.input_layer()
        if self._watched is not None:
            self._watched.events.data.disconnect(self.preview.input_changed)
        self._watched = layer
        self.preview.input_changed()
        if layer is None:
            self.summary.value = "no image layer"
            return
        layer.events.data.connect(self.preview.input_changed)
        shape = " × ".join(str(s) for s in layer.data.shape)
        self.summary.value = f"{shape}  {layer.data.dtype}"
        try:
            check_image_layer(layer)
        except InputError as err:  # explained now; Apply and Preview refuse it with an error
            self.summary.value += "\ncannot be preprocessed"
            show_info(str(err))
            return
        if layer.ndim == 2:
            self.summary.value += "\n2D image: per-slice steps only"
            show_info(f"'{layer.name}' is a 2D image: Apply runs the per-slice steps; steps that "
                      "need a 3D stack (median3d, depth_correct, focus_stack, 3D CLAHE) can only "
                      "be previewed (with a 2D stand-in)")

    def _pipeline_changed(self) -> None:
        if hasattr(self, "preview"):
            self.preview.schedule()

    # ----------------------------------------------------------------------------------- apply
    def _check_apply(self, layer: Any, pipeline: Pipeline) -> None:
        check_image_layer(layer)
        if not pipeline.steps:
            raise InputError("the pipeline is empty; add a step or choose a preset")
        needs_3d = [step.name for step in pipeline.steps if step.needs_3d()]
        if layer.ndim == 2 and needs_3d:
            raise InputError(f"'{layer.name}' is a 2D image, but {', '.join(needs_3d)} need a 3D "
                             "stack; remove those steps (or use the preview only)")

    def apply(self) -> Any:
        """Run the pipeline on the whole input in a worker; returns the job, or None if refused.

        The result becomes a new image layer ``"<image> preprocessed"`` with the input's scale and
        translation and the pipeline in ``metadata["preprocess"]``.
        """
        if self.runner.refuse("preprocessing is already running; wait for it or press Cancel"):
            return None
        layer, pipeline = self.input_layer(), self.editor.pipeline
        try:
            self._check_apply(layer, pipeline)
        except InputError as err:
            self._notify(err)
            return None
        source = {"name": layer.name, "scale": tuple(layer.scale),
                  "translate": tuple(layer.translate), "metadata": dict(layer.metadata)}
        return self.runner.start(partial(run_pipeline, pipeline, layer.data, layer_spacing(layer)),
                                 lambda result: self._add_result(result, pipeline, source))

    def cancel(self) -> None:
        """Stop the running Apply (no layer is added)."""
        self.runner.cancel()

    def _add_result(self, result: Any, pipeline: Pipeline, source: dict) -> None:
        # not marked as a derived view (OUTPUT_KEY): it is an input for segmentation
        metadata = {key: value for key, value in source["metadata"].items()
                    if key != OUTPUT_KEY}
        metadata.update(preprocess=pipeline.to_dict(), source=source["name"],
                        **name_metadata(source["name"], "preprocessed"))
        name = output_name(source["name"], "preprocessed", self.viewer.layers)
        self.viewer.add_image(result, name=name, scale=source["scale"],
                              translate=source["translate"], metadata=metadata, colormap="gray")
        self.progress_text.value = f"added '{name}'"
        self._info(f"added '{name}' ({', '.join(pipeline.names)})")
