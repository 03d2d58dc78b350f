"""Read and write 3D stacks with their voxel size: TIFF, BigTIFF, ImageJ, OME-TIFF, Zarr, OME-Zarr.

:func:`load_volume` returns a :class:`~napari_vessel.io.volume.Volume` (z, y, x) with the voxel size
found in the file's metadata; :func:`describe_file` tells what a file holds without reading the
voxels; :func:`save_volume` writes a stack so that it reads back with the same data and voxel size.
Every problem with the input raises :class:`~napari_vessel.errors.InputError` with a message that
says what to do. The format-specific code lives in :mod:`.io_tiff` and :mod:`.io_zarr`.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

import numpy as np

from napari_vessel.errors import InputError
from napari_vessel.io.common import Header
from napari_vessel.io.tiff import read_tiff_header, write_tiff
from napari_vessel.io.volume import Volume, check_3d, check_spacing
from napari_vessel.io.zarr import is_zarr, read_zarr_header, write_zarr

__all__ = ["load_volume", "describe_file", "save_volume", "SUPPORTED", "LAZY_BYTES"]

#: File name endings this module reads and writes.
SUPPORTED = (".tif", ".tiff", ".btf", ".ome.tif", ".ome.tiff", ".zarr", ".ome.zarr")

#: TIFFs larger than this (uncompressed bytes) open lazily as dask arrays unless ``lazy=False``.
LAZY_BYTES = 2**30

_TIFF_ENDINGS = (".tif", ".tiff", ".btf", ".tf8")


def _supported_text() -> str:
    return ", ".join(SUPPORTED)


def read_header(path: str | os.PathLike, level: int = 0) -> Header:
    """Check ``path`` and read its header (axes, shape, dtype, voxel size); no voxels are read.

    ``level`` picks a lower resolution of an OME-Zarr pyramid (0: full resolution)."""
    path = Path(path).expanduser()
    if not path.exists():
        raise InputError(f"{path} does not exist; check the spelling and the folder")
    if is_zarr(path):
        return read_zarr_header(str(path), level)
    if level != 0:
        raise InputError(f"{path} has one resolution level; level {level} exists only in "
                         "OME-Zarr pyramids")
    if path.is_dir():
        if path.name.lower().endswith(".zarr"):
            raise InputError(f"{path} is a folder named .zarr but holds no Zarr data (no "
                             "zarr.json, .zarray or .zgroup); check that it was copied completely")
        raise InputError(f"{path} is a folder; give a stack file ({_supported_text()})")
    if not path.name.lower().endswith(_TIFF_ENDINGS):
        raise InputError(f"{path.name}: unsupported file type '{path.suffix or path.name}'; "
                         f"supported: {_supported_text()}. Convert other formats in Fiji "
                         "(File > Save As > Tiff) first")
    if path.stat().st_size == 0:
        raise InputError(f"{path} is empty (0 bytes); copy or export the file again")
    return read_tiff_header(str(path))


def _choose(header: Header, channel: int | None, frame: int | None) -> tuple[tuple, tuple, dict]:
    """Index and axis order that turn the file's array into one (z, y, x) stack."""
    where = f"{Path(header.path).name} (axes {header.axes}, shape {header.shape})"
    n_channels, n_frames = header.size("C"), header.size("T")
    missing = []
    if "C" in header.axes and channel is None and n_channels > 1:
        if header.rgb:
            raise InputError(
                f"{where} is an RGB colour image; choose one colour with --channel 0..2 "
                "(channel= in Python; usually the one that shows the vessels) or convert it to "
                "greyscale (Fiji: Image > Type > 8-bit)")
        missing.append(f"the vessel channel with --channel 0..{n_channels - 1}")
    if "T" in header.axes and frame is None and n_frames > 1:
        missing.append(f"a time point with --frame 0..{n_frames - 1}")
    if missing:
        what = " and ".join(
            [f"{n_channels} channels"] * (n_channels > 1) + [f"{n_frames} frames"] * (n_frames > 1))
        raise InputError(f"{where} has {what}; choose {' and '.join(missing)} "
                         "(channel= / frame= in Python)")
    for name, value, count in (("channel", channel, n_channels), ("frame", frame, n_frames)):
        if value is not None and not 0 <= int(value) < count:
            raise InputError(f"{where}: {name} {value} does not exist; the file has {count} "
                             f"{name}{'s' * (count != 1)}, numbered 0..{count - 1}")
    pick = {"C": int(channel or 0), "T": int(frame or 0)}
    index = tuple(pick[a] if a in pick else slice(None) for a in header.axes)
    kept = [a for a in header.axes if a not in pick]
    if "Z" not in kept:
        raise InputError(f"{where} is a 2D image; this needs a 3D stack (z, y, x). Open a "
                         "z stack, or for a single slice add an axis in Python (image[None])")
    order = tuple(kept.index(a) for a in "ZYX")
    return index, order, {"channel": channel if "C" in header.axes else None,
                          "frame": frame if "T" in header.axes else None}


