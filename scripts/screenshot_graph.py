"""Screenshots for docs/graph.md: the Vessel analysis dock with the graph over the sample stack.

Run under a virtual display:
    xvfb-run -a -s "-screen 0 1920x1080x24" .venv/bin/python scripts/screenshot_graph.py
Writes docs/images/graph-dock.png (3D view) and docs/images/graph-dock-2d.png (one slice), and
prints how long the dock's analysis took (click to layers shown).
"""

from __future__ import annotations

import time

import napari
from _shots import OUT, wait
from qtpy.QtCore import Qt

from napari_vessel._napari.sample_data import sample_2pm
from napari_vessel._qt.graph_widget import GraphWidget


def main() -> None:
    OUT.mkdir(parents=True, exist_ok=True)
    viewer = napari.Viewer(title="napari-vessel", show=True)
    viewer.window._qt_window.setGeometry(0, 0, 1920, 1080)
    (image, image_kw, _), (labels, labels_kw, _) = sample_2pm()
    viewer.add_image(image, **image_kw)
    labels_kw = {**labels_kw, "name": "vessels", "opacity": 0.25}
    viewer.add_labels(labels, **labels_kw)
    widget = GraphWidget(viewer)
    dock = viewer.window.add_dock_widget(widget, name="Vessel analysis", area="right")
    dock.setMinimumWidth(520)
    viewer.reset_view()
    wait(seconds=1)

    for _ in range(2):  # the first run compiles skan's kernels; the second is a re-analysis
        start = time.perf_counter()
        widget.analyse()
        wait(lambda: widget.job is None, 120)
        print(f"analysis in the dock: {time.perf_counter() - start:.2f} s, "
              f"{len(widget.graph.segments)} segments")
    widget.table.sortItems(1, Qt.SortOrder.DescendingOrder)  # the longest segments first

    # 3D: the whole network over the image's maximum intensity projection
    image = viewer.layers[0]
    viewer.dims.ndisplay = 3
    image.rendering, image.opacity = "mip", 0.6
    viewer.layers["vessels"].visible = False
    viewer.scene.camera.angles = (0, 25, 80)
    viewer.scene.camera.zoom = 2.6
    wait(seconds=2)
    viewer.screenshot(OUT / "graph-dock.png", canvas_only=False)

    # 2D: one slice, centred on the thickest segment picked in the table
    viewer.dims.ndisplay = 2
    image.opacity = 1.0
    viewer.layers["vessels"].visible = True
    viewer.reset_view()
    viewer.scene.camera.zoom *= 2.5
    widget.table.sortItems(2, Qt.SortOrder.DescendingOrder)
    widget.table.pick_row(0)
    wait(seconds=2)
    viewer.screenshot(OUT / "graph-dock-2d.png", canvas_only=False)
    viewer.close()


if __name__ == "__main__":
    main()
