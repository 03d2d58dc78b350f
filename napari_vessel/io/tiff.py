"""TIFF, BigTIFF, ImageJ hyperstack and OME-TIFF: read the header, open the voxels, write a stack.

Used through :func:`napari_vessel.io.stacks.load_volume`, :func:`~napari_vessel.io.stacks.describe_file` and
:func:`~napari_vessel.io.stacks.save_volume`.
"""

from __future__ import annotations

import json
import logging
import struct
import xml.etree.ElementTree as ElementTree
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import numpy as np
import tifffile

from napari_vessel.errors import InputError
from napari_vessel.io.common import ChunkReader, Header, atomic_path, to_micrometres

__all__ = ["read_tiff_header", "write_tiff", "BIGTIFF_BYTES"]

#: Stacks larger than this (uncompressed bytes) are written as BigTIFF with OME metadata, because
#: classic TIFF stops at 4 GB and compressed ImageJ files cannot pass that limit.
BIGTIFF_BYTES = 2**31

#: Pixel types ImageJ can open natively.
_IMAGEJ_DTYPES = {np.dtype(t) for t in ("uint8", "uint16", "int16", "float32")}

#: Warnings from tifffile that mean the file is damaged.
_DAMAGE_WORDS = ("offset", "corrupt", "truncat", "invalid tag", "unexpected end",
                 "missing")  # "missing N frames. Missing data are zeroed": a lying header


class _Collect(logging.Handler):
    def __init__(self) -> None:
        super().__init__(logging.WARNING)
        self.messages: list[str] = []

    def emit(self, record: logging.LogRecord) -> None:
        self.messages.append(record.getMessage())


@contextmanager
def _open(path: str) -> Iterator[tifffile.TiffFile]:
    """Open a TIFF, turning every sign of damage into an :class:`InputError`."""
    logger = logging.getLogger("tifffile")
    collect = _Collect()
    logger.addHandler(collect)
    try:
        try:
            tif = tifffile.TiffFile(path)
        except (tifffile.TiffFileError, struct.error, ValueError, OSError, IndexError) as err:
            raise _damaged(path, err) from err
        with tif:
            try:
                series = tif.series
            except Exception as err:  # tifffile raises many types on broken structures
                raise _damaged(path, err) from err
            hurt = [m for m in collect.messages if any(w in m.lower() for w in _DAMAGE_WORDS)]
            if hurt:
                raise _damaged(path, hurt[0])
            if not series:
                raise _damaged(path, "no image found in the file")
            _check_one_stack(series, path)
            _check_complete(tif, series[0], path)
            yield tif
    finally:
        logger.removeHandler(collect)


def _check_one_stack(series: Any, path: str) -> None:
    """Refuse a plain TIFF whose pages form several stacks (pages of different sizes): only the
    first would be read and the rest lost without a word. Reduced-resolution previews and
    pyramid levels are not stacks of their own."""
    others = [s for s in series[1:] if s.kind == "generic" and not s.is_pyramidal
              and not getattr(s.pages[0], "is_reduced", False)]
    if others and series[0].kind == "generic":
        shapes = ", ".join("x".join(map(str, s.shape)) for s in (series[0], *others))
        raise InputError(f"{path} holds pages of different sizes ({shapes}), so it is not one "
                         "stack; export the stack you want on its own (Fiji: Image > Duplicate) "
                         "and open that")


def _damaged(path: str, why: Any) -> InputError:
    return InputError(
        f"{path} is not a readable TIFF (corrupt or truncated: {why}); copy the file again or "
        "re-export it from the acquisition software (Fiji: File > Save As > Tiff)"
    )


def _check_complete(tif: tifffile.TiffFile, series: Any, path: str) -> None:
    """Raise when the pixel data would reach past the end of the file (a cut-off copy)."""
    size = tif.filehandle.size
    end = 0
    if getattr(series, "dataoffset", None) is not None:
        end = int(series.dataoffset) + int(series.nbytes)
    else:
        pages = series.pages
        last = pages[len(pages) - 1] if len(pages) else None
        if last is not None and getattr(last, "dataoffsets", None):
            end = max(int(o) + int(n) for o, n in zip(last.dataoffsets, last.databytecounts,
                                                       strict=False))
    if end > size:
        raise _damaged(path, f"the image data needs {end} bytes but the file has {size}")


