"""Shared by the screenshot scripts: where the images go, and waiting for Qt to settle."""

from __future__ import annotations

import time
from collections.abc import Callable
from pathlib import Path

from qtpy.QtWidgets import QApplication

#: docs/images of the repository.
OUT = Path(__file__).resolve().parents[1] / "docs" / "images"


def wait(condition: Callable[[], bool] = lambda: False, seconds: float = 1.0) -> None:
    """Process Qt events until ``condition()`` holds or ``seconds`` pass."""
    end = time.monotonic() + seconds
    while time.monotonic() < end and not condition():
        QApplication.processEvents()
        time.sleep(0.02)
    for _ in range(10):
        QApplication.processEvents()


def segment_viewer(z: int):
    """A napari window (1600 x 1000) with the 2PM sample and the Segment dock, at slice ``z``;
    returns (viewer, widget)."""
    import napari

    from napari_vessel._napari.sample_data import sample_2pm
    from napari_vessel._qt.segment_widget import SegmentWidget

    OUT.mkdir(parents=True, exist_ok=True)
    viewer = napari.Viewer(title="napari-vessel", show=True)
    viewer.window.resize(1600, 1000)
    data, kwargs, _ = sample_2pm()[0]  # the image only
    viewer.add_image(data, **kwargs)
    widget = SegmentWidget(viewer)
    viewer.window.add_dock_widget(widget, name="Segment", area="right")
    viewer.dims.set_current_step(0, z)
    viewer.reset_view()
    return viewer, widget
