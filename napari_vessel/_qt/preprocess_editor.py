"""The pipeline editor of the Preprocess dock: the list of steps, presets, files and a form.

The editor holds the steps the user builds (frozen dataclasses from
:mod:`napari_vessel.preprocess`); every edit makes a new step through
:func:`~napari_vessel.preprocess.make_step`, so the core checks each value. A bad value gives a
notification and the step keeps its previous value.
"""

from __future__ import annotations

import os
from collections.abc import Callable
from pathlib import Path
from typing import Any

from magicgui.widgets import Container
from qtpy.QtCore import Qt
from qtpy.QtWidgets import (
    QComboBox,
    QFileDialog,
    QGroupBox,
    QHBoxLayout,
    QListWidget,
    QPushButton,
    QVBoxLayout,
    QWidget,
)

from napari_vessel._qt._common import show_info
from napari_vessel._qt.preprocess_form import StepForm, describe
from napari_vessel.errors import InputError
from napari_vessel.preprocess import (
    DEFAULT_2PM,
    DEFAULT_CONFOCAL,
    STEPS,
    HistogramScale,
    Normalize,
    Pipeline,
    Step,
    make_step,
)

__all__ = ["PipelineEditor", "PRESETS", "NEW_STEP_PARAMS"]

#: The standard pipelines offered as buttons.
PRESETS: dict[str, Pipeline] = {"2PM": DEFAULT_2PM, "confocal": DEFAULT_CONFOCAL}
#: Parameters of a newly added step where the defaults alone are not a valid step.
NEW_STEP_PARAMS: dict[str, dict[str, Any]] = {"histogram_scale": {"factor": 1.0}}

JSON_FILTER = "Pipeline JSON (*.json);;All files (*)"


def _button(text: str, tip: str, slot: Callable[[], Any]) -> QPushButton:
    button = QPushButton(text)
    button.setToolTip(tip)
    button.clicked.connect(lambda *_: slot())
    return button


def _row(*widgets: QWidget) -> QWidget:
    row = QWidget()
    layout = QHBoxLayout(row)
    layout.setContentsMargins(0, 0, 0, 0)
    for widget in widgets:
        layout.addWidget(widget)
    return row


