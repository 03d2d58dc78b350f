"""npe2 reader: open TIFF, OME-TIFF, ImageJ hyperstacks, Zarr and OME-Zarr with their voxel size.

Each 3D stack becomes a layer whose ``scale`` is the voxel size in µm. A file with several channels
opens as one layer per channel (the user keeps the vessel channel); a time series keeps its time
axis first (scale 1). Stacks this package saved as labels, files with "label" in their name and
integer stacks with only a few distinct values open as Labels layers. An OME-Zarr pyramid opens as
one multiscale layer: a list of lazy dask arrays, level 0 (full resolution) first; its ``scale``
is level 0's voxel size (napari derives the other levels' from their shapes; the file's scale of
every level is kept in ``metadata["level_scales_zyx"]``), so a huge stack opens and browses fast.

Errors: a broken file raises :class:`~napari_vessel.errors.InputError` from the reader function,
as npe2 expects. napari 0.9 wraps it in a ``ReaderPluginError`` that carries the message; from the
GUI, napari then shows it either in its reader-choice dialog (when another plugin can read the
extension) or as an error notification, and no layer is added, so existing layers stay as they
were. 2D images are left to other readers (``get_reader`` returns None), so installing this plugin
never stops napari from opening ordinary 2D TIFFs.
"""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np

from napari_vessel.errors import InputError
from napari_vessel.io.common import file_stem
from napari_vessel.io.stacks import describe_file, load_volume
from napari_vessel.io.volume import Volume, is_lazy
from napari_vessel.io.zarr import is_zarr

__all__ = ["get_reader", "read_stack"]

LayerData = tuple[Any, dict, str]

_TIFF = (".tif", ".tiff", ".btf", ".tf8")

#: An integer stack with at most this many distinct values (in a sample) opens as labels.
FEW_VALUES = 16


def get_reader(path: str | list[str]) -> Callable[[str | list[str]], list[LayerData]] | None:
    """Return :func:`read_stack` when ``path`` is a stack this plugin reads, else None.

    Parameters
    ----------
    path : str or list of str
        What napari asks to open; a list is accepted only with one entry.
    """
    if isinstance(path, (list, tuple)):
        if len(path) != 1:
            return None
        path = path[0]
    path = Path(path)
    name = path.name.lower()
    if name.endswith(_TIFF):
        try:
            if describe_file(path)["stack_shape"] is None:
                return None  # a 2D image: let napari's own reader show it
        except InputError:
            pass  # read_stack raises the same error with its message
        return read_stack
    if is_zarr(path) or name.endswith(".zarr"):
        return read_stack
    return None


def read_stack(path: str | list[str]) -> list[LayerData]:
    """Read ``path`` into napari layer data: ``[(data, {"scale", "name", "metadata"}, type)]``.

    Raises
    ------
    InputError
        The file is missing, empty, corrupt, unsupported or not a 3D stack.
    """
    if isinstance(path, (list, tuple)):
        path = path[0]
    facts = describe_file(path)
    channels = range(facts["channels"]) if facts["channels"] > 1 else [None]
    frames = range(facts["frames"]) if facts["frames"] > 1 else [None]
    levels = range(int(facts["details"].get("levels", 1)))
    layers = []
    for channel in channels:
        pyramid = [[load_volume(path, channel=channel, frame=t, level=k) for t in frames]
                   for k in levels]  # every level is checked before a layer is made
        layers.append(_layer(pyramid, facts, channel))
    return layers


def _layer(pyramid: list[list[Volume]], facts: dict, channel: int | None) -> LayerData:
    """One layer from ``pyramid[level][frame]``: an array, or a list of them for several levels."""
    volumes = pyramid[0]
    first = volumes[0]
    levels = [v[0].data if len(v) == 1 else _stack([f.data for f in v]) for v in pyramid]
    data = levels[0] if len(levels) == 1 else levels
    scale = first.spacing_zyx if len(volumes) == 1 else (1.0, *first.spacing_zyx)
    name = file_stem(str(first.source))
    if channel is not None:
        name = f"{name} [ch{channel}]"
    metadata = {"source": first.source, "spacing_known": first.spacing_known,
                "spacing_zyx": first.spacing_zyx, "channel": channel,
                "frames": len(volumes) if len(volumes) > 1 else None,
                "format": facts["format"], "axes_in_file": facts["axes"],
                "stored": first.metadata.get("stored", {})}
    kind = "labels" if _looks_like_labels(levels[0], name, facts.get("kind")) else "image"
    attributes = {"name": name, "scale": tuple(scale), "metadata": metadata}
    if len(levels) > 1:
        attributes["multiscale"] = True
        metadata["level_scales_zyx"] = [tuple(v[0].spacing_zyx) for v in pyramid]
    elif kind == "image":
        limits = contrast_from_percentiles(data)
        if limits is not None:
            attributes["contrast_limits"] = limits
    return data, attributes, kind


def contrast_from_percentiles(data: Any, low: float = 0.5,
                              high: float = 99.8) -> tuple[float, float] | None:
    """Contrast limits at the ``low`` and ``high`` percentiles of a sample of about a million
    voxels (a dim 8-bit stack with its 99th percentile near 30 no longer opens nearly black);
    None for a lazy stack (not read just for this) or a flat sample."""
    if is_lazy(data) or data.size == 0:
        return None
    step = max(1, int(round((data.size / 1e6) ** (1 / 3))))
    sample = data[(slice(None),) * (data.ndim - 3) + (slice(None, None, step),) * 3]
    lo, hi = (float(v) for v in np.percentile(sample, [low, high]))
    if not (np.isfinite(lo) and np.isfinite(hi)) or hi <= lo:
        return None
    return lo, hi


def _stack(arrays: list[Any]) -> Any:
    if not any(is_lazy(a) for a in arrays):
        return np.stack(arrays)
    import dask.array as da

    return da.stack(arrays)


def _looks_like_labels(data: Any, name: str, kind: str | None) -> bool:
    if kind is not None:
        return kind == "labels"
    dtype = np.dtype(data.dtype)
    if dtype.kind not in "iub":
        return False
    if "label" in name.lower():
        return True
    if is_lazy(data):
        return False  # do not read a lazy stack just to guess
    step = max(1, int(round((data.size / 1e6) ** (1 / 3))))
    sample = data[(slice(None),) * (data.ndim - 3) + (slice(None, None, step),) * 3]
    return len(np.unique(sample)) <= FEW_VALUES
