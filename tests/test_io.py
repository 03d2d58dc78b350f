"""Reading and writing stacks: round trips of data and voxel size, lazy opening, bad input."""

from __future__ import annotations

import json
import os

import dask.array as da
import numpy as np
import pytest
import tifffile
import zarr

from napari_vessel.errors import InputError
from napari_vessel.io import stacks as io
from napari_vessel.io import tiff as io_tiff
from napari_vessel.io.stacks import describe_file, load_volume, save_volume

SPACING = (2.5, 0.5, 0.25)


@pytest.fixture
def stack() -> np.ndarray:
    rng = np.random.default_rng(0)
    return rng.integers(0, 4000, size=(6, 20, 24), dtype=np.uint16)


def _leftovers(folder, keep=()):
    """Files in ``folder`` other than ``keep`` (temporary files must never remain)."""
    return sorted(set(os.listdir(folder)) - set(keep))


# --- round trips -------------------------------------------------------------------------------

@pytest.mark.parametrize("name", ["s.tif", "s.tiff", "s.ome.tif", "s.btf", "s.zarr"])
@pytest.mark.parametrize("kind", ["image", "labels"])
def test_round_trip_data_spacing_and_kind(tmp_path, stack, name, kind):
    data = (stack > 2000).astype(np.uint8) if kind == "labels" else stack
    out = save_volume(tmp_path / name, data, SPACING, kind=kind, metadata={"run": 7})
    volume = load_volume(out)
    np.testing.assert_array_equal(volume.to_numpy(), data)
    assert volume.dtype == data.dtype
    assert volume.spacing_zyx == pytest.approx(SPACING)
    assert volume.spacing_known
    assert volume.metadata["kind"] == kind
    assert volume.metadata["stored"] == {"run": 7}
    assert _leftovers(tmp_path) == [name]


def test_tiff_is_imagej_compatible_and_compressed(tmp_path, stack):
    save_volume(tmp_path / "s.tif", stack, SPACING)
    with tifffile.TiffFile(tmp_path / "s.tif") as tif:
        assert tif.is_imagej and not tif.is_bigtiff
        assert tif.imagej_metadata["spacing"] == pytest.approx(2.5)
        assert tif.pages.first.compression != 1
    assert describe_file(tmp_path / "s.tif")["format"] == "ImageJ hyperstack"


def test_large_stack_is_written_as_bigtiff(tmp_path, stack, monkeypatch):
    monkeypatch.setattr(io_tiff, "BIGTIFF_BYTES", 100)
    save_volume(tmp_path / "big.tif", stack, SPACING)
    facts = describe_file(tmp_path / "big.tif")
    assert "BigTIFF" in facts["format"]
    assert facts["voxel_size_um"] == pytest.approx(SPACING)
    np.testing.assert_array_equal(load_volume(tmp_path / "big.tif").data, stack)


def test_wide_labels_and_bool_and_float64_are_stored_compactly(tmp_path, stack):
    labels = (stack % 7).astype(np.int64)
    save_volume(tmp_path / "l.tif", labels, SPACING, kind="labels")
    back = load_volume(tmp_path / "l.tif")
    assert back.dtype == np.uint8
    np.testing.assert_array_equal(back.data, labels)
    save_volume(tmp_path / "m.zarr", stack > 100, SPACING, kind="labels")
    assert load_volume(tmp_path / "m.zarr").dtype == np.uint8
    save_volume(tmp_path / "p.tif", stack / 4000.0, SPACING)
    assert load_volume(tmp_path / "p.tif").dtype == np.float32


def test_imagej_hyperstack_channels_frames_and_micron_units(tmp_path):
    data = np.arange(2 * 5 * 3 * 8 * 9, dtype=np.uint16).reshape(2, 5, 3, 8, 9)  # T Z C Y X
    path = tmp_path / "hyper.tif"
    tifffile.imwrite(path, data, imagej=True, resolution=(1 / 0.4, 1 / 0.4),
                     metadata={"axes": "TZCYX", "spacing": 1.5, "unit": "micron"})
    facts = describe_file(path)
    assert (facts["channels"], facts["frames"], facts["axes"]) == (3, 2, "TZCYX")
    volume = load_volume(path, channel=2, frame=1)
    np.testing.assert_array_equal(volume.data, data[1, :, 2])
    assert volume.spacing_zyx == pytest.approx((1.5, 0.4, 0.4))
    assert (volume.metadata["channel"], volume.metadata["frame"]) == (2, 1)