class PipelineEditor(Container):
    """Build, reorder, tune, save and load a preprocessing pipeline.

    Parameters
    ----------
    on_change : callable
        Called with no arguments after every change of the pipeline.
    notify : callable
        Shows an error to the user (a notification).
    pipeline : Pipeline, optional
        The starting pipeline (default: the two-photon preset).
    """

    def __init__(self, on_change: Callable[[], None], notify: Callable[[Any], None],
                 pipeline: Pipeline = DEFAULT_2PM) -> None:
        super().__init__(labels=False)
        self._on_change = on_change
        self._notify = notify
        self.steps: list[Step] = []
        self.form: StepForm | None = None
        self.preset_buttons = {name: _button(f"{name} preset", f"replace the steps by the {name} "
                                             "standard pipeline", lambda n=name: self.load_preset(n))
                               for name in PRESETS}
        self.save_button = _button("Save…", "save the pipeline as JSON", self.save_pipeline)
        self.load_button = _button("Load…", "load a pipeline JSON file", self.load_pipeline)
        self.list = QListWidget()
        self.list.setMinimumHeight(90)
        self.list.setMaximumHeight(150)
        self.list.setWordWrap(True)
        self.list.setHorizontalScrollBarPolicy(Qt.ScrollBarPolicy.ScrollBarAlwaysOff)
        self.list.currentRowChanged.connect(self._selected)
        self.step_combo = QComboBox()
        for name, cls in STEPS.items():
            self.step_combo.addItem(f"{cls.title} ({name})", name)
        self.add_button = _button("Add", "add the chosen step at the end, but before a final "
                                  "normalisation (which stays last)",
                                  lambda: self.add_step(self.step_combo.currentData()))
        self.remove_button = _button("Remove", "remove the selected step", self.remove_step)
        self.up_button = _button("Up", "run the selected step earlier",
                                 lambda: self.move_step(-1))
        self.down_button = _button("Down", "run the selected step later",
                                   lambda: self.move_step(1))
        self.form_box = QGroupBox("Parameters")
        self.form_box.setLayout(QVBoxLayout())
        layout = self.native.layout()
        for widget in (_row(*self.preset_buttons.values(), self.save_button, self.load_button),
                       self.list, _row(self.step_combo, self.add_button),
                       _row(self.remove_button, self.up_button, self.down_button), self.form_box):
            layout.addWidget(widget)
        self.set_pipeline(pipeline)

    # ------------------------------------------------------------------------------- the state
    @property
    def pipeline(self) -> Pipeline:
        """The pipeline as edited (a frozen copy)."""
        return Pipeline(tuple(self.steps))

    @property
    def current_row(self) -> int:
        """Index of the selected step, or -1."""
        return self.list.currentRow()

    def set_pipeline(self, pipeline: Pipeline, select: int = 0) -> None:
        """Replace every step by those of ``pipeline``."""
        self.steps = list(pipeline.steps)
        self._refresh(select)

    def _refresh(self, select: int) -> None:
        self.list.blockSignals(True)
        self.list.clear()
        for i, step in enumerate(self.steps):
            self.list.addItem(f"{i + 1}. {describe(step)}")
            self.list.item(i).setToolTip(type(step).__doc__ or step.title)
        self.list.blockSignals(False)
        row = min(select, len(self.steps) - 1)
        self.list.setCurrentRow(row)
        self._selected(row)
        self._on_change()

    # ----------------------------------------------------------------------------------- edits
    def add_step(self, name: str, **params: Any) -> Step | None:
        """Add a step by name (see ``STEPS``) at the end, but before a final normalisation (which
        must stay last); returns it, or None after a notification."""
        try:
            step = make_step(name, **{**NEW_STEP_PARAMS.get(name, {}), **params})
        except InputError as err:
            self._notify(err)
            return None
        at = len(self.steps)
        while at and isinstance(self.steps[at - 1], Normalize) and not isinstance(step, Normalize):
            at -= 1
        self.steps.insert(at, step)
        if isinstance(step, HistogramScale) and step.profile is None:
            show_info("histogram scaling: set a factor, or pick a reference below to estimate it")
        self._refresh(at)
        return step

    def remove_step(self, row: int | None = None) -> None:
        """Remove the step at ``row`` (default: the selected one)."""
        row = self.current_row if row is None else row
        if not 0 <= row < len(self.steps):
            return
        del self.steps[row]
        self._refresh(max(row - 1, 0) if row >= len(self.steps) else row)

    def move_step(self, offset: int, row: int | None = None) -> None:
        """Move the step at ``row`` (default: the selected one) ``offset`` places (-1: up)."""
        row = self.current_row if row is None else row
        target = row + offset
        if not (0 <= row < len(self.steps) and 0 <= target < len(self.steps)):
            return
        self.steps.insert(target, self.steps.pop(row))
        self._refresh(target)

    def set_parameter(self, row: int, name: str, value: Any) -> bool:
        """Set one parameter of the step at ``row``; False (and a notification) if refused."""
        params = {k: v for k, v in self.steps[row].to_dict().items() if k != "name"}
        if name not in params:
            params = {}  # let make_step name the parameter and suggest the closest one
        return self._replace(row, {**params, name: value})

    def replace_step(self, row: int, step: Step) -> None:
        """Put ``step`` at ``row`` (used by the reference picker)."""
        self.steps[row] = step
        self._refresh(row)

    def _replace(self, row: int, params: dict) -> bool:
        try:
            step = make_step(self.steps[row].name, **params)
        except InputError as err:
            self._notify(err)
            if self.form is not None and row == self.current_row:
                self.form.set_step(self.steps[row])  # back to the last valid values
            return False
        if step != self.steps[row]:
            self.steps[row] = step
            self.list.item(row).setText(f"{row + 1}. {describe(step)}")
            if self.form is not None and row == self.current_row:
                self.form.set_step(step)
            self._on_change()
        return True

    def _selected(self, row: int) -> None:
        layout = self.form_box.layout()
        if self.form is not None:
            layout.removeWidget(self.form.native)
            self.form.native.setParent(None)
            self.form.native.deleteLater()
            self.form = None
        if not 0 <= row < len(self.steps):
            self.form_box.setTitle("Parameters (add a step)")
            return
        step = self.steps[row]
        self.form_box.setTitle(f"Parameters: {step.title}")
        self.form = StepForm(step, lambda params, r=row: self._replace(r, params))
        layout.addWidget(self.form.native)

    # --------------------------------------------------------------------------- presets, files
    def load_preset(self, name: str) -> None:
        """Replace the steps by a standard pipeline (``"2PM"`` or ``"confocal"``)."""
        self.set_pipeline(PRESETS[name])

    def save_pipeline(self, path: str | os.PathLike | None = None) -> Path | None:
        """Write the pipeline as JSON to ``path`` (default: ask with a file dialog)."""
        if path is None:
            path, _ = QFileDialog.getSaveFileName(self.native, "Save preprocessing pipeline",
                                                  "pipeline.json", JSON_FILTER)
            if not path:
                return None
        try:
            saved = self.pipeline.save(path)
        except OSError as err:
            self._notify(InputError(f"could not write {path}: {err.strerror or err}"))
            return None
        show_info(f"pipeline saved to {saved}")
        return saved

    def load_pipeline(self, path: str | os.PathLike | None = None) -> Pipeline | None:
        """Read a pipeline JSON file (default: ask with a file dialog); None if refused."""
        if path is None:
            path, _ = QFileDialog.getOpenFileName(self.native, "Load preprocessing pipeline", "",
                                                  JSON_FILTER)
            if not path:
                return None
        try:
            pipeline = Pipeline.load(path)
        except InputError as err:
            self._notify(InputError(f"{Path(path).name}: {err}"))
            return None
        except OSError as err:
            self._notify(InputError(f"could not read {path}: {err.strerror or err}"))
            return None
        self.set_pipeline(pipeline)
        return pipeline