def load_volume(path: str | os.PathLike, *, channel: int | None = None, frame: int | None = None,
                spacing: Any = None, lazy: bool | None = None, level: int = 0) -> Volume:
    """Read a 3D stack and its voxel size from a TIFF, OME-TIFF, ImageJ, Zarr or OME-Zarr file.

    Parameters
    ----------
    path : str or PathLike
        A ``.tif``/``.tiff``/``.btf`` file or a ``.zarr`` folder (an OME-Zarr image uses level 0).
    channel : int, optional
        Which channel to keep when the file has several (e.g. the vessel dye); for an RGB file,
        which colour. Required when there is more than one.
    frame : int, optional
        Which time point to keep in a time series. Required when there is more than one.
    spacing : sequence of 3 float, optional
        Voxel size (z, y, x) in µm; overrides the file's metadata.
    lazy : bool, optional
        Return a dask array instead of reading the voxels now. Default: True for Zarr and for
        TIFFs larger than :data:`LAZY_BYTES`.
    level : int
        Resolution level of an OME-Zarr pyramid: 0 (the default) is the full resolution, the one
        to segment; higher levels are smaller views for display (their voxel size is the level's).

    Returns
    -------
    Volume
        ``data`` has shape (Z, Y, X). ``spacing_known`` is False when neither the file nor
        ``spacing`` gave the voxel size; then missing sizes are 1 µm.

    Raises
    ------
    InputError
        Missing, empty, corrupt or unsupported file; 2D image; several channels or frames and
        none chosen; invalid voxel size; a level that does not exist or is missing or damaged.
    """
    header = read_header(path, level)
    index, order, chosen = _choose(header, channel, frame)
    if lazy is None:
        lazy = "Zarr" in header.format or header.nbytes > LAZY_BYTES
    data = header.open_array(bool(lazy))[index]
    if order != (0, 1, 2):
        data = data.transpose(order)
    if spacing is not None:
        spacing_zyx, known = check_spacing(spacing, 3), True
    else:
        spacing_zyx = tuple(header.spacing.get(a, 1.0) for a in "zyx")
        known = all(a in header.spacing for a in "zyx")
    stored = header.extra.get("metadata")
    stored = stored if isinstance(stored, dict) else {}  # another tool's metadata: ignored
    if spacing is None and stored.get("spacing_known") is False:
        known = False  # saved by this package from a stack whose voxel size was a guess
    metadata = {"format": header.format, "axes_in_file": header.axes,
                "shape_in_file": header.shape, "kind": header.kind,
                "spacing_in_file": dict(header.spacing), **chosen, "stored": stored,
                "level": int(level), "levels": int(header.extra.get("levels", 1))}
    return Volume(data, spacing_zyx, source=str(path), spacing_known=known, metadata=metadata)


