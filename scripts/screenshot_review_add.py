"""Make the prompt screenshot of docs/review.md: a click on a missed vessel adds it.

Run under a virtual display::

    xvfb-run -a .venv/bin/python scripts/screenshot_review_add.py

Writes ``docs/images/review-click-add.png``: a two-photon phantom whose labels miss a piece of a
vessel (the cut of :func:`screenshot_review.damaged_labels`), after one click in the gap with
"click a missed vessel to add it" ticked. The added voxels get label 2 so that they show in
another colour than the labels that were there.
"""

from __future__ import annotations

import os
import sys
import tempfile
import time

import numpy as np
from _shots import OUT, wait
from screenshot_review import damaged_labels


def main() -> int:
    os.environ.setdefault("NAPARI_VESSEL_RECOVERY", tempfile.mkdtemp(prefix="vessel-recovery-"))
    import napari

    from napari_vessel._qt.review_widget import ReviewWidget
    from napari_vessel.data.phantom import make_phantom

    OUT.mkdir(parents=True, exist_ok=True)
    phantom = make_phantom((48, 192, 192), kind="2pm", seed=4, radius_range=(1.0, 6.0))
    labels_data, p0, p1 = damaged_labels(phantom)
    # the click: the centreline voxel of the missed piece nearest to the middle of the gap
    missed = (phantom.centerlines > 0) & (labels_data == 0) & (phantom.labels > 0)
    candidates = np.argwhere(missed)
    middle = (p0 + p1) / 2
    click = candidates[np.argmin(np.linalg.norm((candidates - middle) * [2, 1, 1], axis=1))]
    scale = phantom.spacing_zyx

    viewer = napari.Viewer(title="napari-vessel: review & refine", show=True)
    viewer.window.resize(1500, 950)
    viewer.add_image(phantom.image, name="phantom", scale=scale, colormap="gray")
    labels = viewer.add_labels(labels_data, name="phantom vessels", scale=scale, opacity=0.6)
    widget = ReviewWidget(viewer)
    widget.autosave.ask_restore = lambda info: "keep"
    viewer.window.add_dock_widget(widget, name="Review & refine", area="right")
    widget.tabs.setCurrentIndex(1)
    viewer.dims.set_current_step(0, int(click[0]))
    # around the click, without showing the black beyond the stack's edge
    zoom = 6.0
    half = np.array([400.0, 400.0]) / zoom  # half the canvas (about 800 x 780 pixels) in µm
    extent = np.asarray(labels_data.shape[1:]) * np.asarray(scale[1:])
    centre = np.clip(click[1:] * np.asarray(scale[1:]), half, np.maximum(extent - half, half))
    viewer.scene.camera.center = tuple(centre)
    viewer.scene.camera.zoom = zoom
    wait(seconds=1)

    labels.selected_label = 2  # the added voxels in another colour
    widget.tools.click_add.value = True

    class Click:  # what napari hands the layer's mouse callback for a click on the voxel
        type = "mouse_press"
        position = tuple(labels.data_to_world(click))

    start = time.perf_counter()
    widget.tools._on_click(labels, Click())
    wait(lambda: not widget.tools.busy, 30)
    print(f"the click was applied after {time.perf_counter() - start:.2f} s")
    wait(seconds=1)
    added = int(np.count_nonzero(labels.data == 2))
    print(f"clicked {tuple(int(c) for c in click)}; {added} voxels added;", widget.tools.status.value)
    if not added:
        print("nothing was added: no screenshot", file=sys.stderr)
        return 1
    path = OUT / "review-click-add.png"
    viewer.screenshot(str(path), canvas_only=False)
    print("wrote", path)
    widget.autosave.stop_all(flush=False)
    viewer.close()
    return 0


if __name__ == "__main__":
    sys.exit(main())