def read_tiff_header(path: str) -> Header:
    """Read what a TIFF holds (axes, shape, dtype, voxel size) without reading the voxels.

    Parameters
    ----------
    path : str
        A ``.tif``/``.tiff``/``.btf`` file (plain, BigTIFF, ImageJ or OME).

    Returns
    -------
    Header
        Axes are normalised to letters from ``"TCZYX"``.
    """
    with _open(path) as tif:
        series = tif.series[0]
        page = tif.pages.first
        axes, keep = _normalise_axes(series.axes, series.shape, path)
        rgb = "S" in series.axes and page.photometric == tifffile.PHOTOMETRIC.RGB
        kind, stored = _stored_metadata(tif)
        if tif.is_ome:
            fmt, spacing = "OME-TIFF", _ome_spacing(tif.ome_metadata)
        elif tif.is_imagej:
            fmt, spacing = "ImageJ hyperstack", _imagej_spacing(tif.imagej_metadata or {}, page)
        else:
            fmt, spacing = "TIFF", _tag_spacing(page)
        if tif.is_bigtiff:
            fmt = "BigTIFF" if fmt == "TIFF" else f"{fmt} (BigTIFF)"
        extra = {"compression": getattr(page.compression, "name", str(page.compression)),
                 "levels": len(series.levels), "metadata": stored}
        header = Header(path=path, format=fmt, axes=axes,
                        shape=tuple(int(s) for s, k in zip(series.shape, keep, strict=True) if k),
                        dtype=np.dtype(series.dtype), spacing=spacing, rgb=rgb, kind=kind,
                        nbytes=int(series.size) * np.dtype(series.dtype).itemsize, extra=extra)
    index = tuple(slice(None) if k else 0 for k in keep)
    names = iter(axes)  # every axis of the file's array by its normalised letter, for messages
    full = "".join(next(names) if k else a for a, k in zip(series.axes, keep, strict=True))
    header.open_array = lambda lazy: _read(path, index, lazy, full)
    return header


def _normalise_axes(axes: str, shape: tuple[int, ...], path: str) -> tuple[str, list[bool]]:
    """Map tifffile's axis letters to ``"TCZYX"``; size-1 axes of other kinds are dropped."""
    out, keep = [], []
    for letter, size in zip(axes, shape, strict=True):
        if letter == "S" and "C" not in axes:
            letter = "C"
        elif letter not in "TCZYX":
            if "Z" not in axes and "Z" not in out:
                letter = "Z"  # an unnamed page sequence is the z stack
            elif "T" not in axes and "T" not in out:
                letter = "T"
        if letter in out or letter not in "TCZYX":
            if size != 1:
                raise InputError(
                    f"{path} has an axis '{letter}' of size {size} (axes {axes}, shape {shape}) "
                    "that this tool cannot interpret; export a single z stack (Fiji: Image > "
                    "Duplicate) and open that"
                )
            keep.append(False)
            continue
        out.append(letter)
        keep.append(True)
    return "".join(out), keep


def _read(path: str, index: tuple, lazy: bool, names: str) -> Any:
    if lazy:  # a damaged strip or tile is named when dask reads it
        return _chunks(path, names).to_dask()[index]
    with _open(path) as tif:
        try:
            return tif.series[0].asarray()[index]
        except MemoryError as err:  # not damage: the machine is too small for it at once
            size = tif.series[0].nbytes / 2**30
            raise InputError(f"not enough memory to read {path} at once ({size:.1f} GiB); open "
                             "it lazily (napari-vessel reads large files block by block: "
                             "load_volume(path, lazy=True)) or free some memory") from err
        except Exception as err:  # decoders raise their own error types
            _chunks(path, names).find_damage()  # raises naming the plane at fault
            raise _damaged(path, err) from err


def _chunks(path: str, names: str) -> ChunkReader:
    """The file's array read one strip or tile at a time (tifffile's Zarr view of it)."""
    import zarr

    with tifffile.TiffFile(path) as tif:
        store = tif.series[0].aszarr(level=0)

    def damaged(where: str, index: tuple, err: Exception) -> str:
        return (f"{path} is damaged: the image data at {where} cannot be decoded ({err}); copy "
                "the file again or re-export the stack from the acquisition software (Fiji: "
                "File > Save As > Tiff)")

    return ChunkReader(zarr.open(store, mode="r"), names, damaged)


def _stored_metadata(tif: tifffile.TiffFile) -> tuple[str | None, dict]:
    """The ``kind`` and metadata this package stores (ImageJ ``Info`` or OME ``Description``)."""
    text = (tif.imagej_metadata or {}).get("Info") if tif.is_imagej else None
    if tif.is_ome:
        found = _ome_element(tif.ome_metadata, "Description")
        text = found.text if found is not None else None
    try:
        stored = json.loads(text).get("napari_vessel", {}) if text else {}
    except (ValueError, AttributeError, RecursionError):
        return None, {}
    if not isinstance(stored, dict):  # someone else's "napari_vessel" entry: ignored
        return None, {}
    kind, metadata = stored.get("kind"), stored.get("metadata", {})
    return (kind if kind in ("image", "labels") else None,
            metadata if isinstance(metadata, dict) else {})


def _ome_element(xml: str | None, name: str) -> Any:
    """The first element called ``name`` in an OME-XML text, or None."""
    try:
        root = ElementTree.fromstring(xml or "")
    except ElementTree.ParseError:
        return None
    return next((e for e in root.iter() if e.tag.rsplit("}", 1)[-1] == name), None)


def _imagej_spacing(meta: dict, page: Any) -> dict[str, float]:
    unit = meta.get("unit")
    if unit is None:  # no calibration in the file (ImageJ writes "pixel" or nothing)
        return {}
    spacing = {"z": to_micrometres(meta.get("spacing"), unit)}
    for axis, tag in (("x", "XResolution"), ("y", "YResolution")):
        ppu = _pixels_per_unit(page, tag)
        spacing[axis] = to_micrometres(1.0 / ppu, unit) if ppu else None
    return {k: v for k, v in spacing.items() if v is not None}