def test_imagej_nanometre_units_are_converted(tmp_path, stack):
    path = tmp_path / "nm.tif"
    tifffile.imwrite(path, stack, imagej=True, resolution=(1 / 200.0, 1 / 200.0),
                     metadata={"axes": "ZYX", "spacing": 1000.0, "unit": "nm"})
    assert load_volume(path).spacing_zyx == pytest.approx((1.0, 0.2, 0.2))


def test_ome_tiff_physical_sizes_with_units(tmp_path):
    data = np.ones((1, 2, 4, 8, 8), np.uint8) * np.arange(2, dtype=np.uint8)[None, :, None, None,
                                                                             None]
    path = tmp_path / "o.ome.tif"
    tifffile.imwrite(path, data, ome=True, metadata={
        "axes": "TCZYX", "PhysicalSizeX": 300.0, "PhysicalSizeXUnit": "nm",
        "PhysicalSizeY": 0.3, "PhysicalSizeZ": 2.0})
    volume = load_volume(path, channel=1)
    assert volume.shape == (4, 8, 8) and int(volume.data.max()) == 1
    assert volume.spacing_zyx == pytest.approx((2.0, 0.3, 0.3))
    assert describe_file(path)["format"] == "OME-TIFF"


def test_plain_tiff_resolution_tags_give_xy_but_not_z(tmp_path, stack):
    path = tmp_path / "plain.tif"
    tifffile.imwrite(path, stack, resolution=(20000.0, 20000.0), resolutionunit="CENTIMETER",
                     metadata=None)
    volume = load_volume(path)
    assert volume.spacing_zyx == pytest.approx((1.0, 0.5, 0.5))
    assert not volume.spacing_known
    screen = tmp_path / "screen.tif"  # 72 dpi, as many programs write by default
    tifffile.imwrite(screen, stack, resolution=(72.0, 72.0), resolutionunit="INCH", metadata=None)
    facts = describe_file(screen)
    assert facts["voxel_size_um"] == (None, None, None) and not facts["spacing_known"]


def test_explicit_spacing_overrides_metadata(tmp_path, stack):
    save_volume(tmp_path / "s.tif", stack, SPACING)
    volume = load_volume(tmp_path / "s.tif", spacing=(5, 1, 1))
    assert volume.spacing_zyx == (5.0, 1.0, 1.0) and volume.spacing_known


def test_unknown_spacing_saved_stays_unknown(tmp_path, stack):
    save_volume(tmp_path / "g.zarr", stack, (1, 1, 1), metadata={"spacing_known": False})
    assert not load_volume(tmp_path / "g.zarr").spacing_known


# --- Zarr / OME-Zarr ---------------------------------------------------------------------------

def test_ome_zarr_v3_with_channels_frames_and_units(tmp_path):
    data = np.arange(2 * 3 * 4 * 6 * 7, dtype=np.float32).reshape(2, 3, 4, 6, 7)
    group = zarr.open_group(str(tmp_path / "ext.ome.zarr"), mode="w", zarr_format=3)
    group.create_array("s0", data=data, chunks=(1, 1, 2, 6, 7))
    group.create_array("s1", data=data[..., ::2, ::2])
    axes = [{"name": "t", "type": "time"}, {"name": "c", "type": "channel"}] + [
        {"name": n, "type": "space", "unit": u}
        for n, u in (("z", "micrometer"), ("y", "nanometer"), ("x", "nanometer"))]
    group.attrs["ome"] = {"version": "0.5", "multiscales": [{
        "axes": axes,
        "datasets": [
            {"path": "s0", "coordinateTransformations": [
                {"type": "scale", "scale": [1.0, 1.0, 3.0, 400.0, 400.0]}]},
            {"path": "s1", "coordinateTransformations": [
                {"type": "scale", "scale": [1.0, 1.0, 3.0, 800.0, 800.0]}]}],
    }]}
    facts = describe_file(tmp_path / "ext.ome.zarr")
    assert facts["format"] == "OME-Zarr" and facts["details"]["levels"] == 2
    with pytest.raises(InputError, match=r"--channel 0\.\.2.*--frame 0\.\.1"):
        load_volume(tmp_path / "ext.ome.zarr")
    volume = load_volume(tmp_path / "ext.ome.zarr", channel=1, frame=0)
    assert volume.is_lazy
    np.testing.assert_array_equal(volume.to_numpy(), data[0, 1])
    assert volume.spacing_zyx == pytest.approx((3.0, 0.4, 0.4))


