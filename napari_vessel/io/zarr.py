"""Zarr and OME-Zarr: read the header, open the voxels lazily with dask, write a chunked stack.

Reads OME-Zarr 0.4 (Zarr v2, ``multiscales`` in the attributes) and 0.5 (Zarr v3, under ``ome``),
plain Zarr arrays and groups holding one array; any multiscale level can be opened (``level``).
Writes OME-Zarr 0.4 (Zarr v2 format), the version most viewers read today, with labels marked
``image-label`` (NGFF) and, when asked, a pyramid of lower resolutions (:mod:`.io_pyramid`). Used
through :mod:`napari_vessel.io.stacks`.
"""

from __future__ import annotations

import itertools
import json
import warnings
from pathlib import Path
from typing import Any

import numpy as np

from napari_vessel.errors import InputError
from napari_vessel.io.common import ChunkReader, Header, atomic_path, region, to_micrometres

__all__ = ["is_zarr", "read_zarr_header", "write_zarr", "create_zarr", "mark_complete", "update_metadata",
           "level_scale", "CHUNKS"]

#: Chunk shape (z, y, x) of written arrays: a few MB each, so dask and viewers stream them well.
CHUNKS = (32, 256, 256)

#: Attribute set on the arrays this package writes once every chunk, empty ones included, is on
#: disk: in such an array a missing chunk means an incomplete copy, not an empty region.
ALL_CHUNKS = ("napari_vessel_chunks", "all written")

#: Axis names when a Zarr array carries none, by number of axes (OME order).
_DEFAULT_AXES = {2: "YX", 3: "ZYX", 4: "CZYX", 5: "TCZYX"}


def is_zarr(path: Path) -> bool:
    """True when ``path`` is a folder holding a Zarr (v2 or v3) array or group."""
    return path.is_dir() and any(
        (path / marker).is_file() for marker in ("zarr.json", ".zarray", ".zgroup", ".zattrs"))


def read_zarr_header(path: str, level: int = 0) -> Header:
    """Read what a Zarr or OME-Zarr holds without reading the voxels.

    Parameters
    ----------
    path : str
        A Zarr folder: an array, a group with one array, or an OME-Zarr image.
    level : int
        Which multiscale level of an OME-Zarr image: 0 is the full resolution; a plain array has
        level 0 only.

    Returns
    -------
    Header
        Axes normalised to letters from ``"TCZYX"``; ``open_array`` returns a dask array when lazy;
        ``extra["levels"]`` is the number of levels, ``shape`` and ``spacing`` are those of
        ``level``.

    Raises
    ------
    InputError
        Not a readable Zarr; a level that does not exist; a level listed in the metadata that is
        missing or unreadable (an incomplete copy), naming the store and the level.
    """
    import zarr

    try:
        node = zarr.open(path, mode="r")
    except Exception as err:  # zarr raises several types for a broken or foreign folder
        raise InputError(f"{path} is not a readable Zarr ({err}); check the folder") from err
    fmt, names, units, scale = "Zarr", None, {}, None
    attrs = dict(node.attrs)
    level = int(level)
    label = path if level == 0 else f"{path} (level {level})"  # errors name the level
    if isinstance(node, zarr.Array):
        array = node
        multiscales = _parent_multiscales(Path(path))
    else:
        multiscales = _multiscales(attrs)
        if multiscales:
            arrays = _levels(node, multiscales, path)
            array = arrays[min(level, len(arrays) - 1)]
        else:
            array = _only_array(node, path)
            attrs = {**attrs, **dict(array.attrs)}
    count = len(multiscales["datasets"]) if multiscales and not isinstance(node, zarr.Array) else 1
    if not 0 <= level < count:
        raise InputError(f"{path} has {count} resolution level{'s' * (count != 1)} "
                         f"(0..{count - 1}); level {level} does not exist")
    if multiscales:
        fmt = "OME-Zarr"
        names, units = _ome_axes(multiscales.get("axes"))
        scale = level_scale(multiscales, level if count > 1 else 0)
    ndim = len(array.shape)
    if names is None or len(names) != ndim:
        if ndim not in _DEFAULT_AXES:
            raise InputError(f"{path} holds an array with {ndim} axes {array.shape}; expected 3 "
                             "(z, y, x), 4 (c, z, y, x) or 5 (t, c, z, y, x)")
        names = _DEFAULT_AXES[ndim]
    stored = attrs.get("napari_vessel", {}) if isinstance(attrs.get("napari_vessel"), dict) else {}
    kind = stored.get("kind") or ("labels" if "image-label" in attrs else None)
    spacing = {}
    if scale is not None and len(scale) == ndim:
        for letter, value in zip(names, scale, strict=True):
            unit = units.get(letter) or ("um" if float(value) != 1.0 else None)
            size = to_micrometres(value, unit) if letter in "ZYX" else None
            if size is not None:
                spacing[letter.lower()] = size
    dtype = np.dtype(str(array.dtype)) if not isinstance(array.dtype, np.dtype) else array.dtype
    header = Header(
        path=path, format=fmt, axes=names, shape=tuple(int(s) for s in array.shape), dtype=dtype,
        spacing=spacing, kind=kind, nbytes=int(np.prod(array.shape)) * dtype.itemsize,
        extra={"chunks": tuple(int(c) for c in array.chunks), "metadata": stored.get("metadata", {}),
               "zarr_format": int(array.metadata.zarr_format)},
    )
    if multiscales:
        header.extra["levels"] = count
    complete = array.attrs.get(ALL_CHUNKS[0]) == ALL_CHUNKS[1]
    check = _chunk_check(array, label, names, complete)
    if complete and check is not None and array.nchunks_initialized < array.nchunks:
        reader = ChunkReader(array, names, _corrupt(array, label), check)
        for index in reader.blocks():  # refused now, not after minutes of work
            check(index)
    header.open_array = lambda lazy: _open(array, label, names, check, lazy)
    return header