def _pixels_per_unit(page: Any, tag: str) -> float | None:
    found = page.tags.get(tag)
    if found is None:
        return None
    num, den = found.value if isinstance(found.value, tuple) else (found.value, 1)
    return num / den if num and den else None


def _tag_spacing(page: Any) -> dict[str, float]:
    """Pixel size from resolution tags; screen defaults (72 dpi ...) are ignored."""
    unit = {2: "inch", 3: "cm"}.get(int(getattr(page.tags.get("ResolutionUnit"), "value", 0)))
    spacing = {}
    for axis, tag in (("x", "XResolution"), ("y", "YResolution")):
        ppu = _pixels_per_unit(page, tag)
        size = to_micrometres(1.0 / ppu, unit) if ppu else None
        if size is not None and size <= 100.0:  # bigger "pixels" are printing defaults
            spacing[axis] = size
    return spacing


def _ome_spacing(xml: str | None) -> dict[str, float]:
    pixels = _ome_element(xml, "Pixels")
    if pixels is None:
        return {}
    spacing = {}
    for axis in "zyx":
        size = to_micrometres(pixels.get(f"PhysicalSize{axis.upper()}"),
                              pixels.get(f"PhysicalSize{axis.upper()}Unit", "µm"))
        if size is not None:
            spacing[axis] = size
    return spacing


def write_tiff(path: Path, data: Any, spacing_zyx: tuple[float, float, float], *, kind: str,
               metadata: dict | None = None, overwrite: bool = False) -> Path:
    """Write a 3D stack as a compressed TIFF that carries the voxel size.

    ImageJ-compatible (opens in Fiji with the right scale) unless the stack is larger than
    :data:`BIGTIFF_BYTES`, the name ends in ``.btf``/``.ome.tif`` or the pixel type is one ImageJ
    lacks; then it is a (Big)TIFF with OME metadata. Dask arrays are written a block of slices at a
    time. See :func:`napari_vessel.io.stacks.save_volume` for the parameters.
    """
    data = _writable(data, kind)
    dtype = np.dtype(data.dtype)
    nbytes = int(np.prod(data.shape)) * dtype.itemsize
    name = path.name.lower()
    bigtiff = nbytes > BIGTIFF_BYTES or path.suffix.lower() == ".btf"
    ome = bigtiff or name.endswith((".ome.tif", ".ome.tiff")) or dtype not in _IMAGEJ_DTYPES
    z, y, x = (float(s) for s in spacing_zyx)
    info = json.dumps({"napari_vessel": {"kind": kind, "metadata": metadata or {}}}, default=str)
    options: dict[str, Any] = {"shape": tuple(data.shape), "dtype": dtype, "compression": "zlib",
                               "resolution": (1e4 / x, 1e4 / y), "resolutionunit": "CENTIMETER"}
    if ome:
        options.update(bigtiff=bigtiff, ome=True, metadata={
            "axes": "ZYX", "PhysicalSizeX": x, "PhysicalSizeY": y, "PhysicalSizeZ": z,
            "PhysicalSizeXUnit": "µm", "PhysicalSizeYUnit": "µm", "PhysicalSizeZUnit": "µm",
            "Description": info})
    else:
        options.update(imagej=True, resolution=(1.0 / x, 1.0 / y), resolutionunit=None,
                       metadata={"axes": "ZYX", "spacing": z, "unit": "um", "Info": info})
    with atomic_path(path, overwrite) as tmp:
        tifffile.imwrite(tmp, _planes(data), **options)
    return path


def _writable(data: Any, kind: str) -> Any:
    """Cast to a type the TIFF will hold: bool -> uint8, float64 -> float32, small labels -> uint."""
    dtype = np.dtype(data.dtype)
    if dtype.kind == "b":
        return data.astype(np.uint8)
    if dtype.kind == "f" and dtype.itemsize > 4:
        return data.astype(np.float32)
    if kind == "labels" and dtype.kind in "iu" and dtype not in _IMAGEJ_DTYPES:
        low, high = (int(v) for v in (data.min(), data.max()))
        if low >= 0 and high <= 65535:
            return data.astype(np.uint8 if high <= 255 else np.uint16)
    return data


def _planes(data: Any) -> Iterator[np.ndarray]:
    """Yield z slices, computing a dask array one block of slices at a time."""
    chunks = getattr(data, "chunks", None)
    if chunks and isinstance(chunks[0], tuple):  # dask: sizes of every block along z
        depths = chunks[0]
    elif chunks:  # zarr: one chunk size along z
        step = int(chunks[0])
        depths = [min(step, data.shape[0] - z) for z in range(0, data.shape[0], step)]
    else:
        depths = (data.shape[0],)
    start = 0
    for depth in depths:
        block = np.asarray(data[start:start + depth])
        start += depth
        yield from block
