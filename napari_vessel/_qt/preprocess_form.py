"""A parameter form for one preprocessing step, generated from its dataclass fields.

Each field's type and ``metadata`` (``help``, ``min``, ``max``, ``choices``) pick the editor:
a combo box for choices, a check box for a flag, a spin box within ``[min, max]`` for a number,
and a read-only summary for a tuple (a reference profile, set by the reference picker). An
optional number (``None`` allowed) shows a special value ("auto") at the bottom of its range.
"""

from __future__ import annotations

import dataclasses
import types
import typing
from collections.abc import Callable
from typing import Any

from magicgui.widgets import CheckBox, ComboBox, Container, FloatSpinBox, Label, SpinBox

from napari_vessel.preprocess import Step

__all__ = ["StepForm", "field_type", "describe"]

#: Upper bound of a spin box whose field has no ``max``.
BIG = 1_000_000
#: Text shown by an optional number's spin box at its special (``None``) value.
AUTO_TEXT = {"factor": "estimate", "kernel_size": "auto"}


def field_type(cls: type[Step], field: dataclasses.Field) -> tuple[type, bool]:
    """The base type of a step field (bool, int, float, str or tuple) and whether None is allowed.

    Parameters
    ----------
    cls : type
        A step class, e.g. ``Clahe``.
    field : dataclasses.Field
        One of ``cls.parameters()``.

    Returns
    -------
    base : type
    optional : bool
    """
    hint = typing.get_type_hints(cls)[field.name]
    optional = False
    if isinstance(hint, types.UnionType) or typing.get_origin(hint) is typing.Union:
        args = [a for a in typing.get_args(hint) if a is not type(None)]
        optional = len(args) < len(typing.get_args(hint))
        hint = args[0]
    origin = typing.get_origin(hint) or hint
    return (tuple if origin is tuple else origin), optional


def describe(step: Step) -> str:
    """One line for the step list: ``"3D median filter (size=3)"``."""
    parts = []
    for key, value in step.to_dict().items():
        if key == "name" or isinstance(value, list):
            continue
        parts.append(f"{key}={'auto' if value is None else value}")
    if getattr(step, "profile", None):
        parts.append("reference set")
    return f"{step.title} ({', '.join(parts)})" if parts else step.title


def _tuple_text(value: tuple) -> str:
    if not value:
        return "none (pick a reference below)"
    return f"{len(value)} values, {value[0]:g} … {value[-1]:g}"


class StepForm(Container):
    """Editors for the parameters of one step.

    Parameters
    ----------
    step : Step
        The step whose values fill the form.
    on_change : callable
        Called with ``{parameter: value}`` (all of the step's parameters) when the user edits one.

    Attributes
    ----------
    editors : dict
        The editor widget of each parameter, by name (tests set ``editors["size"].value``).
    """

    def __init__(self, step: Step, on_change: Callable[[dict], None]) -> None:
        super().__init__(labels=True)
        self.step = step
        self._on_change = on_change
        self._quiet = False
        self.editors: dict[str, Any] = {}
        for field in step.parameters():
            editor = self._make_editor(field)
            editor.tooltip = field.metadata.get("help", "")
            self.editors[field.name] = editor
            self.append(editor)
            if not isinstance(editor, Label):
                editor.changed.connect(self._edited)
        if not self.editors:
            self.append(Label(value="this step has no parameters"))
        self.set_step(step)

    def _make_editor(self, field: dataclasses.Field) -> Any:
        meta = field.metadata
        base, optional = field_type(type(self.step), field)
        label = field.name.replace("_", " ")
        if "choices" in meta:
            return ComboBox(label=label, choices=list(meta["choices"]))
        if base is bool:
            return CheckBox(label=label)
        if base is tuple:
            return Label(label=label)
        if base is int and optional:  # QDoubleSpinBox shows the special text; SpinBox cannot
            box = FloatSpinBox(label=label, min=int(meta.get("min", 0)) - 1,
                               max=int(meta.get("max", BIG)), step=1)
            box.native.setDecimals(0)
        elif base is int:
            box = SpinBox(label=label, min=int(meta.get("min", 0)), max=int(meta.get("max", BIG)),
                          step=1)
        else:
            high = float(meta.get("max", BIG))
            step = 0.005 if high <= 1 else (0.5 if high >= BIG else 0.1)
            box = FloatSpinBox(label=label, min=float(meta.get("min", -BIG)), max=high, step=step)
            box.native.setDecimals(4 if high <= 1 else 3)
        box.native.setKeyboardTracking(False)  # one change when typing ends, not per keystroke
        if optional:
            box.native.setSpecialValueText(AUTO_TEXT.get(field.name, "auto"))
        return box

    def set_step(self, step: Step) -> None:
        """Show the values of ``step`` without reporting a change."""
        self.step = step
        self._quiet = True
        try:
            for name, editor in self.editors.items():
                value = getattr(step, name)
                if isinstance(editor, Label):
                    editor.value = _tuple_text(tuple(value))
                elif value is None:
                    editor.value = editor.min  # the special "auto" value
                else:
                    editor.value = value
        finally:
            self._quiet = False

    def values(self) -> dict[str, Any]:
        """The parameters as edited (tuples are kept from the step; "auto" gives None)."""
        params: dict[str, Any] = {}
        for field in self.step.parameters():
            editor = self.editors[field.name]
            _, optional = field_type(type(self.step), field)
            if isinstance(editor, Label):
                params[field.name] = getattr(self.step, field.name)
            elif optional and editor.value <= editor.min:
                params[field.name] = None
            elif field_type(type(self.step), field)[0] is int:
                params[field.name] = int(round(editor.value))
            else:
                params[field.name] = editor.value
        return params

    def _edited(self, _value: Any = None) -> None:
        if not self._quiet:
            self._on_change(self.values())
