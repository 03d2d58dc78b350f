"""A damaged or incomplete stack gives one message naming the file, the plane or chunk and what to
do, in Python (eager and lazy reads) and on the command line; never zeros or a traceback."""

from __future__ import annotations

import warnings

import numpy as np
import pytest
import tifffile
import zarr

from napari_vessel.cli import main
from napari_vessel.errors import InputError
from napari_vessel.io import zarr as io_zarr
from napari_vessel.io.stacks import load_volume, save_volume

STACK = (np.random.default_rng(0).random((8, 64, 64)) * 200).astype(np.uint8)


def _refused_everywhere(path, capsys, tmp_path, *words, info=True):
    """load_volume (eager, and lazy when computed), segment and info all refuse ``path`` with a
    message holding ``words``; segment writes nothing."""
    for lazy in (False, True):
        with pytest.raises(InputError) as err:
            np.asarray(load_volume(path, lazy=lazy).data)
        for word in (path.name, *words):
            assert word in str(err.value), (lazy, str(err.value))
    out = tmp_path / "out"
    capsys.readouterr()
    assert main(["segment", str(path), "-o", str(out), "--quiet"]) == 2
    err = capsys.readouterr().err
    lines = [line for line in err.splitlines() if "error" in line]
    assert len(lines) == 1 and "Traceback" not in err and path.name in lines[0], err
    assert all(word in lines[0] for word in words), err
    assert not out.exists() or not any(out.iterdir())
    if info:
        assert main(["info", str(path)]) == 2
        assert path.name in capsys.readouterr().err


def _damage_strip(path, page, strip):
    """Overwrite the inside of one compressed strip with noise (offsets from the file itself)."""
    with tifffile.TiffFile(path) as tif:
        offset = tif.pages[page].dataoffsets[strip]
        count = tif.pages[page].databytecounts[strip]
    data = bytearray(path.read_bytes())
    data[offset + 4:offset + count - 4] = bytes((i * 7 + 3) % 256 for i in range(count - 8))
    path.write_bytes(bytes(data))


@pytest.mark.parametrize("compression", ["zlib", "lzw"])
def test_a_corrupt_tiff_strip_is_named_by_its_plane(tmp_path, capsys, compression):
    path = tmp_path / "stack.tif"
    tifffile.imwrite(path, STACK, imagej=True, compression=compression, rowsperstrip=16,
                     metadata={"axes": "ZYX"})
    _damage_strip(path, page=3, strip=1)
    # the header is intact: info cannot see damage inside the pixel data without decoding it
    _refused_everywhere(path, capsys, tmp_path, "z 3, y 16-31", "re-export", info=False)


def test_a_tiff_header_that_declares_missing_planes_is_refused_on_the_command_line(
        tmp_path, capsys):
    path = tmp_path / "lie.ome.tif"
    tifffile.imwrite(path, STACK, ome=True, metadata={"axes": "ZYX"})
    with tifffile.TiffFile(path) as tif:
        xml = tif.ome_metadata
    tifffile.tiffcomment(path, comment=xml.replace('SizeZ="8"', 'SizeZ="100000"').encode())
    _refused_everywhere(path, capsys, tmp_path, "missing", "copy the file again")


def test_a_tiff_with_pages_of_different_sizes_is_refused_on_the_command_line(tmp_path, capsys):
    path = tmp_path / "mixed.tif"
    with tifffile.TiffWriter(path) as writer:
        for plane in STACK:
            writer.write(plane, metadata=None)
        writer.write(STACK[0, :16, :16], metadata=None)
    _refused_everywhere(path, capsys, tmp_path, "different sizes", "Image > Duplicate")


@pytest.fixture()
def store(tmp_path, monkeypatch):
    """A stack saved by this package as 2x2x2 chunks, the chunk at z 4-7, y 0-31, x 32-63 being
    0/1.0.1."""
    monkeypatch.setattr(io_zarr, "CHUNKS", (4, 32, 32))
    path = save_volume(tmp_path / "stack.zarr", STACK, (2.0, 0.5, 0.5))
    return path, path / "0" / "1.0.1"


def test_a_deleted_chunk_of_a_store_this_package_wrote_is_refused(store, tmp_path, capsys):
    path, chunk = store
    chunk.unlink()
    _refused_everywhere(path, capsys, tmp_path, "0/1.0.1", "z 4-7, y 0-31, x 32-63", "missing",
                        "copy it again")


def test_a_chunk_deleted_after_opening_is_refused_when_read(store):
    path, chunk = store
    volume = load_volume(path)
    chunk.unlink()
    np.asarray(volume.data[:4])  # the chunks still there read normally
    with pytest.raises(InputError, match="0/1.0.1 .* is missing"):
        np.asarray(volume.data)


@pytest.mark.parametrize("damage", ["noise", "cut short"])
def test_a_corrupt_or_cut_chunk_is_refused_when_read(store, tmp_path, capsys, damage):
    path, chunk = store
    data = chunk.read_bytes()
    chunk.write_bytes(b"not a chunk" * 9 if damage == "noise" else data[:len(data) // 2])
    load_volume(path)  # the metadata is intact: opening lazily reads no chunk yet
    # info reads no voxels, so it cannot see the damage
    _refused_everywhere(path, capsys, tmp_path, "0/1.0.1", "z 4-7, y 0-31, x 32-63",
                        "copy it again", info=False)


def test_empty_chunks_left_out_by_another_writer_read_as_the_fill_value_with_a_warning(
        tmp_path):
    sparse = STACK.copy()
    sparse[4:, :, 32:] = 0
    path = tmp_path / "other.zarr"
    zarr.create_array(str(path), data=sparse, chunks=(4, 32, 32))  # zarr leaves empty chunks out
    assert not (path / "c" / "1" / "0" / "1").exists()
    for lazy in (False, True):
        with warnings.catch_warnings(record=True) as caught:
            warnings.simplefilter("always")
            data = load_volume(path, lazy=lazy).data
            data = data.compute(scheduler="synchronous") if lazy else data
        np.testing.assert_array_equal(data, sparse)
        messages = [str(w.message) for w in caught if "reads as the fill value 0" in str(w.message)]
        assert len(messages) == 1 and "copy it again" in messages[0], messages


def test_every_chunk_of_a_stored_stack_is_written_even_empty_ones(store):
    path, _ = store
    empty = np.zeros_like(STACK)
    save_volume(path, empty, (1, 1, 1), overwrite=True)
    assert len(list((path / "0").glob("[0-9]*.[0-9]*.[0-9]*"))) == 8
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        assert not load_volume(path).to_numpy().any()
