"""npe2 writers: save a Labels or Image layer to TIFF or Zarr with its voxel size.

napari's save dialog asks before it replaces a file, so these writers overwrite; the command line
never does without ``--overwrite``. The layer's ``scale`` is the voxel size (z, y, x) in µm.
"""

from __future__ import annotations

from typing import Any

from napari_vessel.errors import InputError
from napari_vessel.io.stacks import save_volume

__all__ = ["write_labels", "write_image"]


def _save(path: str, data: Any, meta: dict, kind: str) -> list[str]:
    if isinstance(data, (list, tuple)):  # a multiscale layer: save the full resolution
        data = data[0]
    ndim = len(getattr(data, "shape", ()))
    scale = tuple(meta.get("scale") or (1.0,) * ndim)
    if ndim != 3 or len(scale) != 3:
        raise InputError(
            f"the layer {meta.get('name', '')!r} has {ndim} axes; only 3D (z, y, x) layers can be "
            "saved with this writer (use napari's own writer for other layers)")
    layer_meta = meta.get("metadata") or {}
    stored = {"name": meta.get("name"), "source": layer_meta.get("source"),
              "spacing_known": layer_meta.get("spacing_known", True)}
    written = save_volume(path, data, scale, overwrite=True, kind=kind, metadata=stored)
    return [str(written)]


def write_labels(path: str, data: Any, meta: dict) -> list[str]:
    """Write a Labels layer; returns the list with the written path.

    Parameters
    ----------
    path : str
        Ends in ``.tif``, ``.tiff`` or ``.zarr``.
    data : array-like, shape (Z, Y, X)
        The labels.
    meta : dict
        Layer attributes from napari; ``meta["scale"]`` is the voxel size in µm.
    """
    return _save(path, data, meta, "labels")


def write_image(path: str, data: Any, meta: dict) -> list[str]:
    """Write an Image layer (e.g. a probability map); returns the list with the written path.

    Parameters
    ----------
    path : str
        Ends in ``.tif``, ``.tiff`` or ``.zarr``.
    data : array-like, shape (Z, Y, X)
        The image.
    meta : dict
        Layer attributes from napari; ``meta["scale"]`` is the voxel size in µm.
    """
    return _save(path, data, meta, "image")