def test_zarr_written_lazily_chunk_by_chunk_and_opened_lazily(tmp_path, stack):
    lazy = da.from_array(stack, chunks=(2, 10, 12))
    save_volume(tmp_path / "d.zarr", lazy, SPACING)
    attrs = json.loads((tmp_path / "d.zarr" / ".zattrs").read_text())
    scale = attrs["multiscales"][0]["datasets"][0]["coordinateTransformations"][0]["scale"]
    assert scale == list(SPACING)
    volume = load_volume(tmp_path / "d.zarr")
    assert volume.is_lazy
    np.testing.assert_array_equal(volume.to_numpy(), stack)
    eager = load_volume(tmp_path / "d.zarr", lazy=False)
    assert isinstance(eager.data, np.ndarray)
    inner = load_volume(tmp_path / "d.zarr" / "0")  # the array inside: scale from the parent
    assert inner.spacing_zyx == pytest.approx(SPACING)


def test_plain_zarr_array_has_unknown_spacing(tmp_path, stack):
    zarr.create_array(str(tmp_path / "raw.zarr"), data=stack, chunks=(3, 10, 12))
    volume = load_volume(tmp_path / "raw.zarr")
    assert volume.shape == stack.shape and not volume.spacing_known
    assert describe_file(tmp_path / "raw.zarr")["format"] == "Zarr"


def test_big_tiff_opens_lazily(tmp_path, stack, monkeypatch):
    save_volume(tmp_path / "s.btf", da.from_array(stack, chunks=(2, 20, 24)), SPACING)
    assert load_volume(tmp_path / "s.btf", lazy=True).is_lazy
    assert not load_volume(tmp_path / "s.btf").is_lazy
    monkeypatch.setattr(io, "LAZY_BYTES", 100)
    volume = load_volume(tmp_path / "s.btf")
    assert volume.is_lazy
    np.testing.assert_array_equal(volume.to_numpy(), stack)


def test_describe_file_does_not_read_voxels(tmp_path, stack, monkeypatch):
    save_volume(tmp_path / "s.tif", stack, SPACING)

    def refuse(*args, **kwargs):
        raise AssertionError("voxels were read")

    monkeypatch.setattr(tifffile.TiffPageSeries, "asarray", refuse)
    facts = describe_file(tmp_path / "s.tif")
    assert facts["shape"] == stack.shape and facts["stack_shape"] == stack.shape
    assert facts["dtype"] == "uint16" and facts["voxel_size_um"] == pytest.approx(SPACING)


# --- writing safely ----------------------------------------------------------------------------

@pytest.mark.parametrize("name", ["s.tif", "s.zarr"])
def test_never_overwrites_without_permission(tmp_path, stack, name):
    save_volume(tmp_path / name, stack, SPACING)
    with pytest.raises(InputError, match="--overwrite"):
        save_volume(tmp_path / name, stack * 0, SPACING)
    np.testing.assert_array_equal(load_volume(tmp_path / name).to_numpy(), stack)
    save_volume(tmp_path / name, stack * 0, SPACING, overwrite=True)
    assert int(load_volume(tmp_path / name).to_numpy().max()) == 0
    assert _leftovers(tmp_path) == [name]


@pytest.mark.parametrize("name", ["s.tif", "s.zarr"])
def test_failed_write_leaves_nothing_behind(tmp_path, stack, name):
    def fail_late(block, block_info=None):
        if block_info[0]["chunk-location"][0] == 2:
            raise RuntimeError("disk full")
        return block

    broken = da.from_array(stack, chunks=(2, 20, 24)).map_blocks(fail_late, dtype=stack.dtype)
    with pytest.raises(RuntimeError, match="disk full"):
        save_volume(tmp_path / name, broken, SPACING)
    assert _leftovers(tmp_path) == []


# --- bad input ---------------------------------------------------------------------------------

