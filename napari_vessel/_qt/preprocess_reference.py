"""The histogram-scaling reference picker of the Preprocess dock.

The reference is another image layer (its intensity profile is measured) or the intensity profile
a registered model was trained on (from its model card). Choosing it sets the pipeline's
``histogram_scale`` step to estimate its factor against that profile, and shows the factor it
estimates for the input image.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from magicgui.widgets import ComboBox, Container, Label, PushButton

from napari_vessel._qt._common import OUTPUT_KEY, show_info, start_worker
from napari_vessel._qt.layer_choice import LayerCombo
from napari_vessel._qt.preprocess_editor import PipelineEditor
from napari_vessel.errors import InputError
from napari_vessel.models.registry import list_models
from napari_vessel.preprocess import HistogramScale, estimate_scale_factor

__all__ = ["ReferencePanel", "model_profile"]

SOURCES = ("image layer", "model")


def model_profile(spec: Any) -> dict | None:
    """The intensity profile stored with a model (its spec or its card), or None."""
    profile = getattr(spec, "intensity_profile", None)
    card = getattr(spec, "card", None)
    return dict(profile) if profile else (card.intensity_profile if card else None) or None


def _reference_step(reference: Any, method: str, data: Any) -> tuple[HistogramScale, float | None]:
    """The step scaling to ``reference`` and the factor it estimates for ``data`` (if given)."""
    step = HistogramScale.from_reference(reference, method=method)
    factor = None if data is None else estimate_scale_factor(data, step.profile, method=method)
    return step, factor


class ReferencePanel(Container):
    """Pick the reference that histogram scaling matches.

    Parameters
    ----------
    viewer : napari.Viewer
        Lists the image layers.
    editor : PipelineEditor
        Receives the ``histogram_scale`` step.
    get_input : callable
        Returns the input image layer (or None), for the factor estimate shown.
    notify : callable
        Shows an error to the user.

    Attributes
    ----------
    layer_choice : LayerCombo
        The reference image layer (bound to the layer, so a rename keeps it), shown when the
        source is "image layer".
    model_choice : ComboBox
        The registered model whose card's profile is the reference, shown when the source is
        "model".
    """

    def __init__(self, viewer: Any, editor: PipelineEditor, get_input: Callable[[], Any],
                 notify: Callable[[Any], None]) -> None:
        super().__init__(labels=True)
        self.viewer = viewer
        self.editor = editor
        self._get_input = get_input
        self._notify = notify
        self._models: dict[str, Any] | None = None
        self.job: Any = None
        self.source = ComboBox(label="reference from", choices=list(SOURCES))
        self.layer_choice = LayerCombo(viewer, self._image_layers, label="reference",
                                       initial=None, fallback=None)
        self.model_choice = ComboBox(label="reference", choices=self._model_names, nullable=True)
        self.model_choice.visible = False
        self.use_button = PushButton(text="Scale to this reference")
        self.use_button.tooltip = ("sets the histogram_scale step to estimate its factor so the "
                                   "input's intensities match the reference")
        self.status = Label(label="", value="")
        self.extend([self.source, self.layer_choice, self.model_choice, self.use_button,
                     self.status])
        self.source.changed.connect(self._source_changed)
        self.use_button.changed.connect(lambda *_: self.use_reference())

    @property
    def choice(self) -> ComboBox:
        """The reference picker of the current source (layer or model)."""
        return self.model_choice if self.source.value == "model" else self.layer_choice

    def _image_layers(self) -> list:
        from napari.layers import Image

        return [layer for layer in self.viewer.layers if isinstance(layer, Image)
                and not layer.metadata.get(OUTPUT_KEY)]

    def _model_names(self, _widget: Any = None) -> list:
        return list(self._models or {})

    def reset_choices(self, _event: Any = None) -> None:
        """Refresh the list of layers and models."""
        self.layer_choice.reset_choices()
        self.model_choice.reset_choices()

    def _source_changed(self, _value: Any = None) -> None:
        model = self.source.value == "model"
        self.model_choice.visible, self.layer_choice.visible = model, not model
        if self.source.value == "model" and self._models is None:
            self.status.value = "loading the model list…"
            self.job = start_worker(lambda progress, cancel: list_models(),
                                    on_done=self._models_loaded, on_error=self._notify,
                                    on_finished=self._finished)
        self.reset_choices()

    def _models_loaded(self, specs: list) -> None:
        self._models = {spec.name: spec for spec in specs}
        self.status.value = ""
        self.reset_choices()

    def _finished(self) -> None:
        self.job = None
        self.use_button.enabled = True

    def use_reference(self) -> Any:
        """Measure the chosen reference and set the ``histogram_scale`` step (in a worker)."""
        chosen = self.choice.value
        if self.job is not None:
            self._notify("still busy with the previous request; try again in a moment")
            return None
        if chosen is None:
            self._notify(f"choose a reference {self.source.value} first")
            return None
        name = chosen if self.source.value == "model" else chosen.name
        if self.source.value == "model":
            reference = model_profile(self._models[name])
            if reference is None:
                self._notify(InputError(
                    f"model '{name}' has no intensity profile in its card, so it cannot be a "
                    "reference; choose an image layer like its training data, or type a factor"))
                return None
            label = f"model '{name}'"
        elif chosen in self.viewer.layers:
            reference, label = chosen.data, f"layer '{name}'"
        else:
            self._notify(f"layer '{name}' is gone; choose another reference")
            return None
        layer = self._get_input()
        data = None if layer is None or layer is chosen else layer.data
        row = self._target_row()
        method = self.editor.steps[row].method if row is not None else "histogram"
        self.use_button.enabled = False
        self.status.value = "measuring…"
        self.job = start_worker(
            lambda progress, cancel: _reference_step(reference, method, data),
            on_done=lambda out: self._set_step(out, label, None if data is None else layer.name),
            on_error=self._failed, on_finished=self._finished)
        return self.job

    def _target_row(self) -> int | None:
        """The selected histogram_scale step, else the first one, else None."""
        names = [step.name for step in self.editor.steps]
        row = self.editor.current_row
        if 0 <= row < len(names) and names[row] == "histogram_scale":
            return row
        return names.index("histogram_scale") if "histogram_scale" in names else None

    def _failed(self, err: BaseException) -> None:
        self.status.value = ""
        self._notify(err)

    def _set_step(self, out: tuple[HistogramScale, float | None], label: str,
                  target: str | None) -> None:
        step, factor = out
        row = self._target_row()
        if row is None:  # scaling comes first: the models' profiles describe raw intensities
            self.editor.steps.insert(0, step)
            self.editor.set_pipeline(self.editor.pipeline, select=0)
        else:
            self.editor.replace_step(row, step)
        estimate = "" if factor is None else f"; factor for '{target}': {factor:.4g}"
        self.status.value = f"scaling to {label}{estimate}"
        show_info(f"histogram_scale now matches {label}{estimate} (type a factor to override)")
