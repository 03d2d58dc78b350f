"""Screenshot for docs/segmentation.md: the Segment dock after an out-of-core run.

The 2PM sample is saved as an OME-Zarr pyramid and opened lazily; with the memory budget set
below what segmenting it in memory needs, the dock writes the result block by block to OME-Zarr
next to the file and adds it as lazy multiscale layers.

Run under a virtual display:  xvfb-run -a .venv/bin/python scripts/screenshot_segment_out_of_core.py
Writes docs/images/segment-out-of-core.png.
"""

from __future__ import annotations

import shutil
import tempfile
from pathlib import Path

from _shots import OUT, wait


def main() -> None:
    import napari

    from napari_vessel._napari.sample_data import sample_2pm
    from napari_vessel._qt.segment_widget import SegmentWidget
    from napari_vessel.io.stacks import save_volume

    folder = Path(tempfile.gettempdir()) / "napari-vessel-demo"
    shutil.rmtree(folder, ignore_errors=True)
    folder.mkdir()
    data, kwargs, _ = sample_2pm()[0]  # the image only
    path = save_volume(folder / "sample_2pm.ome.zarr", data, kwargs["scale"], pyramid=True)

    viewer = napari.Viewer(title="napari-vessel", show=True)
    viewer.window.resize(1600, 1000)
    viewer.open(str(path), plugin="napari-vessel")
    widget = SegmentWidget(viewer)
    widget.pyramid_smallest = 64  # a three-level pyramid on this small sample
    widget.output.budget.value = 0.02  # below the ~0.05 GB the in-memory run needs
    viewer.window.add_dock_widget(widget, name="Segment", area="right")
    wait(seconds=1)
    widget.segment()
    wait(lambda: widget.job is None, 600)
    print(widget.progress_text.value)
    labels = widget.lazy.labels_layer
    labels.opacity = 0.5
    viewer.dims.set_current_step(0, 20)
    viewer.reset_view()
    viewer.layers.selection.active = labels
    widget.native.verticalScrollBar().setValue(10**6)  # the Output group and the status
    wait(seconds=2)
    viewer.screenshot(OUT / "segment-out-of-core.png", canvas_only=False)
    viewer.close()


if __name__ == "__main__":
    main()
