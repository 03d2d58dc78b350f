"""Screenshot for docs/getting-started.md: all six docks open in a 1920 x 1080 window.

Run under a virtual display::

    xvfb-run -a -s "-screen 0 1920x1080x24" .venv/bin/python scripts/screenshot_docks.py

Writes docs/images/docks-1080p.png.
"""

from __future__ import annotations

import time
from pathlib import Path

from qtpy.QtWidgets import QApplication

OUT = Path(__file__).resolve().parents[1] / "docs" / "images"


def main() -> None:
    import napari

    from napari_vessel._napari.sample_data import sample_2pm
    from napari_vessel._qt.finetune_widget import FinetuneWidget
    from napari_vessel._qt.graph_widget import GraphWidget
    from napari_vessel._qt.info_widget import InfoWidget
    from napari_vessel._qt.preprocess_widget import PreprocessWidget
    from napari_vessel._qt.review_widget import ReviewWidget
    from napari_vessel._qt.segment_widget import SegmentWidget

    viewer = napari.Viewer(title="napari-vessel", show=True)
    viewer.window._qt_window.setGeometry(0, 0, 1920, 1080)
    data, kwargs, _ = sample_2pm()[0]
    viewer.add_image(data, **kwargs)
    for cls, name in ((InfoWidget, "Stack info"), (PreprocessWidget, "Preprocess"),
                      (SegmentWidget, "Segment"), (ReviewWidget, "Review & refine"),
                      (FinetuneWidget, "Fine-tune"), (GraphWidget, "Vessel analysis")):
        viewer.window.add_dock_widget(cls(viewer), name=name, area="right")
    viewer.reset_view()
    end = time.monotonic() + 2
    while time.monotonic() < end:
        QApplication.processEvents()
        time.sleep(0.02)
    OUT.mkdir(parents=True, exist_ok=True)
    viewer.screenshot(OUT / "docks-1080p.png", canvas_only=False)
    print(viewer.window._qt_window.size())
    viewer.close()


if __name__ == "__main__":
    main()
