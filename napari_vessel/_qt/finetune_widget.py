"""Fine-tune: adapt a network to the open volume, unsupervised or from the user's corrections.

The dock reads the image (and, for *from my corrections*, a Labels layer and which voxels were
edited), checks the input, and runs :func:`~napari_vessel._qt.finetune_run.run_finetune` in a
worker thread: the core fine-tune, saving the new model, and optionally a segmentation with it.
Live updates from the core (loss history, preview of the current slice) come back through a Qt
signal and draw the loss curve (:mod:`.finetune_plot`) and a 2D preview layer
(:mod:`.finetune_layers`). *Stop* ends the training and keeps the best state so far.
"""

from __future__ import annotations

import re
from typing import TYPE_CHECKING, Any

import numpy as np
from magicgui.widgets import (
    CheckBox,
    ComboBox,
    Container,
    FloatSpinBox,
    Label,
    LineEdit,
    ProgressBar,
    PushButton,
    SpinBox,
)
from qtpy.QtCore import QObject, Signal

from napari_vessel._qt._common import (
    OUTPUT_KEY,
    group_box,
    name_metadata,
    notify_error,
    output_name,
    show_info,
)
from napari_vessel._qt.dock import ScrollDock
from napari_vessel._qt.finetune_compare import ComparePanel
from napari_vessel._qt.finetune_corrections import CorrectionsPanel
from napari_vessel._qt.finetune_layers import PreviewLayer
from napari_vessel._qt.finetune_plot import LossPlot
from napari_vessel._qt.finetune_run import FinetuneJob, FinetuneOutcome, run_finetune
from napari_vessel._qt.layer_choice import LayerCombo
from napari_vessel._qt.runner import DockRunner, RunnerMixin
from napari_vessel._qt.segment_input import layer_volume
from napari_vessel._qt.segment_models import card_threshold, models_changed, watch_models
from napari_vessel._qt.segment_results import ROLE_KEY, SegmentResults
from napari_vessel.errors import InputError
from napari_vessel.models import registry
from napari_vessel.training import METHODS
from napari_vessel.training.finetune import (
    FinetuneConfig,
    FinetuneUpdate,
    check_new_name,
    is_running,
    trainable_models,
)
from napari_vessel.training.finetune_loss import trainable_spec
from napari_vessel.training.finetune_save import check_name_syntax, remove_finetuned

if TYPE_CHECKING:  # pragma: no cover
    import napari

__all__ = ["FinetuneWidget", "default_name", "stack_stem"]

MODES = {"unsupervised (image only)": "unsupervised",
         "from my corrections (labels)": "supervised"}


#: What the Preprocess dock appends to a layer name ("<stack> preprocessed [2]").
_PREPROCESSED = re.compile(r"\s+preprocessed(\s*\[\d+\])?\s*$", re.IGNORECASE)
#: Image file extensions napari layers are often named with.
_EXTENSION = re.compile(r"\.(ome\.)?(tiff?|zarr|nii(\.gz)?|czi|lif|nd2|h5|hdf5|npy|npz|ims|lsm|"
                        r"oib|oir|png|jpe?g)$", re.IGNORECASE)


def stack_stem(name: str | None) -> str | None:
    """The raw stack's name: without the Preprocess dock's suffixes and a file extension
    (``"mouse1.tif preprocessed [2]"`` → ``"mouse1"``)."""
    if name is None:
        return None
    stem, previous = str(name).strip(), None
    while stem != previous:
        previous = stem
        stem = _EXTENSION.sub("", _PREPROCESSED.sub("", stem)).strip()
    return stem or None


def default_name(model: str | None, image: str | None) -> str:
    """``"<model>-ft-<stack>"``: a valid model name (see
    :func:`~napari_vessel.training.finetune_save.check_name_syntax`) from the model and the raw
    stack's name (:func:`stack_stem`), other characters replaced by ``-``."""
    text = f"{model or 'model'}-ft-{stack_stem(image) or 'image'}"
    name = re.sub(r"[^A-Za-z0-9_.-]+", "-", text).strip("-._")[:64].rstrip("-._")
    try:
        return check_name_syntax(name)
    except InputError:
        return "finetuned"


