"""Open napari with a stack, its segmentation and the plugin's widgets docked."""

from __future__ import annotations

from typing import Any

import napari

from napari_vessel._qt.finetune_widget import FinetuneWidget
from napari_vessel._qt.graph_widget import GraphWidget
from napari_vessel._qt.info_widget import InfoWidget
from napari_vessel._qt.preprocess_widget import PreprocessWidget
from napari_vessel._qt.review_widget import ReviewWidget
from napari_vessel._qt.segment_widget import SegmentWidget

__all__ = ["open_viewer", "dock_widgets"]


def dock_widgets(viewer: napari.Viewer, *, front: str = "Segment") -> dict[str, Any]:
    """Dock every napari-vessel widget in ``viewer`` as tabs; returns them by name.

    Parameters
    ----------
    viewer : napari.Viewer
        The viewer.
    front : str
        The tab shown first.
    """
    widgets = {
        "Stack info": InfoWidget(viewer),
        "Preprocess": PreprocessWidget(viewer),
        "Segment": SegmentWidget(viewer),
        "Review & refine": ReviewWidget(viewer),
        "Fine-tune": FinetuneWidget(viewer),
        "Vessel analysis": GraphWidget(viewer),
    }
    docks = {}
    for index, (name, widget) in enumerate(widgets.items()):
        docks[name] = viewer.window.add_dock_widget(widget, name=name, area="right",
                                                    tabify=index > 0)
    if front in docks:
        docks[front].raise_()
    return widgets


def open_viewer(image: Any, spacing_zyx: Any, *, labels: Any = None, prob: Any = None,
                reference: Any = None, model: str = "", block: bool = True) -> napari.Viewer:
    """Show ``image`` (and results) in a new viewer with the widgets docked."""
    viewer = napari.Viewer(title="napari-vessel")
    scale = tuple(spacing_zyx)
    viewer.add_image(image, name="sample", scale=scale, colormap="gray")
    if reference is not None:
        viewer.add_labels(reference, name="ground truth", scale=scale, opacity=0.3, visible=False)
    if prob is not None:
        viewer.add_image(prob, name=f"sample probability ({model})", scale=scale,
                         colormap="magma", blending="additive", visible=False)
    if labels is not None:
        viewer.add_labels(labels, name=f"sample vessels ({model})", scale=scale, opacity=0.5)
    dock_widgets(viewer)
    if block:
        napari.run()
    return viewer