def describe_file(path: str | os.PathLike) -> dict[str, Any]:
    """What a stack file holds, from its metadata only (the voxels are not read).

    Parameters
    ----------
    path : str or PathLike
        A file or folder :func:`load_volume` accepts.

    Returns
    -------
    dict
        ``path``, ``format``, ``shape``, ``axes`` (letters from ``"TCZYX"``), ``dtype``,
        ``channels``, ``frames``, ``rgb``, ``stack_shape`` (Z, Y, X) or None for 2D,
        ``voxel_size_um`` (z, y, x; None where unknown), ``spacing_known``, ``nbytes``
        (uncompressed size), ``kind`` (``"labels"``/``"image"`` when recorded) and ``details``.
    """
    header = read_header(path)
    stack = tuple(header.size(a) for a in "ZYX") if "Z" in header.axes else None
    return {
        "path": str(path), "format": header.format, "shape": header.shape, "axes": header.axes,
        "dtype": str(header.dtype), "channels": header.size("C"), "frames": header.size("T"),
        "rgb": header.rgb, "stack_shape": stack,
        "voxel_size_um": tuple(header.spacing.get(a) for a in "zyx"),
        "spacing_known": all(a in header.spacing for a in "zyx"),
        "nbytes": header.nbytes, "kind": header.kind,
        "details": {k: v for k, v in header.extra.items() if k != "metadata"},
    }


def save_volume(path: str | os.PathLike, data: Any, spacing_zyx: Any, *, overwrite: bool = False,
                kind: str = "image", metadata: dict | None = None, pyramid: bool = False) -> Path:
    """Write a 3D stack with its voxel size to TIFF or Zarr, atomically.

    Parameters
    ----------
    path : str or PathLike
        Ends in ``.tif``/``.tiff`` (ImageJ-compatible; BigTIFF with OME metadata when larger than
        2 GB), ``.ome.tif``/``.btf`` (OME-TIFF / BigTIFF) or ``.zarr`` (OME-Zarr, chunked).
    data : array-like or dask array, shape (Z, Y, X)
        The voxels; dask arrays are written block by block without loading them whole.
    spacing_zyx : sequence of 3 float
        Voxel size in µm.
    overwrite : bool
        Replace an existing file. Without it an existing path raises :class:`InputError`.
    kind : {"image", "labels"}
        Stored in the file so that readers open labels as labels. Labels wider than 16 bit
        that fit are written as uint8/uint16 TIFFs.
    metadata : dict, optional
        Extra JSON-able information stored with the stack (e.g. the run's parameters).
    pyramid : bool
        Zarr only: add lower resolutions (2x steps until y and x fit in 256 voxels; mean for
        images, max for labels) so that napari opens the stack as a fast multiscale layer.

    Returns
    -------
    Path
        The path written. The file appears only once complete: it is written under a temporary
        name in the same folder and then renamed.
    """
    path = Path(path).expanduser()
    if kind not in ("image", "labels"):
        raise InputError(f"kind must be 'image' or 'labels', not {kind!r}")
    if not hasattr(data, "dtype") or not hasattr(data, "shape"):
        data = np.asarray(data)
    check_3d(data, kind)
    spacing = check_spacing(spacing_zyx, 3)
    name = path.name.lower()
    if name.endswith(".zarr"):
        return write_zarr(path, data, spacing, kind=kind, metadata=metadata, overwrite=overwrite,
                          pyramid=pyramid)
    if pyramid:
        raise InputError(f"{path.name}: pyramids are written to OME-Zarr only; end the name in "
                         ".zarr, or save without pyramid")
    if name.endswith(_TIFF_ENDINGS):
        return write_tiff(path, data, spacing, kind=kind, metadata=metadata, overwrite=overwrite)
    raise InputError(f"cannot save as '{path.suffix or path.name}'; end the name in .tif, .tiff, "
                     ".ome.tif, .btf or .zarr")
