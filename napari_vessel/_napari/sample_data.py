"""Sample data for napari: small synthetic vessel stacks with their exact ground truth.

napari calls these functions from File > Open Sample > napari-vessel. They return layer data
tuples, so this module needs nothing from napari itself.
"""

from __future__ import annotations

from typing import Any

from napari_vessel.data.phantom import Phantom, make_phantom

__all__ = ["sample_2pm", "sample_confocal", "SAMPLE_SHAPE"]

#: Shape (Z, Y, X) of the samples: small enough to open at once.
SAMPLE_SHAPE = (48, 256, 256)

LayerData = tuple[Any, dict, str]


def _layers(phantom: Phantom, title: str) -> list[LayerData]:
    scale = tuple(phantom.spacing_zyx)
    metadata = {"phantom_params": phantom.params, "spacing_zyx": list(scale),
                "source": f"napari-vessel synthetic phantom ({title})"}
    image = (phantom.image, {"name": f"vessel phantom ({title})", "scale": scale,
                             "colormap": "gray", "metadata": metadata,
                             "contrast_limits": (0, 255)}, "image")
    labels = (phantom.labels, {"name": "ground truth", "scale": scale, "opacity": 0.4,
                               "metadata": metadata}, "labels")
    return [image, labels]


def sample_2pm() -> list[LayerData]:
    """A two-photon-like phantom: depth attenuation, haze, pial shadows, Poisson-Gaussian noise.

    Returns
    -------
    list of (data, kwargs, layer_type)
        The image (uint8, voxel size 2 x 1 x 1 µm) and its ground-truth labels.
    """
    return _layers(make_phantom(SAMPLE_SHAPE, kind="2pm", seed=0), "2PM")


def sample_confocal() -> list[LayerData]:
    """A confocal-like phantom whose slices are sharp only near their own plane.

    Returns
    -------
    list of (data, kwargs, layer_type)
        The image, its ground-truth labels, and the all-in-focus reference (a 2D image, hidden)
        that multi-focus fusion should approach.
    """
    phantom = make_phantom(SAMPLE_SHAPE, kind="confocal", seed=0)
    layers = _layers(phantom, "confocal")
    reference = (phantom.in_focus, {"name": "all-in-focus reference",
                                    "scale": tuple(phantom.spacing_zyx[1:]), "colormap": "gray",
                                    "contrast_limits": (0, 255), "visible": False}, "image")
    return [*layers, reference]