def _levels(group: Any, multiscales: dict, path: str) -> list[Any]:
    """Every level's array (metadata only): a level listed but missing is an incomplete store."""
    arrays = []
    for k, dataset in enumerate(multiscales["datasets"]):
        name = str(dataset.get("path", ""))
        try:
            arrays.append(group[name])
        except Exception as err:  # KeyError, or the decoders' errors for broken metadata
            raise InputError(
                f"{path}: level {k} (the array '{name}') is listed in the multiscales metadata "
                f"but is missing or unreadable ({type(err).__name__}: {err}); the store is "
                "incomplete or damaged: copy it again, or write it again") from err
        if len(arrays[-1].shape) != len(arrays[0].shape):
            raise InputError(f"{path}: level {k} (the array '{name}') has "
                             f"{len(arrays[-1].shape)} axes, level 0 has {len(arrays[0].shape)}; "
                             "the multiscales metadata does not match the arrays")
    return arrays


def _open(array: Any, path: str, names: str, check: Any, lazy: bool) -> Any:
    reader = ChunkReader(array, names, _corrupt(array, path), check)
    return reader.to_dask() if lazy else reader.read()


def _chunk_name(array: Any, coords: tuple[int, ...]) -> str:
    key = array.metadata.encode_chunk_key(tuple(int(c) for c in coords))
    return f"{array.path}/{key}" if array.path else key


def _corrupt(array: Any, path: str) -> Any:
    def damaged(where: str, index: tuple[slice, ...], err: Exception) -> str:
        starts = [part.indices(size)[0] // chunk for part, size, chunk
                  in zip(index, array.shape, array.chunks, strict=True)]
        one = all(part.indices(size)[1] - part.indices(size)[0] <= chunk for part, size, chunk
                  in zip(index, array.shape, array.chunks, strict=True))
        what = f"the chunk {_chunk_name(array, tuple(starts))}" if one else "a chunk"
        return (f"{path}: {what} ({where}) cannot be decoded ({err}); the store is damaged: "
                "copy it again, or export the stack again")
    return damaged