def _stack_name(layer: Any) -> str | None:
    """The name of the stack a layer shows: for a layer the Preprocess dock made, its source
    (so a new model is named after the stack, not 'stack preprocessed')."""
    if layer is None:
        return None
    source = layer.metadata.get("source") if layer.metadata.get("preprocess") else None
    return stack_stem(str(source) if source else layer.name)


def _free_name(base: str) -> str:
    """``base``, or ``base-2``, ``base-3`` … when a model already has that name."""
    for k in range(1, 1000):
        name = base if k == 1 else f"{base[:60]}-{k}"
        try:
            return check_new_name(name)
        except InputError:
            continue
    return base


class _UpdateRelay(QObject):
    """Carries :class:`FinetuneUpdate` from the worker thread to the GUI thread."""

    update = Signal(object)


class FinetuneWidget(RunnerMixin, ScrollDock):
    """Fine-tune a registered network on an image layer and save it as a new model.

    Parameters
    ----------
    napari_viewer : napari.Viewer

    Attributes
    ----------
    settings : dict
        Extra :class:`FinetuneConfig` fields for the next run (e.g. ``{"threads": 1}``); the dock
        sets the mode and the budget.
    runner : DockRunner
        Runs the fine-tune: buttons, progress, Stop, errors (Stop keeps the result).
    job : Job or None
        The running fine-tune.
    plot : LossPlot
        The live loss curve.
    preview : PreviewLayer or None
        The preview layer of the current or last run.
    corrections : CorrectionsPanel
        The corrected labels, how their edits are known, the checked slices.
    outcome : FinetuneOutcome or None
        What the last finished run gave.
    """

    def __init__(self, napari_viewer: napari.Viewer) -> None:
        super().__init__(labels=False)
        self.viewer = napari_viewer
        self.settings: dict[str, Any] = {}
        self.run_job: FinetuneJob | None = None
        self.preview: PreviewLayer | None = None
        self.outcome: FinetuneOutcome | None = None
        self.results = SegmentResults(napari_viewer)
        self._z = 0
        self._auto_name = ""
        self._new_layers: list = []
        self._relay = _UpdateRelay()
        self._relay.update.connect(self._on_update)

        self.layer_combo = LayerCombo(napari_viewer, self._image_layers, label="image",
                                      status=self._status)
        self.model_combo = ComboBox(label="model", choices=lambda _w=None: trainable_models(),
                                    nullable=True)
        self.model_combo.tooltip = "networks with trained weights (classical methods learn nothing)"
        self.refresh_button = PushButton(text="Refresh")
        self.model_note = Label(value="")
        self.mode_combo = ComboBox(label="mode", choices=list(MODES))
        self.corrections = CorrectionsPanel(napari_viewer, self.current_slice, self._notify)
        self.minutes = FloatSpinBox(label="minutes", value=2.0, min=0.0, max=600.0, step=0.5)
        self.minutes.tooltip = "time budget (0: no time limit, only the steps)"
        self.steps = SpinBox(label="steps", value=0, min=0, max=10**6, step=10)
        self.steps.tooltip = "stop after this many steps (0: no step limit, only the minutes)"
        self.method_combo = ComboBox(label="method", choices=list(METHODS), value=METHODS[0])
        self.method_combo.tooltip = (
            "how to adapt without labels: adabn (re-estimate the batch-norm statistics on this "
            "volume; seconds; the measured default, it never lowered F1 on a real volume), "
            "synthetic (train on synthetic vessels drawn at this volume's voxel size and given "
            "its grey levels: exact labels; a minute or two), selftrain (self-training on the "
            "model's confident voxels), tent (entropy "
            "minimisation), umis (the UMIS loss)")
        self.only_unsure = CheckBox(text="only when the model is unsure of this volume",
                                    value=False)
        self.only_unsure.tooltip = (
            "unsupervised: adapt only when the model's probabilities on this volume are unsure "
            "(mean entropy at least 0.45 bits). Off by default: a model can be confidently "
            "wrong; the guard (vessel fraction and skeleton length within ±25 % of the "
            "parent's) decides instead")
        self.name_edit = LineEdit(label="new model")
        self.name_note = Label(value="")
        self.segment_check = CheckBox(text="segment with the new model when done", value=True)
        self.start_button = PushButton(text="Start")
        self.stop_button = PushButton(text="Stop (keep best)", enabled=False)
        self.stop_button.tooltip = "stop now and keep the best state so far (it is saved)"
        self.progress = ProgressBar(min=0, max=1000, value=0, visible=False)
        self.status = Label(value="")
        self.plot = LossPlot()

        model_row = Container(widgets=[self.model_combo, self.refresh_button],
                              layout="horizontal", labels=False, label="model")
        model_row.margins = (0, 0, 0, 0)
        self._inputs = Container(widgets=[self.layer_combo, model_row, self.model_note,
                                          self.mode_combo], labels=True)
        self._options = Container(widgets=[self.method_combo, self.minutes, self.steps,
                                           self.only_unsure,
                                           self.name_edit,
                                           self.name_note, self.segment_check], labels=True)
        buttons = Container(widgets=[self.start_button, self.stop_button], layout="horizontal",
                            labels=False)
        layout = self.content.layout()
        self._corrections_box = group_box("Corrections", self.corrections)
        for box in (group_box("Input", self._inputs), self._corrections_box,
                    group_box("Run", self._options)):
            layout.addWidget(box)
        for part in (buttons, self.progress, self.status):
            layout.addWidget(part.native)
        layout.addWidget(self.plot)
        self.compare = ComparePanel(self.revert)
        layout.addWidget(self.compare)
        layout.addStretch(1)
        self.native.setMinimumWidth(380)
        self._parts = (model_row, buttons)
        for label in (self.model_note, self.name_note, self.status):
            label.native.setWordWrap(True)
            label.native.setMinimumWidth(250)  # a long message wraps; it does not widen the dock

        # Stop is not Cancel: the core keeps the best state so far and returns it, so a stopped
        # run still saves (and segments); while training stops, "stopping…" stays.
        self.runner = DockRunner(
            buttons=(self.start_button,), cancel_button=self.stop_button, progress=self.progress,
            status=self.status, notify=self._notify, info=self._info, stop_keeps_result=True,
            hold_status=self._stopping_training)
        self.refresh_button.changed.connect(lambda *_: self.refresh_models())
        self.model_combo.changed.connect(self._choice_changed)
        self.layer_combo.changed.connect(self._choice_changed)
        self.mode_combo.changed.connect(self._mode_changed)
        self.name_edit.changed.connect(lambda *_: self._check_name())
        self.start_button.changed.connect(lambda *_: self.start())
        self.stop_button.changed.connect(lambda *_: self.stop())
        layers = napari_viewer.layers
        layers.events.inserted.connect(self._layers_changed)
        layers.events.removed.connect(self._layers_changed)
        napari_viewer.dims.events.current_step.connect(self._slice_changed)
        self._layers_changed()
        self._mode_changed()
        # a model saved or deleted elsewhere (another Fine-tune dock) appears without Refresh
        self.unwatch = watch_models(self.refresh_models, self.native)

    @staticmethod
    def _notify(err: Any) -> None:
        notify_error(err)  # looked up at call time, so tests can capture it

    @staticmethod
    def _info(text: str) -> None:
        show_info(text)

    def _status(self, text: str) -> None:
        self.status.value = text

    # ------------------------------------------------------------------------------ choices
    def _image_layers(self, _widget: Any = None) -> list:
        from napari.layers import Image

        return [layer for layer in self.viewer.layers if isinstance(layer, Image)
                and layer.ndim >= 3 and OUTPUT_KEY not in layer.metadata
                and ROLE_KEY not in layer.metadata]

    def _layers_changed(self, _event: Any = None) -> None:
        self.layer_combo.reset_choices()  # keeps the chosen layer object (see LayerCombo)
        self.corrections.layers_changed()
        self.refresh_models()

    def refresh_models(self) -> None:
        """Read the list of networks that can be fine-tuned again (e.g. after a new model),
        keeping the choice; never empty while a network is listed (the recommended first)."""
        self.model_combo.reset_choices()
        if self.model_combo.value is None and self.model_combo.choices:
            try:
                recommended = registry.default_model_name()
            except InputError:
                recommended = None
            self.model_combo.value = (recommended if recommended in self.model_combo.choices
                                      else self.model_combo.choices[0])
        self._choice_changed()

    def _choice_changed(self, _value: Any = None) -> None:
        model, layer = self.model_combo.value, self.layer_combo.value
        if model is None:
            self.model_note.value = ("no network can be fine-tuned: train one first "
                                     "(napari-vessel train), then press Refresh")
        else:
            try:
                self.model_note.value = registry.get(model).description
            except InputError as err:
                self.model_note.value = str(err)
        if self.name_edit.value in ("", self._auto_name):
            name = _free_name(default_name(model, _stack_name(layer)))
            self._auto_name = name
            self.name_edit.value = name
        self._check_name()
        self._slice_changed()

    def _check_name(self) -> str | None:
        try:
            name = check_new_name(self.name_edit.value)
        except InputError as err:
            self.name_note.value = str(err)
            return None
        self.name_note.value = "saved as a new model in your models folder"
        return name

    def _mode_changed(self, _value: Any = None) -> None:
        supervised = MODES[self.mode_combo.value] == "supervised"
        self._corrections_box.setVisible(supervised)
        self.only_unsure.visible = self.method_combo.visible = not supervised
        self.corrections.show_state()

    # -------------------------------------------------------------------------------- slice
    def _slice_changed(self, _event: Any = None) -> None:
        layer = self.layer_combo.value
        if layer is None:
            return
        z = layer.world_to_data(self.viewer.dims.point)[-3]
        self._z = int(np.clip(round(float(z)), 0, layer.data.shape[-3] - 1))

    def current_slice(self) -> int:
        """Z index (in the image's voxels) of the slice the viewer shows."""
        return self._z

    def mark_checked(self) -> int | None:
        """Mark the viewer's current slice of the chosen labels as checked; returns its index."""
        self._slice_changed()
        return self.corrections.mark_checked()

    # ---------------------------------------------------------------------------------- run
    def _make_job(self) -> tuple[FinetuneJob, Any]:
        """Read and check the dock's input on the GUI thread (InputError: say what to fix)."""
        volume, source = layer_volume(self.layer_combo.value)
        if self.model_combo.value is None:
            raise InputError("choose a model to start from (press Refresh if the list is empty)")
        model = trainable_spec(self.model_combo.value, trainable_models).name
        name = check_new_name(self.name_edit.value)
        minutes, steps = float(self.minutes.value), int(self.steps.value)
        mode = MODES[self.mode_combo.value]
        gate = {"min_uncertainty": 0.45} if self.only_unsure.value else {}
        config = FinetuneConfig(**{"mode": mode, "minutes": minutes or None,
                                   "max_steps": steps or None, "method": self.method_combo.value,
                                   **gate, **self.settings})
        job = FinetuneJob(model, volume, name, config, segment=bool(self.segment_check.value),
                          preview_z=self.current_slice)
        if mode == "supervised":
            job.labels, job.edited_mask, job.checked_slices = self.corrections.read(volume.shape)
        return job, source

    def start(self) -> Any:
        """Start fine-tuning in a worker; returns the job, or None when refused (notified)."""
        if self.job is not None or is_running():
            self._notify("a fine-tune is already running; wait for it or press Stop")
            return None
        try:
            job, source = self._make_job()
        except InputError as err:
            self._notify(err)
            return None
        self.run_job = job
        suffix = f"fine-tune preview ({job.name})"
        self.preview = PreviewLayer(self.viewer, output_name(source.name, suffix,
                                                             self.viewer.layers),
                                    source.scale, source.translate,
                                    metadata=name_metadata(source.name, suffix))
        self.plot.clear()
        self.compare.clear()

        def work(progress: Any, cancel: Any) -> FinetuneOutcome:
            return run_finetune(job, progress=progress, cancel=cancel,
                                on_update=self._relay.update.emit)

        return self.runner.start(work, lambda outcome: self._done(outcome, source),
                                 starting=f"preparing {job.name}…",
                                 on_cancelled=self._remove_preview,
                                 on_failed=self._remove_preview)

    def stop(self) -> None:
        """Stop training now and keep the best state so far (it is still saved, and segments
        the volume when asked); pressed while segmenting, stop the segmentation."""
        if self.job is None:
            return
        job = self.run_job
        if job is not None and job.phase == "segmenting":
            job.segment_token.cancel()
            self.status.value = "stopping the segmentation (the new model is saved)…"
            return
        then = "; then segmenting with it (Stop again to skip)" if job is not None and \
            job.segment else ""
        self.runner.cancel(f"stopping: keeping the best state so far{then}…")

    def _stopping_training(self, job: Any) -> bool:
        """Stop was pressed while training: keep "stopping…" (messages of the later
        segmentation show again)."""
        training = self.run_job is None or self.run_job.phase == "training"
        return training and job.token.cancelled

    def _on_update(self, update: FinetuneUpdate) -> None:
        self.plot.set_curves(update.losses, update.smoothed, update.best_step)
        self.plot.set_drift(update.drift, self.run_job.config.max_drift
                            if self.run_job is not None else None)
        if update.preview is not None and self.preview is not None:
            self.preview.show(update.preview, update.preview_origin_yx, update.preview_z)

    def _done(self, outcome: FinetuneOutcome, source: Any) -> None:
        self.outcome = outcome
        result = outcome.result
        if outcome.weights is None:
            if self.preview is not None:
                self.preview.remove()
            unsegmented = " and not segmented (no new model to segment with)" if \
                self.run_job is not None and self.run_job.segment else ""
            if result.steps == 0 and result.stopped_early:
                self.status.value = f"stopped before the first step: nothing was saved{unsegmented}"
                self._info(f"fine-tune stopped before its first step: nothing was saved"
                           f"{unsegmented}; let it run a little longer")
                return
            text = f"nothing was saved{unsegmented}, {result.parent} stays as it is: " \
                   f"{result.message}"
            self.status.value = text
            self._info(text)
            return
        name = outcome.weights.stem
        text = f"saved model '{name}': {result.steps} steps in {result.seconds:.0f} s; " \
               f"{result.message}"
        if outcome.segmentation is not None:
            prob, labels, manifest = outcome.segmentation
            spec = registry.get(name)
            output, _ = self.results.show(prob, labels, manifest, source,
                                          card_threshold(spec), 0)
            text += f"; added '{output.labels_layer.name}'"
            self._new_layers = [layer for layer in (output.prob_layer, output.labels_layer)
                                if layer is not None]
            if outcome.parent_labels is not None:
                self.compare.show_pair(outcome.parent_labels, labels, result.parent, name)
                self.fit_width()  # the before/after pair: widen the dock rather than scroll
        elif outcome.segment_stopped:
            text += "; segmentation stopped (segment with it from the Segment dock)"
        self.status.value = text
        self._info(text)
        models_changed()  # every open Segment and Fine-tune dock lists the new model

    def revert(self) -> None:
        """Go back to the parent: delete the new model and remove the layers it made."""
        outcome = self.outcome
        if outcome is None or outcome.weights is None or self.job is not None:
            return
        try:
            remove_finetuned(outcome.weights)
        except (InputError, OSError) as err:
            self._notify(err)
            return
        for layer in self._new_layers:
            if layer in self.viewer.layers:
                self.viewer.layers.remove(layer)
        self._new_layers = []
        if self.preview is not None:
            self.preview.remove()
        name = outcome.weights.stem
        self.outcome = None
        self.compare.clear()
        models_changed()
        self.status.value = f"reverted: '{name}' was deleted; {outcome.result.parent} is unchanged"
        self._info(self.status.value)

    def _remove_preview(self, _err: Any = None) -> None:
        if self.preview is not None:
            self.preview.remove()  # the viewer is left as it was
