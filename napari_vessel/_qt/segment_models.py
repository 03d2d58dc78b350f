"""The model part of the Segment dock: the registry's models, the chosen model's card, the device.

Models are listed only from :func:`napari_vessel.models.registry.list_models`; *Refresh* reads the
list again, so models the user trained or fine-tuned since the dock opened appear. A model saved or
deleted from a dock in this session (the Fine-tune dock) calls :func:`models_changed`, which
refreshes every open dock that :func:`watch_models` (no click needed).
"""

from __future__ import annotations

import weakref
from collections.abc import Callable
from typing import Any

from magicgui.widgets import ComboBox, Container, Label, PushButton, TextEdit

from napari_vessel.devices import pick_device
from napari_vessel.errors import InputError
from napari_vessel.models import registry
from napari_vessel.models.card import format_count, format_scores
from napari_vessel.models.registry import ModelSpec

__all__ = ["ModelPanel", "card_text", "card_threshold", "DEVICES", "models_changed",
           "watch_models"]

#: The device choices; "auto" is CUDA, then Apple MPS, then the CPU.
DEVICES = ("auto", "cpu", "cuda", "mps")

_parameter_counts: dict[tuple, int | None] = {}

#: Bound methods called when the list of models changed (weakly held: a closed dock drops out).
_watchers: list[weakref.WeakMethod] = []


def watch_models(method: Callable[[], Any], widget: Any = None) -> Callable[..., None]:
    """Call the bound ``method()`` whenever :func:`models_changed` is called.

    Parameters
    ----------
    method : bound method
        E.g. a dock's ``refresh``; held weakly, so it never keeps a closed dock alive.
    widget : QWidget, optional
        Stop watching when this Qt widget is destroyed (the dock closed).

    Returns
    -------
    callable
        Stops watching.
    """
    ref = weakref.WeakMethod(method)
    _watchers.append(ref)

    def unwatch(*_args: Any) -> None:
        _watchers[:] = [other for other in _watchers if other is not ref]

    if widget is not None:
        widget.destroyed.connect(unwatch)
    return unwatch


def models_changed() -> None:
    """Tell every open dock that a model was saved or deleted: each reads its list again."""
    for ref in list(_watchers):
        method = ref()
        try:
            if method is None:
                raise RuntimeError("its dock is gone")
            method()
        except RuntimeError:  # its Qt widget was deleted: stop calling it
            _watchers[:] = [other for other in _watchers if other is not ref]
        except Exception:  # noqa: BLE001, S110 - one broken dock must not stop the others
            pass


def card_threshold(spec: ModelSpec | None) -> float:
    """The threshold the model card recommends (:attr:`ModelSpec.threshold`); 0.5 for no model.

    A shipped card with a broken threshold raises; user cards are checked when read, so a bad
    one never reaches the dock.
    """
    return 0.5 if spec is None else spec.threshold


def _parameters(spec: ModelSpec) -> str:
    key = (spec.name, str(spec.weights), repr(sorted(spec.config.items())))
    if key not in _parameter_counts:
        try:
            _parameter_counts[key] = registry.count_parameters(spec)
        except Exception:  # noqa: BLE001 - a broken user config must not break the card
            _parameter_counts[key] = -1
    count = _parameter_counts[key]
    return "unknown (the card's config does not build)" if count == -1 else format_count(count)


def _listing(values: Any, limit: int = 4) -> str:
    items = [str(v) for v in values] if isinstance(values, list | tuple) else [str(values)]
    shown = ", ".join(items[:limit])
    return shown + (f" and {len(items) - limit} more" if len(items) > limit else "")


def card_text(spec: ModelSpec) -> str:
    """What the model card says, as a few lines for the read-only card box.

    Parameters
    ----------
    spec : ModelSpec
        A registered model.

    Returns
    -------
    str
        Kind, description, parameters, training data, scores, threshold, patch size,
        preprocessing and the state of the weights.
    """
    card = spec.card
    owner = ", your model" if spec.source == "user" else ""
    lines = [f"{spec.name}: {spec.kind}{owner}", spec.description]
    if spec.is_network:
        lines.append(f"parameters: {_parameters(spec)}")
    else:
        lines.append("classical method: nothing trained; runs on the CPU")
    if spec.dims == 2:
        lines.append("2D model: a 3D stack is segmented slice by slice, by design")
    if card is not None and card.parent:
        lines.append(f"fine-tuned from: {card.parent}")
    if card is not None and card.trained_on:
        lines.append(f"trained on: {_listing(card.trained_on)}")
    scores = format_scores(card.scores if card is not None else None)
    lines.append(f"scores: {'none in the card yet' if scores == '-' else scores}")
    source = "from the card" if card is not None and card.threshold is not None else "no card value"
    rule = (spec.postprocessing or {}).get("level_rule") if spec.postprocessing else None
    if rule:
        lines.append(f"threshold: follows the vessel fraction f (level {rule['intercept']:.3g} "
                     f"{rule['slope']:+.3g} × f); {card_threshold(spec):.3g} without the rule")
    else:
        lines.append(f"threshold: {card_threshold(spec):.3g} ({source})")
    if spec.is_network:
        lines.append("patch: " + " × ".join(str(p) for p in spec.patch_size_zyx))
    steps = (spec.preprocessing or {}).get("steps") or []
    names = [str(step.get("name")) for step in steps if isinstance(step, dict)]
    if names:
        lines.append(f"preprocessing: {', '.join(names)}")
    if spec.is_network:
        if spec.has_weights:
            digest = ((card.sha256 if card is not None else None) or "")[:12]
            lines.append(f"weights: {spec.weights.name}" + (f" (sha256 {digest}…)" if digest else ""))
        else:
            lines.append("weights: MISSING - train it first (napari-vessel train) or choose "
                         "another model")
    return "\n".join(line for line in lines if line)


