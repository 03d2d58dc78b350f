"""Screenshots for docs/segmentation.md: the Segment dock while running, its result, a 3D view.

Run under a virtual display:  xvfb-run -a .venv/bin/python scripts/screenshot_segment.py
Writes docs/images/segment-running.png, segment-result.png and segment-3d.png.
"""

from __future__ import annotations

from _shots import OUT, segment_viewer, wait


def main() -> None:
    viewer, widget = segment_viewer(20)
    wait(seconds=1)

    # while running: TTA makes the run long enough to catch the progress bar half-way
    widget.tta.value = True
    widget.segment()
    wait(lambda: widget.progress.value > 50, 120)
    wait(seconds=2)
    viewer.screenshot(OUT / "segment-running.png", canvas_only=False)
    wait(lambda: widget.job is None, 300)

    # the result on a slice, at the level the card's rule chose for this stack
    labels = widget.results.current.labels_layer
    labels.opacity = 0.5
    viewer.dims.set_current_step(0, int(labels.data.sum(axis=(1, 2)).argmax()))
    wait(seconds=1)
    viewer.screenshot(OUT / "segment-result.png", canvas_only=False)

    # a lower threshold, redrawn live; the 3D view of the labels over the MIP of the image
    widget.threshold.value = 0.45
    widget.apply_threshold()
    viewer.dims.ndisplay = 3
    viewer.layers[0].rendering = "mip"
    viewer.scene.camera.angles = (0, 30, 60)
    viewer.scene.camera.zoom = 2.2
    labels.opacity = 0.8
    wait(seconds=2)
    viewer.screenshot(OUT / "segment-3d.png", canvas_only=False)
    viewer.close()


if __name__ == "__main__":
    main()
