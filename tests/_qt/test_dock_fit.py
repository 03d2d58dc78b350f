"""Every dock fits a 1920 x 1080 screen with the others open: its content scrolls."""

from __future__ import annotations

import pytest
from qtpy.QtWidgets import QScrollArea

from napari_vessel._qt.dock import MIN_DOCK_HEIGHT
from napari_vessel._qt.finetune_widget import FinetuneWidget
from napari_vessel._qt.graph_widget import GraphWidget
from napari_vessel._qt.info_widget import InfoWidget
from napari_vessel._qt.preprocess_widget import PreprocessWidget
from napari_vessel._qt.review_widget import ReviewWidget
from napari_vessel._qt.segment_widget import SegmentWidget

DOCKS = (InfoWidget, PreprocessWidget, SegmentWidget, FinetuneWidget, ReviewWidget, GraphWidget)


@pytest.mark.parametrize("cls", DOCKS, ids=lambda c: c.__name__)
def test_docked_widget_scrolls_and_needs_little_height(make_napari_viewer, cls):
    viewer = make_napari_viewer()
    widget = cls(viewer)
    content_height = widget.content.minimumSizeHint().height()
    dock = viewer.window.add_dock_widget(widget, area="right", name=cls.__name__)
    assert isinstance(dock.widget(), QScrollArea) and dock.widget().widget() is widget.content
    needed = dock.minimumSizeHint().height()
    assert needed <= MIN_DOCK_HEIGHT + 60  # the title bar and margins add the rest
    assert needed < content_height or content_height <= MIN_DOCK_HEIGHT + 60


def test_all_six_docks_fit_1080_pixels(make_napari_viewer):
    viewer = make_napari_viewer()
    docks = [viewer.window.add_dock_widget(cls(viewer), area="right", name=cls.__name__)
             for cls in DOCKS]
    needed = sum(d.minimumSizeHint().height() for d in docks)
    assert needed <= 1080 - 120, needed  # title bar, menus and status bar keep 120 px (six docks: 900)


@pytest.mark.parametrize("cls", DOCKS, ids=lambda c: c.__name__)
def test_docked_widget_opens_without_a_sideways_scroll_bar(make_napari_viewer, qtbot, cls):
    viewer = make_napari_viewer(show=True)
    widget = cls(viewer)
    viewer.window.add_dock_widget(widget, area="right", name=cls.__name__)
    scroll = widget.native
    qtbot.waitUntil(lambda: scroll.minimumWidth() > 0, timeout=5000)  # fitted after building
    qtbot.wait(50)
    assert scroll.viewport().width() >= widget.content.minimumSizeHint().width()
    assert not scroll.horizontalScrollBar().isVisible()