def _choice_label(spec: ModelSpec, default: str | None) -> str:
    notes = []
    if spec.name == default:
        notes.append("recommended")
    if spec.source == "user":
        notes.append("yours")
    if not spec.usable:
        notes.append("no weights")
    return spec.name + (f"  ({', '.join(notes)})" if notes else "")


class ModelPanel(Container):
    """Model chooser with a *Refresh* button, the model card, and the device choice.

    Parameters
    ----------
    on_model_changed : callable, optional
        Called with the newly chosen :class:`ModelSpec` (or None) when the choice changes.

    Attributes
    ----------
    model_combo : ComboBox
        Model names (the value is the name).
    card : TextEdit
        The chosen model's card (read-only).
    device_combo : ComboBox
        One of :data:`DEVICES`.
    device_note : Label
        Which device the run will use ("auto" is resolved here).
    """

    def __init__(self, on_model_changed: Callable[[ModelSpec | None], None] | None = None) -> None:
        super().__init__(labels=True)
        self._on_model_changed = on_model_changed
        self._choices: list[tuple[str, str]] = []
        # a callable, so that napari's reset_choices (on layer changes) keeps the list
        self.model_combo = ComboBox(label="model", choices=lambda _w=None: self._choices,
                                    nullable=True)
        self.model_combo.tooltip = "models from the registry; see 'napari-vessel models'"
        self.refresh_button = PushButton(text="Refresh")
        self.refresh_button.tooltip = ("read the model list again (models you trained or "
                                       "fine-tuned since appear)")
        row = Container(widgets=[self.model_combo, self.refresh_button], layout="horizontal",
                        labels=False, label="model")
        row.margins = (0, 0, 0, 0)
        self.card = TextEdit(label="card")
        self.card.native.setReadOnly(True)
        self.card.native.setMinimumHeight(110)
        self.card.native.setMaximumHeight(170)
        self.device_combo = ComboBox(label="device", choices=list(DEVICES), value="auto")
        self.device_combo.tooltip = "auto: CUDA, then Apple MPS, then the CPU"
        self.device_note = Label(label="", value="")
        self.extend([row, self.card, self.device_combo, self.device_note])
        self.model_combo.changed.connect(self._model_changed)
        self.device_combo.changed.connect(lambda *_: self._update_device_note())
        self.refresh_button.changed.connect(lambda *_: self.refresh())
        self.refresh()
        # a model saved or deleted in another dock appears here without a Refresh click
        self.unwatch = watch_models(self.refresh, self.native)

    @property
    def model_name(self) -> str | None:
        """The chosen model's name."""
        return self.model_combo.value

    def spec(self) -> ModelSpec:
        """The chosen model, looked up again in the registry.

        Raises
        ------
        InputError
            No model chosen, or it is no longer registered (e.g. its card was deleted).
        """
        if self.model_name is None:
            raise InputError("choose a model (press Refresh if the list is empty)")
        return registry.get(self.model_name)

    def refresh(self) -> None:
        """List the registry's models again, keeping the choice when it still exists."""
        specs = registry.list_models()
        try:
            default = registry.default_model_name()
        except InputError:
            default = None
        previous = self.model_combo.value
        self._choices = [(_choice_label(spec, default), spec.name) for spec in specs]
        names = [name for _, name in self._choices]
        with self.model_combo.changed.blocked():
            self.model_combo.reset_choices()
            chosen = previous if previous in names else default if default in names else (
                names[0] if names else None)
            self.model_combo.value = chosen
        self._model_changed(chosen)

    def _model_changed(self, _value: Any = None) -> None:
        try:
            spec = self.spec()
        except InputError as err:
            spec, self.card.value = None, str(err)
        else:
            self.card.value = card_text(spec)
        self._update_device_note(spec)
        if self._on_model_changed is not None:
            self._on_model_changed(spec)

    def _update_device_note(self, spec: ModelSpec | None = None) -> None:
        if spec is None and self.model_name is not None:
            try:
                spec = self.spec()
            except InputError:
                spec = None
        if spec is not None and not spec.is_network:
            self.device_note.value = "classical models run on the CPU"
            return
        choice = self.device_combo.value
        try:
            device = pick_device(choice)
        except InputError:
            self.device_note.value = f"{choice} is not available here; use auto or cpu"
            return
        self.device_note.value = f"auto picks {device.type}" if choice == "auto" else ""
