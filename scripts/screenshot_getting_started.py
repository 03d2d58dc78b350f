"""Screenshot for docs/getting-started.md: napari with the sample, a segmentation and the widgets.

Run under a virtual display:  xvfb-run -a .venv/bin/python scripts/screenshot_getting_started.py
"""

from __future__ import annotations

import sys
from pathlib import Path

import napari
from qtpy.QtWidgets import QApplication

from napari_vessel._napari.sample_data import sample_2pm
from napari_vessel._qt.launch import dock_widgets
from napari_vessel.inference.run import segment
from napari_vessel.io.volume import Volume

OUT = Path(__file__).resolve().parents[1] / "docs" / "images"


def main(model: str | None = None) -> None:
    viewer = napari.Viewer(title="napari-vessel", show=True)
    viewer.window.resize(1500, 900)
    for data, kwargs, kind in sample_2pm():
        getattr(viewer, f"add_{kind}")(data, **kwargs)
    image = viewer.layers[0]
    viewer.layers["ground truth"].visible = False
    prob, labels, manifest = segment(Volume(image.data, tuple(image.scale)), model)
    name = manifest.model.name
    viewer.add_labels(labels, name=f"vessels ({name})", scale=image.scale, opacity=0.5)
    dock_widgets(viewer)
    viewer.dims.ndisplay = 3
    viewer.camera.angles = (0, -30, 60)
    viewer.camera.zoom = 1.6
    for _ in range(10):
        QApplication.processEvents()
    OUT.mkdir(parents=True, exist_ok=True)
    viewer.screenshot(OUT / "getting-started.png", canvas_only=False)
    viewer.close()


if __name__ == "__main__":
    main(sys.argv[1] if len(sys.argv) > 1 else None)
