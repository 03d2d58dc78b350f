"""Make the screenshots of docs/review.md: MIP overlays, refinement and recovery.

Run under a virtual display::

    xvfb-run -a .venv/bin/python scripts/screenshot_review.py

The pictures go to ``docs/images/review-*.png`` (``review-overlays.png``: the depth-coded MIP
with the label outlines and the depth legend). They show a two-photon phantom whose ground-truth
labels were damaged (a cut vessel, specks) so that there is something to review and fix.
"""

from __future__ import annotations

import os
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

OUT = Path(__file__).resolve().parents[1] / "docs" / "images"


def damaged_labels(phantom, cut: int = 5) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """The phantom's labels with one vessel cut and a few specks; returns labels and the ends.

    The cut removes every slice of a small square around a thin vessel in a quiet part of the
    stack, so the gap shows on the z-MIP; the ends are centreline voxels on either side.
    """
    labels = phantom.labels.astype(np.uint8).copy()
    top = labels.any(axis=0)
    z, y, x = np.nonzero(phantom.centerlines)
    radius = phantom.radius[z, y, x]
    points = np.stack([z, y, x], 1)
    size = np.array(labels.shape)
    inner = (y > size[1] // 4) & (y < 3 * size[1] // 4) & (x > size[2] // 4) & (x < 3 * size[2] // 4)
    best, choice = np.inf, None
    for i in np.nonzero(inner & (radius >= 2.0) & (radius <= 4.0))[0][::5]:
        center = points[i]
        reach = np.abs(points[:, 1:] - center[1:]).max(axis=1)
        ring = points[(reach >= cut + 2) & (reach <= cut + 3) & (np.abs(points[:, 0] - center[0]) <= 3)]
        if len(ring) < 2:
            continue
        far = np.linalg.norm(ring[:, None, 1:] - ring[None, :, 1:], axis=2)
        if far.max() < 2 * cut + 4:  # the vessel must go through the cut
            continue
        crowd = top[center[1] - 3 * cut : center[1] + 3 * cut + 1,
                    center[2] - 3 * cut : center[2] + 3 * cut + 1].mean()
        if crowd < best:
            a, b = np.unravel_index(int(np.argmax(far)), far.shape)
            best, choice = crowd, (center, ring[a], ring[b])
    center, p0, p1 = choice
    labels[:, center[1] - cut : center[1] + cut + 1, center[2] - cut : center[2] + cut + 1] = 0
    rng = np.random.default_rng(3)
    for _ in range(12):  # specks a model might leave
        s = rng.integers([0, 0, 0], size - 3)
        labels[s[0] : s[0] + 2, s[1] : s[1] + 2, s[2] : s[2] + 2] = 1
    return labels, p0.astype(float), p1.astype(float)


def settle(app, seconds: float = 0.3) -> None:
    """Let Qt draw (and background work finish)."""
    end = time.time() + seconds
    while time.time() < end:
        app.processEvents()
        time.sleep(0.02)


def main() -> int:
    os.environ.setdefault("NAPARI_VESSEL_RECOVERY", tempfile.mkdtemp(prefix="vessel-recovery-"))
    import napari
    from qtpy.QtWidgets import QApplication

    from napari_vessel._qt.review_autosave import restore_dialog
    from napari_vessel._qt.review_widget import ReviewWidget
    from napari_vessel.data.phantom import make_phantom
    from napari_vessel.refine.autosave import find_recovery

    OUT.mkdir(parents=True, exist_ok=True)
    phantom = make_phantom((48, 192, 192), kind="2pm", seed=4, radius_range=(1.0, 6.0))
    labels_data, p0, p1 = damaged_labels(phantom)
    image_path = str(Path(os.environ["NAPARI_VESSEL_RECOVERY"]) / "phantom.tif")
    scale = phantom.spacing_zyx

    viewer = napari.Viewer(title="napari-vessel: review & refine")
    viewer.window.resize(1500, 950)
    app = QApplication.instance()
    image = viewer.add_image(phantom.image, name="phantom", scale=scale, colormap="gray",
                             metadata={"source": image_path})
    from scipy.ndimage import gaussian_filter

    probability = gaussian_filter(phantom.labels.astype(np.float32), 1.5)  # like a model's output
    viewer.add_image(probability, name="phantom probability", scale=scale, colormap="magma",
                     visible=False)
    labels = viewer.add_labels(labels_data, name="phantom vessels", scale=scale, opacity=0.5)
    widget = ReviewWidget(viewer)
    widget.autosave.ask_restore = lambda info: "keep"
    viewer.window.add_dock_widget(widget, name="Review & refine", area="right")
    viewer.dims.set_current_step(0, 24)
    settle(app)

    def shot(name: str) -> None:
        settle(app)
        path = OUT / f"review-{name}.png"
        viewer.screenshot(str(path), canvas_only=False)
        print("wrote", path)

    # 1. the full MIP with the probability and label MIPs drawn over it
    widget.prob_combo.value = viewer.layers["phantom probability"]
    widget.mip.show_mips()
    for layer in (image, labels):
        layer.visible = False
    shot("mip-overlay")

    # 1b. the depth-coded MIP, projected in the background: the probability MIP is hidden, the
    # label MIP becomes outlines, and the dock shows the depth legend and a status line
    widget.mip.sync_voxels = 0
    widget.mip.mode.value = "depth-coded"
    deadline = time.time() + 30
    while widget.mip._job is not None and time.time() < deadline:
        settle(app, 0.1)
    shot("overlays")
    widget.mip.sync_voxels = 8_000_000
    widget.mip.mode.value = "full"

    # 2. a slab MIP that follows the slider, and the depth-coded MIP
    widget.prob_combo.value = None
    widget.mip.thickness.value = 9
    widget.mip.mode.value = "slab"
    viewer.dims.set_current_step(0, 12)
    shot("slab")
    widget.mip.show_labels.value = False
    widget.mip.mode.value = "depth-coded"
    shot("depth")

    # 3. refining: the cut vessel, two picked points, then the bridge
    widget.mip.show_labels.value = True
    widget.mip.mode.value = "full"
    widget.tabs.setCurrentIndex(1)
    points = widget.tools.pick_points()
    points.add([p0, p1])
    points.size = 4
    viewer.dims.set_current_step(0, int(round((p0[0] + p1[0]) / 2)))
    viewer.dims.thickness = (8 * scale[0], 0, 0)  # a thick slice shows both points
    viewer.scene.camera.center = tuple(((p0 + p1) / 2)[1:] * scale[1:])
    viewer.scene.camera.zoom = 4.0
    shot("refine-before")
    widget.tools.bridge()
    while widget.tools.busy:
        settle(app, 0.1)
    shot("refine-after")

    # 4. autosave and the question asked when the image is opened again
    viewer.dims.thickness = (0, 0, 0)
    widget.tabs.setCurrentIndex(2)
    widget.autosave.interval.value = 1
    labels.paint((24, 96, 96), 1)
    saver = widget.autosave.saver_for(labels)
    deadline = time.time() + 10
    while (saver.dirty or not find_recovery(image_path)) and time.time() < deadline:
        settle(app, 0.1)
    viewer.reset_view()
    shot("autosave")
    info = find_recovery(image_path)[0]
    box = restore_dialog(info)
    box.show()
    settle(app)
    box.grab().save(str(OUT / "review-restore.png"))
    print("wrote", OUT / "review-restore.png")
    box.close()
    widget.autosave.stop_all(flush=False)
    viewer.close()
    return 0


if __name__ == "__main__":
    sys.exit(main())
