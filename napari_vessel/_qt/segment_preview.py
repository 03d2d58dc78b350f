"""The Segment dock's preview: the current slice, as far as the canvas shows it, in about a second.

*Preview* segments the slice the viewer shows (``viewer.dims``) with the slab of z-context the
model needs (:func:`napari_vessel.inference.preview.segment_slice`). With *visible area only* it segments just
the part of the slice on screen (the image layer's ``corner_pixels``, which napari updates on each
draw): zoom in on a region and Preview is quicker there; nothing to draw or to pick. Before the
canvas was drawn, in a 3D view or with the axes rolled, the whole slice is taken.

The result is one image layer (a two-colour overlay of the labels, not a Labels layer, so nobody
paints on it and other docks do not offer it as labels), replaced by the next preview and placed
on the image's grid at the previewed slice. Its slab probabilities are kept here, so the dock's
threshold and minimum size redraw it without running the model.
"""

from __future__ import annotations

from typing import Any

import numpy as np

from napari_vessel._qt._common import OUTPUT_KEY, name_metadata, output_name
from napari_vessel._qt.segment_results import RunInput
from napari_vessel.errors import InputError
from napari_vessel.inference.preview import SlicePreview

__all__ = ["PREVIEW_ROLE", "PreviewOverlay", "preview_target"]

#: ``metadata[OUTPUT_KEY]`` of the preview layer (a derived view: no input anywhere).
PREVIEW_ROLE = "segment-preview"
#: Colour of previewed vessel voxels (background is transparent).
PREVIEW_COLOUR = "yellow"


def _current_z(viewer: Any, layer: Any, n_z: int) -> int:
    point = np.asarray(layer.world_to_data(viewer.dims.point), dtype=float)
    shape = list((layer.data[0] if getattr(layer, "multiscale", False) else layer.data).shape)
    if point.size == 4 and 1 in shape:  # the singleton axis layer_volume drops
        point = np.delete(point, shape.index(1))
    z = int(round(float(point[-3])))
    if not 0 <= z < n_z:
        raise InputError(f"the viewer shows slice {z} of '{layer.name}', outside its {n_z} "
                         "slices: move the z slider onto the image")
    return z


def _visible_box(viewer: Any, layer: Any, shape: tuple) -> tuple | None:
    """The y/x part of the image on screen, ((y0, y1), (x0, x1)), or None for the whole slice."""
    if viewer.dims.ndisplay != 2 or layer.ndim != 3 or getattr(layer, "multiscale", False):
        return None
    if tuple(viewer.dims.displayed[-2:]) != (viewer.dims.ndim - 2, viewer.dims.ndim - 1):
        return None  # axes rolled or transposed: the screen is no z plane
    corners = np.asarray(layer.corner_pixels, dtype=int)[:, -2:]
    (y0, x0), (y1, x1) = corners[0], corners[1] + 1  # corner pixels are inclusive
    if y1 - y0 < 2 or x1 - x0 < 2:  # not drawn yet (zeros)
        return None
    if (y0, x0) == (0, 0) and (y1, x1) >= tuple(shape[-2:]):
        return None  # all of it on screen
    return (int(y0), int(y1)), (int(x0), int(x1))


def preview_target(viewer: Any, layer: Any, shape: tuple,
                   visible_only: bool = True) -> tuple[int, tuple | None]:
    """The slice the viewer shows in ``layer`` and the crop to preview (None: the whole slice).

    Parameters
    ----------
    viewer : napari.Viewer
    layer : napari.layers.Image
        The image being segmented.
    shape : (int, int, int)
        Its volume's shape (Z, Y, X).
    visible_only : bool
        Crop to the part of the slice on screen.

    Raises
    ------
    InputError
        The viewer's slice lies outside the image.
    """
    z = _current_z(viewer, layer, int(shape[0]))
    return z, (_visible_box(viewer, layer, shape) if visible_only else None)


def _colormap() -> Any:
    from napari.utils.colormaps import Colormap

    return Colormap([[0.0, 0.0, 0.0, 0.0], [1.0, 0.85, 0.0, 1.0]], name="vessel preview",
                    interpolation="zero", controls=[0.0, 0.5, 1.0])


class PreviewOverlay:
    """The one preview layer of a Segment dock and the probabilities behind it.

    Parameters
    ----------
    viewer : napari.Viewer

    Attributes
    ----------
    current : SlicePreview or None
        The latest preview (its slab probabilities redraw the layer).
    layer : napari.layers.Image or None
        The preview layer, once added.
    """

    def __init__(self, viewer: Any) -> None:
        self.viewer = viewer
        self.current: SlicePreview | None = None
        self.layer: Any = None
        self.source: RunInput | None = None

    def alive(self) -> bool:
        """Whether the preview layer is in the viewer."""
        return self.layer is not None and self.layer in self.viewer.layers

    def show(self, preview: SlicePreview, source: RunInput, threshold: float,
             min_size: int) -> Any:
        """Show a new preview in place of the old one; returns the layer."""
        scale = tuple(float(s) for s in source.scale)
        translate = tuple(float(t) + o * s for t, o, s in
                          zip(source.translate, preview.origin, scale, strict=True))
        model = preview.manifest.model.name
        metadata = {OUTPUT_KEY: PREVIEW_ROLE, "source_layer": source.name,
                    "model": model, "preview_z": preview.z, "threshold": float(threshold),
                    "min_size": int(min_size), "manifest": preview.manifest}
        if self.alive():
            self.layer.metadata.update(metadata)
            self.layer.scale = scale  # the grid first: new data never lands at the old place
            self.layer.translate = translate
            self.layer.data = preview.labels
        else:
            self.layer = self.viewer.add_image(
                preview.labels, name=output_name(source.name, "preview", self.viewer.layers),
                colormap=_colormap(), contrast_limits=(0.0, 1.0), opacity=0.7,
                blending="translucent", scale=scale, translate=translate,
                metadata={**metadata, **name_metadata(source.name, "preview")})
        self.current, self.source = preview, source
        return self.layer

    def relabel(self, threshold: float, min_size: int) -> Any:
        """Redraw the preview at this threshold and minimum size; the layer, or None if none."""
        if self.current is None or not self.alive():
            return None
        meta = self.layer.metadata
        if float(threshold) == meta.get("threshold") and int(min_size) == meta.get("min_size"):
            return None
        self.layer.data = self.current.relabel(float(threshold), int(min_size))
        meta.update(threshold=float(threshold), min_size=int(min_size))
        return self.layer

    def remove(self) -> None:
        """Remove the preview layer and forget the preview."""
        if self.alive():
            self.viewer.layers.remove(self.layer)
        self.layer, self.current, self.source = None, None, None
