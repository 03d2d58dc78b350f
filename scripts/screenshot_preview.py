"""Screenshot for docs/segmentation.md: the Segment dock's Preview of one slice of the 2PM phantom.

Run under a virtual display:  xvfb-run -a .venv/bin/python scripts/screenshot_preview.py
Writes docs/images/segment-preview.png.
"""

from __future__ import annotations

from _shots import OUT, segment_viewer, wait


def main() -> None:
    viewer, widget = segment_viewer(10)
    viewer.camera.zoom *= 2.0  # zoomed in: Preview segments only the part on screen
    viewer.camera.center = (0, 90, 150)
    wait(seconds=1)

    widget.preview_button.clicked.emit()
    wait(lambda: widget.job is None, 300)
    widget.threshold.value = 0.4  # redrawn from the stored probabilities, no model run
    widget.apply_threshold()
    viewer.reset_view()  # zoomed out again: the preview covers the crop that was on screen
    wait(seconds=1)
    viewer.screenshot(OUT / "segment-preview.png", canvas_only=False)
    print(widget.progress_text.value)
    viewer.close()


if __name__ == "__main__":
    main()
