"""Screenshots for docs/preprocessing.md: the Preprocess dock with its live preview and a result.

Run under a virtual display:  xvfb-run -a .venv/bin/python scripts/screenshot_preprocess.py
Writes docs/images/preprocess-preview.png, preprocess-result.png and preprocess-confocal.png.
"""

from __future__ import annotations

from collections.abc import Callable

import napari
from _shots import OUT, wait

from napari_vessel._napari.sample_data import sample_2pm, sample_confocal
from napari_vessel._qt.preprocess_widget import PreprocessWidget


def _viewer(sample: Callable[[], list]) -> tuple[napari.Viewer, PreprocessWidget, object]:
    viewer = napari.Viewer(title="napari-vessel", show=True)
    viewer.window.resize(1600, 1000)
    data, kwargs, _ = sample()[0]  # the image only
    image = viewer.add_image(data, **kwargs)
    widget = PreprocessWidget(viewer)
    viewer.window.add_dock_widget(widget, name="Preprocess", area="right")
    return viewer, widget, image


def _preview_ready(widget: PreprocessWidget) -> Callable[[], bool]:
    return lambda: widget.preview.layer is not None and not widget.preview._busy


def two_photon() -> None:
    """Preview of the 2PM preset on a deep slice, then the result of Apply (3D MIPs)."""
    viewer, widget, image = _viewer(sample_2pm)
    viewer.dims.set_current_step(0, 40)  # deep: dim and hazy before preprocessing
    widget.editor.list.setCurrentRow(1)  # show the 3D median's form
    widget.preview.toggle.value = True
    wait(_preview_ready(widget), 10)
    viewer.grid.enabled = True  # the slice and its preview side by side
    viewer.reset_view()
    wait(seconds=1)
    viewer.screenshot(OUT / "preprocess-preview.png", canvas_only=False)

    widget.preview.toggle.value = False
    widget.apply()
    wait(lambda: widget.job is None, 60)
    viewer.dims.ndisplay = 3
    for layer in viewer.layers:
        layer.rendering = "mip"
    viewer.layers[-1].contrast_limits = (0, 1)
    viewer.reset_view()
    wait(seconds=1)
    viewer.screenshot(OUT / "preprocess-result.png", canvas_only=False)
    viewer.close()


def confocal() -> None:
    """The confocal preset previewed on the MIP of the confocal phantom."""
    viewer, widget, image = _viewer(sample_confocal)
    widget.editor.load_preset("confocal")
    widget.preview.mode.value = "MIP"
    widget.preview.toggle.value = True
    wait(_preview_ready(widget), 10)
    image.visible = False
    viewer.reset_view()
    wait(seconds=1)
    viewer.screenshot(OUT / "preprocess-confocal.png", canvas_only=False)
    viewer.close()


def main() -> None:
    OUT.mkdir(parents=True, exist_ok=True)
    two_photon()
    confocal()


if __name__ == "__main__":
    main()
