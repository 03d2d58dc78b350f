"""Pieces shared by the TIFF and Zarr readers and writers (see :mod:`napari_vessel.io`).

A reader first builds a :class:`Header`: what the file holds (axes, shape, dtype, voxel size) without
touching the voxels. :mod:`napari_vessel.io` then picks the channel and frame and opens the data.
"""

from __future__ import annotations

import math
import os
import shutil
import uuid
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from .errors import InputError

__all__ = ["Header", "to_micrometres", "atomic_path", "check_can_write", "KNOWN_AXES"]

#: Axis letters after normalisation: time, channel, z, y, x.
KNOWN_AXES = "TCZYX"

#: Length units (as written by ImageJ, OME and OME-Zarr) and their size in micrometres.
_UNITS_UM = {
    "um": 1.0, "µm": 1.0, "μm": 1.0, "\\u00b5m": 1.0, "micron": 1.0, "microns": 1.0,
    "micrometer": 1.0, "micrometre": 1.0, "micrometers": 1.0,
    "nm": 1e-3, "nanometer": 1e-3, "nanometre": 1e-3,
    "pm": 1e-6, "picometer": 1e-6, "å": 1e-4, "angstrom": 1e-4,
    "mm": 1e3, "millimeter": 1e3, "millimetre": 1e3,
    "cm": 1e4, "centimeter": 1e4, "m": 1e6, "meter": 1e6, "metre": 1e6,
    "inch": 25400.0, "in": 25400.0,
}


def to_micrometres(value: Any, unit: str | None) -> float | None:
    """Convert a length to µm; ``None`` when the value or unit is missing or not a length.

    Parameters
    ----------
    value : float or str
        The length in ``unit``.
    unit : str or None
        A unit name such as ``"um"``, ``"micron"``, ``"nm"``, ``"micrometer"`` or ``"µm"``.
    """
    if value is None or unit is None:
        return None
    factor = _UNITS_UM.get(str(unit).strip().lower())
    try:
        size = float(value) * factor if factor is not None else None
    except (TypeError, ValueError):
        return None
    return size if size is not None and math.isfinite(size) and size > 0 else None


@dataclass
class Header:
    """What a file holds, read from its metadata only.

    Parameters
    ----------
    path : str
        The file (or folder) read.
    format : str
        Human-readable format, e.g. ``"ImageJ hyperstack"`` or ``"OME-Zarr"``.
    axes : str
        One letter per axis, from ``"TCZYX"`` (time, channel, z, y, x).
    shape : tuple of int
        Size of each axis.
    dtype : numpy.dtype
        Voxel type.
    spacing : dict
        Known voxel sizes in µm, keyed by ``"z"``, ``"y"``, ``"x"``.
    open_array : callable
        ``open_array(lazy)`` returns the full array (NumPy, or dask when ``lazy``).
    rgb : bool
        True when the channel axis holds colour samples (RGB).
    kind : str or None
        ``"labels"`` or ``"image"`` when the file says so (files this package wrote).
    nbytes : int
        Size of the full array in memory (uncompressed).
    extra : dict
        Anything else worth showing (compression, pyramid levels, stored metadata).
    """

    path: str
    format: str
    axes: str
    shape: tuple[int, ...]
    dtype: np.dtype
    spacing: dict[str, float] = field(default_factory=dict)
    open_array: Callable[[bool], Any] | None = None
    rgb: bool = False
    kind: str | None = None
    nbytes: int = 0
    extra: dict[str, Any] = field(default_factory=dict)

    def size(self, axis: str) -> int:
        """Length of ``axis`` (``"C"`` or ``"T"`` ...), 1 when absent."""
        return int(self.shape[self.axes.index(axis)]) if axis in self.axes else 1


def check_can_write(path: Path, overwrite: bool) -> None:
    """Raise :class:`InputError` when ``path`` exists and ``overwrite`` is False."""
    if path.exists() and not overwrite:
        raise InputError(
            f"{path} already exists; pass --overwrite to replace it (overwrite=True in Python), "
            "or choose another name"
        )
    if not path.parent.is_dir():
        raise InputError(f"the folder {path.parent} does not exist; create it first")


@contextmanager
def atomic_path(path: Path, overwrite: bool = False) -> Iterator[Path]:
    """Yield a temporary path beside ``path``; move it into place only if the block succeeds.

    Works for files and folders (Zarr). Nothing half-written is left behind when the block raises.
    """
    check_can_write(path, overwrite)
    tmp = path.with_name(f".{path.name}.{uuid.uuid4().hex[:8]}.partial{path.suffix}")
    try:
        yield tmp
        if path.exists():
            trash = path.with_name(f".{path.name}.{uuid.uuid4().hex[:8]}.old")
            os.replace(path, trash)
            os.replace(tmp, path)
            remove_path(trash)
        else:
            os.replace(tmp, path)
    finally:
        remove_path(tmp)


def remove_path(path: Path) -> None:
    """Delete a file or a folder tree (a Zarr store) if it exists."""
    if path.is_dir():
        shutil.rmtree(path, ignore_errors=True)
    elif path.exists():
        path.unlink()