def _chunk_check(array: Any, path: str, names: str, complete: bool) -> Any:
    """A check, run before a region is read, of the chunk files it touches: a missing one is
    refused in an array this package wrote with every chunk (:data:`ALL_CHUNKS`), and warned
    about once elsewhere (other writers leave out chunks that hold only the fill value); a Blosc
    chunk shorter than its header says (a copy cut off in the middle of a file, which Blosc would
    decode to garbage) is refused. None when the store is not a folder on disk or is sharded."""
    root = getattr(array.store, "root", None)
    if root is None or getattr(array, "shards", None) is not None:
        return None
    folder = Path(root) / array.path
    compressors = tuple(getattr(array, "compressors", ()) or ())
    blosc = len(compressors) == 1 and (getattr(compressors[0], "codec_id", None) == "blosc"
                                       or type(compressors[0]).__name__ == "BloscCodec")
    shape, chunks = tuple(array.shape), tuple(array.chunks)
    warned: list[str] = []

    def check(index: tuple[slice, ...]) -> None:
        ranges = []
        for part, size, chunk in zip(index, shape, chunks, strict=True):
            start, stop, _ = part.indices(size)
            ranges.append(range(start // chunk, (stop - 1) // chunk + 1) if stop > start else ())
        for coords in itertools.product(*ranges):
            name = _chunk_name(array, coords)
            where = region(names, shape, tuple(slice(i * c, (i + 1) * c)
                                               for i, c in zip(coords, chunks, strict=True)))
            file = folder / array.metadata.encode_chunk_key(coords)
            try:
                size = file.stat().st_size
            except FileNotFoundError:
                if complete:
                    raise InputError(
                        f"{path}: the chunk {name} ({where}) is missing, but this store was "
                        "written with every chunk: the store is incomplete; copy it again"
                    ) from None
                if not warned:
                    warned.append(name)
                    warnings.warn(
                        f"{path}: the chunk {name} ({where}) is not in the store and reads as "
                        f"the fill value {array.fill_value}; stores often leave out empty "
                        "chunks, but if this region should hold data the store is incomplete: "
                        "copy it again", stacklevel=2)
                continue
            if blosc:
                with open(file, "rb") as handle:
                    head = handle.read(16)
                expected = int.from_bytes(head[12:16], "little") if len(head) == 16 else None
                if expected != size:
                    says = f"its header says {expected}" if expected else "no Blosc header"
                    raise InputError(
                        f"{path}: the chunk {name} ({where}) is cut short or damaged ({size} "
                        f"bytes, {says}): the store is incomplete or damaged; copy it again")
    return check


def _multiscales(attrs: dict) -> dict | None:
    found = attrs.get("multiscales") or attrs.get("ome", {}).get("multiscales")
    if isinstance(found, list) and found and found[0].get("datasets"):
        return found[0]
    return None


def _parent_multiscales(path: Path) -> dict | None:
    """The OME metadata of the group holding ``path``, narrowed to that one array."""
    for name in (".zattrs", "zarr.json"):
        file = path.parent / name
        if file.is_file():
            try:
                attrs = json.loads(file.read_text())
            except ValueError:
                return None
            found = _multiscales(attrs.get("attributes", attrs))
            if found:
                datasets = [d for d in found["datasets"] if d.get("path") == path.name]
                return {**found, "datasets": datasets} if datasets else None
    return None


def _only_array(group: Any, path: str) -> Any:
    names = sorted(group.array_keys())
    if not names:
        raise InputError(
            f"{path} is a Zarr group without any array in it; point to the folder of the array "
            f"itself (e.g. {path}/0) or to an OME-Zarr image")
    if len(names) > 1:
        raise InputError(
            f"{path} is a Zarr group with several arrays ({', '.join(names)}); open one of them, "
            f"e.g. {path}/{names[0]}")
    return group[names[0]]


def _ome_axes(axes: Any) -> tuple[str | None, dict[str, str]]:
    if not isinstance(axes, list) or not axes:
        return None, {}
    names, units = [], {}
    for axis in axes:
        name = axis.get("name", "") if isinstance(axis, dict) else str(axis)
        letter = name.upper()[:1]
        if letter not in "TCZYX" or letter in names or len(name) != 1:
            return None, {}
        names.append(letter)
        if isinstance(axis, dict) and axis.get("unit"):
            units[letter] = axis["unit"]
    return "".join(names), units


def level_scale(multiscales: dict, level: int = 0) -> list[float] | None:
    """The voxel size of one level, in the file's units: the level's ``scale`` transformation
    times the image-wide one (NGFF ``coordinateTransformations``); None when there is none."""
    scale = None
    for transforms in (multiscales["datasets"][level].get("coordinateTransformations"),
                       multiscales.get("coordinateTransformations")):
        for transform in transforms or []:
            if transform.get("type") == "scale":
                values = [float(v) for v in transform.get("scale", [])]
                scale = values if scale is None else [a * b for a, b in zip(scale, values,
                                                                            strict=False)]
    return scale


def create_zarr(path: Path, shape: tuple[int, ...], dtype: Any,
                spacing_zyx: tuple[float, float, float], *, kind: str,
                metadata: dict | None = None, image_label: dict | None = None) -> Any:
    """Create an empty OME-Zarr image (level 0, :data:`CHUNKS`) at ``path`` to fill block by block.

    Returns the ``zarr.Array``; call :func:`mark_complete` on it once every voxel is written, then
    :func:`~napari_vessel.io.pyramid.write_pyramid` for lower resolutions. ``path`` is created as
    is (no atomic publishing): give it a temporary name. Labels (``kind="labels"``) carry the NGFF
    ``image-label`` attribute, with the fields of ``image_label`` (e.g. ``colors``, ``source``).
    """
    import zarr

    chunks = tuple(min(c, s) for c, s in zip(CHUNKS, shape, strict=True))
    axes = [{"name": n, "type": "space", "unit": "micrometer"} for n in "zyx"]
    multiscales = [{
        "version": "0.4", "name": path.name.lstrip(".").split(".")[0], "axes": axes,
        "datasets": [{"path": "0", "coordinateTransformations": [
            {"type": "scale", "scale": [float(s) for s in spacing_zyx]}]}],
    }]
    own = json.loads(json.dumps({"kind": kind, "metadata": metadata or {}}, default=str))
    group = zarr.open_group(str(path), mode="w", zarr_format=2)
    array = group.create_array("0", shape=tuple(shape), dtype=dtype, chunks=chunks,
                               config={"write_empty_chunks": True})
    attrs: dict[str, Any] = {"multiscales": multiscales, "napari_vessel": own}
    if kind == "labels":
        attrs["image-label"] = {"version": "0.4", **(image_label or {})}
    group.attrs.update(attrs)
    return array


def update_metadata(store: Path, **values: Any) -> None:
    """Change entries of the ``metadata`` that :func:`create_zarr` recorded in a store (e.g. the
    threshold a level rule chose once the whole probability map was known)."""
    import zarr

    group = zarr.open_group(str(store), mode="r+", zarr_format=2)
    own = dict(group.attrs.get("napari_vessel", {}))
    own["metadata"] = {**own.get("metadata", {}),
                       **json.loads(json.dumps(values, default=str))}
    group.attrs["napari_vessel"] = own


def mark_complete(array: Any) -> None:
    """Mark an array as holding every chunk (:data:`ALL_CHUNKS`): a missing one is then damage."""
    array.attrs[ALL_CHUNKS[0]] = ALL_CHUNKS[1]


def write_zarr(path: Path, data: Any, spacing_zyx: tuple[float, float, float], *, kind: str,
               metadata: dict | None = None, overwrite: bool = False, pyramid: bool = False,
               smallest: int | None = None) -> Path:
    """Write a 3D stack as a chunked OME-Zarr image with its voxel size.

    Dask arrays are written chunk by chunk, so a stack larger than memory can be saved. With
    ``pyramid`` the lower resolutions follow (:func:`~napari_vessel.io.pyramid.write_pyramid`:
    2x steps until y and x fit in ``smallest`` voxels, mean for images, max for labels), inside
    the temporary store, so the published store has every level. See
    :func:`napari_vessel.io.stacks.save_volume` for the other parameters.
    """
    from napari_vessel.io.pyramid import SMALLEST, write_pyramid

    if np.dtype(data.dtype).kind == "b":
        data = data.astype(np.uint8)
    with atomic_path(path, overwrite) as tmp:
        array = create_zarr(tmp, tuple(data.shape), data.dtype, spacing_zyx, kind=kind,
                            metadata=metadata)
        if hasattr(data, "dask"):
            data.rechunk(array.chunks).store(array, lock=False)
        else:
            array[...] = np.asarray(data)
        mark_complete(array)  # a missing chunk will mean a damaged copy
        if pyramid:
            write_pyramid(tmp, method="max" if kind == "labels" else "mean",
                          smallest=SMALLEST if smallest is None else smallest)
    return path