def _truncated(tmp_path, stack, compression):
    whole = tmp_path / "whole.tif"
    tifffile.imwrite(whole, stack, imagej=True, compression=compression, metadata={"axes": "ZYX"})
    cut = tmp_path / "cut.tif"
    cut.write_bytes(whole.read_bytes()[: whole.stat().st_size // 2])
    return cut


@pytest.mark.parametrize("compression", [None, "zlib"])
def test_truncated_tiff(tmp_path, stack, compression):
    with pytest.raises(InputError, match="corrupt or truncated"):
        load_volume(_truncated(tmp_path, stack, compression))


def test_bad_files(tmp_path):
    with pytest.raises(InputError, match="does not exist"):
        load_volume(tmp_path / "missing.tif")
    (tmp_path / "photo.png").write_bytes(b"\x89PNG....")
    with pytest.raises(InputError, match=r"unsupported file type '\.png'.*\.tif.*\.zarr"):
        load_volume(tmp_path / "photo.png")
    (tmp_path / "empty.tif").write_bytes(b"")
    with pytest.raises(InputError, match="empty"):
        load_volume(tmp_path / "empty.tif")
    (tmp_path / "junk.tif").write_bytes(b"this is not a TIFF at all")
    with pytest.raises(InputError, match="corrupt"):
        describe_file(tmp_path / "junk.tif")
    (tmp_path / "folder").mkdir()
    with pytest.raises(InputError, match="is a folder"):
        load_volume(tmp_path / "folder")


def test_2d_and_rgb(tmp_path):
    tifffile.imwrite(tmp_path / "flat.tif", np.zeros((16, 16), np.uint8))
    with pytest.raises(InputError, match="2D image; this needs a 3D stack"):
        load_volume(tmp_path / "flat.tif")
    rgb = np.zeros((5, 16, 16, 3), np.uint8)
    rgb[..., 1] = 9
    tifffile.imwrite(tmp_path / "rgb.tif", rgb, photometric="rgb")
    with pytest.raises(InputError, match=r"RGB.*--channel 0\.\.2.*greyscale"):
        load_volume(tmp_path / "rgb.tif")
    green = load_volume(tmp_path / "rgb.tif", channel=1)
    assert green.shape == (5, 16, 16) and int(green.data.min()) == 9


def test_hyperstack_without_choice_and_bad_choice(tmp_path):
    data = np.zeros((2, 4, 3, 8, 8), np.uint8)
    tifffile.imwrite(tmp_path / "h.tif", data, imagej=True, metadata={"axes": "TZCYX"})
    with pytest.raises(InputError, match=r"3 channels and 2 frames.*--channel 0\.\.2.*--frame 0"):
        load_volume(tmp_path / "h.tif")
    with pytest.raises(InputError, match=r"--frame 0\.\.1"):
        load_volume(tmp_path / "h.tif", channel=0)
    with pytest.raises(InputError, match="channel 3 does not exist"):
        load_volume(tmp_path / "h.tif", channel=3, frame=0)


def test_zarr_groups_without_one_array(tmp_path, stack):
    zarr.open_group(str(tmp_path / "empty.zarr"), mode="w")
    with pytest.raises(InputError, match="without any array"):
        load_volume(tmp_path / "empty.zarr")
    group = zarr.open_group(str(tmp_path / "two.zarr"), mode="w")
    group.create_array("a", data=stack)
    group.create_array("b", data=stack)
    with pytest.raises(InputError, match="several arrays"):
        load_volume(tmp_path / "two.zarr")
    (tmp_path / "fake.zarr").mkdir()
    with pytest.raises(InputError, match="holds no Zarr data"):
        load_volume(tmp_path / "fake.zarr")


@pytest.mark.parametrize("bad", [(0, 1, 1), (1, -1, 1), (float("nan"), 1, 1), (1, 1)])
def test_bad_voxel_size(tmp_path, stack, bad):
    save_volume(tmp_path / "s.tif", stack, SPACING)
    with pytest.raises(InputError, match="voxel size"):
        load_volume(tmp_path / "s.tif", spacing=bad)
    with pytest.raises(InputError, match="voxel size"):
        save_volume(tmp_path / "t.tif", stack, bad)


def test_bad_save_requests(tmp_path, stack):
    with pytest.raises(InputError, match="2D"):
        save_volume(tmp_path / "flat.tif", stack[0], (1, 1))
    with pytest.raises(InputError, match=r"cannot save as '\.png'"):
        save_volume(tmp_path / "s.png", stack, SPACING)
    with pytest.raises(InputError, match="does not exist"):
        save_volume(tmp_path / "no" / "s.tif", stack, SPACING)
    with pytest.raises(InputError, match="kind"):
        save_volume(tmp_path / "s.tif", stack, SPACING, kind="mask")
