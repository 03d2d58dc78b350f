"""The base of every dock: its content scrolls, so each dock fits a 1080-pixel screen.

napari docks a magicgui widget's ``native`` QWidget. A plain magicgui ``Container(scrollable=True)``
returns the inner widget there, so the scroll area it made is dropped when docked and the dock's
minimum height is its whole content (Preprocess 683 px, Segment 625 px ...). :class:`ScrollDock`
hands napari the scroll area instead; the content keeps its layout (:attr:`ScrollDock.content`).
"""

from __future__ import annotations

from typing import Any

from magicgui.widgets import Container
from qtpy.QtCore import Qt, QTimer
from qtpy.QtWidgets import QFrame, QScrollArea, QWidget

__all__ = ["ScrollDock", "MIN_DOCK_HEIGHT"]

#: Minimum height of a docked plugin widget (pixels): six docks fit 1080 - 120 of napari's own.
MIN_DOCK_HEIGHT = 130


class ScrollDock(Container):
    """A vertical magicgui container whose content scrolls when the dock is short.

    Parameters
    ----------
    **kwargs
        As for :class:`magicgui.widgets.Container` (``scrollable`` is always True).
    """

    def __init__(self, **kwargs: Any) -> None:
        super().__init__(scrollable=True, **kwargs)
        scroll = self.root_native_widget
        if isinstance(scroll, QScrollArea):
            scroll.setFrameShape(QFrame.Shape.NoFrame)
            scroll.setMinimumHeight(MIN_DOCK_HEIGHT)
            # a narrow dock scrolls sideways rather than cutting off a row of buttons
            scroll.setHorizontalScrollBarPolicy(Qt.ScrollBarPolicy.ScrollBarAsNeeded)
            # once the subclass has built its rows: open wide enough that nothing scrolls sideways
            QTimer.singleShot(0, self.fit_width)

    def fit_width(self) -> None:
        """Make the dock at least as wide as its content (plus the vertical scroll bar), so it
        opens without a sideways scroll bar; call again after adding wide rows."""
        scroll = self.root_native_widget
        if not isinstance(scroll, QScrollArea):
            return
        try:
            wanted = self.content.minimumSizeHint().width()
        except RuntimeError:  # the widget was deleted before the timer fired
            return
        bar = scroll.verticalScrollBar().sizeHint().width()
        scroll.setMinimumWidth(wanted + bar + 2 * scroll.frameWidth())

    @property
    def native(self) -> QWidget:
        """The scroll area: what napari docks."""
        return self.root_native_widget

    @property
    def content(self) -> QWidget:
        """The widget inside the scroll area, holding the dock's layout."""
        return self._widget._mgui_get_native_widget()
