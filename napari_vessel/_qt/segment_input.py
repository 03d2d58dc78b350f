"""The input of a segmentation: an image layer read as a checked :class:`~napari_vessel.io.volume.Volume`.

Shared by the Segment and Fine-tune docks (:func:`layer_volume`), with where the outputs go
(:class:`~napari_vessel._qt.segment_results.RunInput`).
"""

from __future__ import annotations

from typing import Any

from napari_vessel._qt.segment_results import RunInput
from napari_vessel.errors import InputError
from napari_vessel.inference.run import check_volume_array
from napari_vessel.io.volume import Volume, check_spacing

__all__ = ["layer_volume", "already_preprocessed"]


def layer_volume(layer: Any) -> tuple[Volume, RunInput]:
    """The volume of an image layer and where its outputs go, checked for segmentation.

    Parameters
    ----------
    layer : napari.layers.Image or None
        A single-channel 3D image layer; a singleton 4th axis is dropped. Its scale is the voxel
        size (z, y, x) in µm.

    Returns
    -------
    volume : Volume
    source : RunInput
        Name, scale and translation of the layer (for the output layers) and its file.

    Raises
    ------
    InputError
        No layer, an RGB layer, a 2D image, several channels, a bad voxel size.
    """
    if layer is None:
        raise InputError("no image layer: open a 3D stack (File > Open) or a sample (File > "
                         "Open Sample > napari-vessel) and choose it as the image")
    if getattr(layer, "rgb", False):
        raise InputError(f"'{layer.name}' is an RGB image; the models take one channel: "
                         "right-click the layer, Split RGB, and choose the vessel channel")
    data = layer.data[0] if getattr(layer, "multiscale", False) else layer.data
    scale, translate = list(layer.scale), list(layer.translate)
    shape = tuple(data.shape)
    if len(shape) == 4 and 1 in shape:  # check_volume_array drops this axis too
        del scale[shape.index(1)], translate[shape.index(1)]
    data = check_volume_array(data, f"image '{layer.name}'")
    spacing = check_spacing(scale, 3)
    path = getattr(getattr(layer, "source", None), "path", None)
    volume = Volume(data, spacing, source=str(path) if path else layer.name)
    return volume, RunInput(layer.name, spacing, tuple(float(t) for t in translate),
                            str(path) if path else None)


def already_preprocessed(layer: Any) -> bool:
    """Whether ``layer`` is the output of the Preprocess dock (its pipeline is in the metadata):
    segmenting it must not apply the model's preprocessing a second time."""
    return bool(getattr(layer, "metadata", {}).get("preprocess"))
