"""Screenshots for docs/finetuning.md: the Fine-tune dock while running, when done, corrections.

Run under a virtual display:  xvfb-run -a .venv/bin/python scripts/screenshot_finetune.py
Writes docs/images/finetune-running.png, finetune-result.png and finetune-corrections.png.
The fine-tuned model is saved in a temporary models folder, which is removed at the end.
"""

from __future__ import annotations

import os
import tempfile

import numpy as np
from _shots import OUT, wait


def main() -> None:
    import napari

    from napari_vessel._napari.sample_data import sample_2pm
    from napari_vessel._qt.finetune_widget import FinetuneWidget

    OUT.mkdir(parents=True, exist_ok=True)
    viewer = napari.Viewer(title="napari-vessel", show=True)
    viewer.window.resize(1600, 1000)
    data, kwargs, _ = sample_2pm()[0]  # the image only
    image = viewer.add_image(data, **kwargs)
    image.opacity = 0.6
    widget = FinetuneWidget(viewer)
    viewer.window.add_dock_widget(widget, name="Fine-tune", area="right")
    widget.model_combo.value = "tvnet"
    widget.method_combo.value = "synthetic"  # trains (adabn only re-estimates statistics)
    widget.minutes.value, widget.steps.value = 2.0, 24
    widget.settings = {"preview_every_s": 1.0, "preview_size": None}
    viewer.dims.set_current_step(0, 20)
    viewer.reset_view()
    wait(seconds=1)

    # while running: the loss curve and the preview of the current slice
    widget.start()
    wait(lambda: len(widget.plot.losses) >= 16 and widget.preview.updates >= 3, 300)
    wait(seconds=1)
    viewer.screenshot(OUT / "finetune-running.png", canvas_only=False)

    # done: the new model is saved and the volume segmented with it
    wait(lambda: widget.job is None, 600)
    labels = widget.results.current.labels_layer if widget.results.current else None
    image.opacity = 1.0
    if labels is not None:
        labels.opacity = 0.6
        widget.preview.layer.visible = False
    wait(seconds=1)
    viewer.screenshot(OUT / "finetune-result.png", canvas_only=False)

    # from corrections: paint a few vessel voxels, mark a slice as checked
    if labels is not None:
        widget.mode_combo.value = "from my corrections (labels)"
        widget.corrections.labels_combo.value = labels
        z = 20  # a vessel the model missed: a short bar painted by hand
        ys, xs = np.mgrid[110:150, 128:132]
        labels.data_setitem((np.full(ys.size, z), ys.ravel(), xs.ravel()), 1)
        widget.mark_checked()
        wait(seconds=1)
        viewer.screenshot(OUT / "finetune-corrections.png", canvas_only=False)
    viewer.close()


if __name__ == "__main__":
    with tempfile.TemporaryDirectory() as folder:
        os.environ["NAPARI_VESSEL_MODELS"] = folder
        main()
