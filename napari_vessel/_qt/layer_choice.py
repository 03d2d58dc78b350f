"""The one combo box of layers used by every dock: its choice is a layer object, not a name.

magicgui's :class:`~magicgui.widgets.ComboBox` refills its items by name, so after the user
renames the chosen layer (napari's layer list), the next refill (a layer added: a result) lost the
choice and the dock silently took the newest layer as its input. :class:`LayerCombo` keeps the
chosen layer *object* across renames, insertions, removals and reordering, shows the new names, and
only changes the choice on its own in two documented cases:

* **nothing chosen yet** (the dock opened, or layers arrive): ``initial`` picks one (by default the
  newest candidate, :func:`newest`);
* **the chosen layer was removed** (or no longer qualifies): ``fallback`` picks one (by default the
  bottom-most candidate that is not an output of napari-vessel, :func:`first_source`; a result
  layer is never picked), and the status says so. If it picks nothing, the combo stays empty and
  ``fallback`` (not ``initial``) decides about the layers that arrive later, until the user
  chooses: a result added next is not taken, a newly opened stack is (and the status says so).

Every dock's ``reset_choices`` (napari calls it on every layer-list change of a docked magicgui
widget) goes through :meth:`LayerCombo.reset_choices`, so both paths keep the choice.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import Any

from magicgui.widgets import ComboBox

from napari_vessel._qt._common import FULL_NAME_KEY, OUTPUT_KEY, show_info
from napari_vessel._qt.segment_results import ROLE_KEY

__all__ = ["LayerCombo", "newest", "first_source", "is_output", "OUTPUT_KEYS"]

#: Metadata keys that mark a layer made by napari-vessel (a result, a preview, a projection).
OUTPUT_KEYS = (FULL_NAME_KEY, OUTPUT_KEY, ROLE_KEY)

Pick = Callable[[Sequence[Any]], Any]


def is_output(layer: Any) -> bool:
    """Whether ``layer`` was made by napari-vessel (its metadata has one of :data:`OUTPUT_KEYS`)."""
    metadata = getattr(layer, "metadata", None) or {}
    return any(key in metadata for key in OUTPUT_KEYS)


def newest(layers: Sequence[Any]) -> Any:
    """The top-most (most recently added) of ``layers``, or None if there is none."""
    return layers[-1] if layers else None


def first_source(layers: Sequence[Any]) -> Any:
    """The bottom-most of ``layers`` that is not an output of napari-vessel (see
    :func:`is_output`), or None: the fallback after the chosen layer is removed."""
    return next((layer for layer in layers if not is_output(layer)), None)


class LayerCombo(ComboBox):
    """A nullable combo box of a viewer's layers whose choice stays bound to the layer object.

    Parameters
    ----------
    viewer : napari.Viewer
        The viewer whose layer list is followed (insertions, removals, moves, renames).
    layers : callable
        ``layers()`` returns the candidate layers, bottom to top (the dock's filter).
    label : str
        The combo's label, also used in the status message (``"image"``, ``"labels"``).
    initial : callable or None, optional
        ``initial(candidates)`` gives the layer to choose while nothing is chosen (when the dock
        opens, or a layer arrives into an empty combo); None chooses nothing. Default
        :func:`newest`.
    fallback : callable or None, optional
        ``fallback(candidates)`` gives the layer to choose when the chosen one is removed (and,
        while that left nothing chosen, when layers arrive); None chooses nothing. Default
        :func:`first_source` (never a result layer).
    status : callable, optional
        Receives the message said when the chosen layer is removed, and when ``fallback`` later
        chooses an arriving layer (e.g. a dock's status label's setter); default a napari info
        notification.
    **kwargs
        Passed to :class:`magicgui.widgets.ComboBox` (``tooltip``, …).

    Attributes
    ----------
    value : napari.layers.Layer or None
        The chosen layer (the object, whatever its name is now).

    Notes
    -----
    The list is filled, and ``initial`` applied, by the first :meth:`reset_choices`: call it once
    the dock's handlers are connected to ``changed``, so that they see the first choice.
    ``changed`` is emitted once per real change of the chosen layer object: not for a rename or a
    refill that keeps it.
    """

    def __init__(self, viewer: Any, layers: Callable[[], list], *, label: str,
                 initial: Pick | None = newest, fallback: Pick | None = first_source,
                 status: Callable[[str], None] | None = None, **kwargs: Any) -> None:
        self._initial, self._fallback = initial, fallback
        self._status = status
        self._viewer_layers = viewer.layers
        self._chosen: Any = None
        self._lost = False  # a removal left nothing chosen: fallback decides until the user does
        self._ready = False  # magicgui fills the list while constructing: choose nothing then
        self._refilling = False
        super().__init__(label=label, choices=lambda _widget=None: layers(), nullable=True,
                         value=None, **kwargs)
        self._ready = True
        self.changed.connect(self._user_chose)  # first, so docks see the new choice
        events = viewer.layers.events
        for event in (events.inserted, events.removed, events.moved, events.renamed):
            event.connect(self.reset_choices)

    def _user_chose(self, value: Any) -> None:
        if self._refilling:  # our own announcement of a fallback is no choice of the user's
            return
        self._chosen = value
        self._lost = False

    def _say(self, text: str) -> None:
        (self._status or show_info)(text)

    def candidates(self) -> list:
        """The layers listed now (bottom to top), without the empty choice."""
        return [layer for layer in self.choices if layer is not None]

    def reset_choices(self, *_args: Any) -> None:
        """Refill the list from the viewer's layers (new names and order), keeping the chosen
        layer object; after its removal choose ``fallback`` and say so (see the class notes)."""
        if not self._ready:
            super().reset_choices()
            return
        chosen, message = self._chosen, ""
        with self.changed.blocked():
            self.native.clear()  # refilled in the viewer's order, under the current names
            super().reset_choices()
            listed = self.candidates()
            if chosen is not None and any(layer is chosen for layer in listed):
                new = chosen
            elif chosen is not None:
                new = self._fallback(listed) if self._fallback else None
                self._lost = new is None
                message = self._lost_message(chosen, new)
            else:
                pick = self._fallback if self._lost else self._initial
                new = pick(listed) if pick else None
                if self._lost and new is not None:
                    self._lost = False
                    message = f"{self.label} is now '{new.name}'"
            self.value = new
        self._chosen = new
        if new is not chosen:
            self._refilling = True
            try:
                self.changed.emit(new)
            finally:
                self._refilling = False
        if message:
            self._say(message)

    def _lost_message(self, chosen: Any, new: Any) -> str:
        """What the status says when ``chosen`` left the list and ``new`` replaced it."""
        removed = not any(other is chosen for other in self._viewer_layers)
        gone = f"'{chosen.name}' {'was removed' if removed else 'can no longer be used'}"
        if new is None:
            return f"{gone}; choose the {self.label}"
        return f"{gone}; {self.label} is now '{new.name}'"
