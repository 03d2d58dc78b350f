"""All docks open together in one viewer (what the demo shows)."""

from __future__ import annotations

from napari_vessel._qt.launch import dock_widgets


def test_every_dock_opens_as_a_tab(make_napari_viewer):
    viewer = make_napari_viewer()
    widgets = dock_widgets(viewer)
    assert list(widgets) == ["Stack info", "Preprocess", "Segment", "Review & refine", "Fine-tune",
                            "Vessel analysis"]
    docked = set(viewer.window.dock_widgets)
    assert set(widgets) <= docked
