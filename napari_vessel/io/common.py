"""Pieces shared by the TIFF and Zarr readers and writers (see :mod:`napari_vessel.io.stacks`).

A reader first builds a :class:`Header`: what the file holds (axes, shape, dtype, voxel size) without
touching the voxels. :mod:`napari_vessel.io.stacks` then picks the channel and frame and opens the data.
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

from napari_vessel.errors import InputError

__all__ = ["Header", "ChunkReader", "to_micrometres", "atomic_path", "atomic_replace",
           "check_can_write", "KNOWN_AXES", "file_stem", "IMAGE_ENDINGS"]

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


#: Endings of the stacks napari-vessel reads and writes, longest first: :func:`file_stem` removes
#: one of them as a whole (``.ome.tif`` is one ending, not two).
IMAGE_ENDINGS = (".ome.tiff", ".ome.tif", ".ome.zarr", ".tiff", ".tif", ".btf", ".tf8", ".zarr")


def file_stem(path: str | os.PathLike) -> str:
    """The name of a stack file or folder without its image ending: what output, recovery and
    layer names start with.

    One of :data:`IMAGE_ENDINGS` is removed, compared without case (the rest of the name keeps
    its case). Any other name is kept whole: a Zarr folder need not end in ``.zarr`` and its name
    may hold dots (``2024.05.17_mouse``), and ``scan.czi`` stays apart from ``scan.tif``.

    Parameters
    ----------
    path : str or path-like
        The file or folder; only its name (the last part) counts.

    Returns
    -------
    str
        The stem; never empty for a non-empty name (``.tif`` alone is kept whole).

    Examples
    --------
    >>> file_stem("/data/mouse1.ome.tif")
    'mouse1'
    >>> file_stem("run.v2.zarr")
    'run.v2'
    """
    name = Path(path).name
    lower = name.lower()
    for ending in IMAGE_ENDINGS:
        if lower.endswith(ending) and len(name) > len(ending):
            return name[: -len(ending)]
    return name


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


def region(names: str, shape: tuple[int, ...], index: tuple[slice, ...]) -> str:
    """The voxels ``index`` selects, as text: ``"z 3, y 16-31, x 0-63"`` (axes of size 1 left out)."""
    parts = []
    for name, size, part in zip(names, shape, index, strict=False):
        start, stop, _ = part.indices(size)
        if size > 1 or name.upper() in "ZYX":
            parts.append(f"{name.lower()} {start}" if stop - start == 1
                         else f"{name.lower()} {start}-{stop - 1}")
    return ", ".join(parts)


class ChunkReader:
    """A chunked array (a Zarr array, or a TIFF through tifffile's Zarr store) that dask reads one
    chunk at a time, and that turns a chunk it cannot read into an :class:`InputError` naming the
    file and the chunk's voxels, instead of a decoder's traceback in the middle of a computation.

    Parameters
    ----------
    array : zarr.Array
        The data; ``shape``, ``dtype``, ``chunks`` and slicing are used.
    names : str
        One letter per axis, for the messages.
    damaged : callable(str, tuple of slice, Exception) -> str
        The message for a region (as text, e.g. ``"z 3, y 0-63, x 0-63"``, and as slices) whose
        voxels could not be read.
    check : callable(tuple of slice) -> None, optional
        Called before the voxels of a region are read (e.g. to refuse a missing chunk).
    """

    def __init__(self, array: Any, names: str,
                 damaged: Callable[[str, tuple[slice, ...], Exception], str],
                 check: Callable[[tuple[slice, ...]], None] | None = None) -> None:
        self.array, self.names, self.damaged, self.check = array, names, damaged, check
        self.shape = tuple(int(s) for s in array.shape)
        self.ndim = len(self.shape)
        dtype = array.dtype
        self.dtype = dtype if isinstance(dtype, np.dtype) else np.dtype(str(dtype))
        self.chunks = tuple(max(1, int(c)) for c in array.chunks)

    def where(self, index: tuple[slice, ...]) -> str:
        return region(self.names, self.shape, index)

    def __getitem__(self, index: Any) -> np.ndarray:
        index = index if isinstance(index, tuple) else (index,)
        index = tuple(index) + (slice(None),) * (self.ndim - len(index))
        if self.check is not None:
            self.check(index)
        try:
            return np.asarray(self.array[index])
        except (InputError, MemoryError):
            raise
        except Exception as err:  # decoders and codecs raise their own error types
            raise InputError(self.damaged(self.where(index), index, err)) from err

    def blocks(self) -> Iterator[tuple[slice, ...]]:
        """The region of every chunk, in storage order."""
        counts = [math.ceil(s / c) for s, c in zip(self.shape, self.chunks, strict=True)]
        for coords in np.ndindex(*counts):
            yield tuple(slice(i * c, min((i + 1) * c, s))
                        for i, c, s in zip(coords, self.chunks, self.shape, strict=True))

    def to_dask(self) -> Any:
        """A dask array with one block per chunk."""
        import dask.array as da

        return da.from_array(self, chunks=self.chunks, name=f"read-{uuid.uuid4().hex}",
                             fancy=False, meta=np.empty((0,) * self.ndim, self.dtype))

    def read(self) -> np.ndarray:
        """All voxels at once (fast path); when that fails, the chunk at fault is found and named."""
        if self.check is not None:
            for index in self.blocks():
                self.check(index)
        try:
            return np.asarray(self.array[...])
        except (InputError, MemoryError):
            raise
        except Exception as err:
            self.find_damage()
            whole = (slice(None),) * self.ndim
            raise InputError(self.damaged(self.where(whole), whole, err)) from err

    def find_damage(self) -> None:
        """Read chunk by chunk and raise the :class:`InputError` of the first one that fails."""
        for index in self.blocks():
            self[index]


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

    Parameters
    ----------
    path : Path
        The target.
    overwrite : bool
        Replace an existing ``path``; when False an existing one is refused
        (see :func:`check_can_write`).

    Raises
    ------
    InputError
        ``path`` exists and ``overwrite`` is False, or its folder does not exist.
    """
    path = Path(path)
    check_can_write(path, overwrite)
    with atomic_replace(path) as tmp:
        yield tmp


@contextmanager
def atomic_replace(path: Path) -> Iterator[Path]:
    """Like :func:`atomic_path`, but whatever is at ``path`` is replaced without asking.

    For files this package owns and rewrites on its own (caches, checkpoints, weights a caller has
    already checked the name of, a retried task's result). The temporary path is unique
    (``.NAME.UUID.partial.SUFFIX``, so writers that look at the suffix see the right one) and is
    removed when the block raises; a file replaces a file in one ``os.replace``, so a reader (or a
    run killed at any moment) sees the old content or the new, never neither. A file gets the
    permissions the process's umask gives a new file, whatever its writer chose.

    Parameters
    ----------
    path : Path
        The target; its folder must exist.

    Yields
    ------
    Path
        Where the block writes (a file or a folder); nothing exists there yet.
    """
    path = Path(path)
    tmp = path.with_name(f".{path.name}.{uuid.uuid4().hex[:8]}.partial{path.suffix}")
    try:
        yield tmp
        if tmp.is_file():  # some writers (safetensors') create 0600: a saved file is shareable
            os.chmod(tmp, 0o666 & ~_umask())
        if path.exists() and (path.is_dir() or tmp.is_dir()):  # a folder cannot be replaced
            trash = path.with_name(f".{path.name}.{uuid.uuid4().hex[:8]}.old")
            os.replace(path, trash)
            os.replace(tmp, path)
            remove_path(trash)
        else:
            os.replace(tmp, path)
    finally:
        remove_path(tmp)


def _umask() -> int:
    """The process's file-creation mask.

    Linux states it in ``/proc/self/status``; elsewhere it is read by setting it and putting it
    back (for an instant other threads create files with mask 022).
    """
    try:
        with open("/proc/self/status", encoding="ascii") as fh:
            for line in fh:
                if line.startswith("Umask:"):
                    return int(line.split()[1], 8)
    except (OSError, ValueError, IndexError):
        pass  # no /proc (macOS, Windows) or a kernel that does not say: ask the process
    mask = os.umask(0o022)
    os.umask(mask)
    return mask


def remove_path(path: Path) -> None:
    """Delete a file or a folder tree (a Zarr store) if it exists."""
    if path.is_dir():
        shutil.rmtree(path, ignore_errors=True)
    elif path.exists():
        path.unlink()
