"""OME-Zarr pyramids: the levels written (shapes, scales, values), read back for napari and for
the core, NGFF labels, damaged levels and atomic publishing."""

from __future__ import annotations

import json
import shutil

import numpy as np
import pytest
import zarr

from napari_vessel._napari.reader import read_stack
from napari_vessel.errors import Cancelled, InputError
from napari_vessel.io import pyramid as io_pyramid
from napari_vessel.io.pyramid import downsample, level_shape, plan_levels, write_pyramid
from napari_vessel.io.stacks import describe_file, load_volume, save_volume
from napari_vessel.io.zarr import create_zarr, mark_complete, write_zarr
from napari_vessel.progress import CancelToken


def reference(level0: np.ndarray, factor: tuple[int, int, int], method: str) -> np.ndarray:
    """Mean or max of each ``factor`` window of ``level0``, one output voxel at a time (windows
    cut short at the far edges use the voxels they have)."""
    shape = tuple(-(-s // f) for s, f in zip(level0.shape, factor, strict=True))
    out = np.zeros(shape, dtype=np.float64)
    reduce = np.mean if method == "mean" else np.max
    for index in np.ndindex(*shape):
        window = tuple(slice(i * f, (i + 1) * f) for i, f in zip(index, factor, strict=True))
        out[index] = reduce(level0[window].astype(np.float64))
    return out


def _scales(path) -> list[list[float]]:
    attrs = json.loads((path / ".zattrs").read_text())
    return [d["coordinateTransformations"][0]["scale"]
            for d in attrs["multiscales"][0]["datasets"]]


def _levels(path) -> list[np.ndarray]:
    return [np.asarray(load_volume(path, level=k, lazy=False).data)
            for k in range(describe_file(path)["details"]["levels"])]


# --- planning ------------------------------------------------------------------------------------

def test_plan_keeps_voxels_near_isotropic():
    # 2 µm slices, 0.5 µm pixels: z is kept until y/x are as coarse, then all three are halved
    assert plan_levels((64, 2048, 2048), (2.0, 0.5, 0.5)) == [(1, 2, 2), (1, 2, 2), (2, 2, 2)]
    assert plan_levels((100, 1000, 1000), (1.0, 1.0, 1.0)) == [(2, 2, 2), (2, 2, 2)]
    assert plan_levels((1, 600, 600), (1.0, 1.0, 1.0)) == [(1, 2, 2), (1, 2, 2)]  # one slice
    long = plan_levels((8, 5000, 100), (1, 1, 1), smallest=256)  # until the longer axis fits
    assert [f[0] for f in long] == [2, 2, 2, 1, 1]  # z stops at one slice
    assert plan_levels((8, 200, 100), (1, 1, 1)) == []  # already fits
    assert plan_levels((64, 2048, 2048), (1, 1, 1), max_levels=1) == [(2, 2, 2)]
    assert level_shape((9, 35, 25), (2, 2, 2)) == (5, 18, 13)
    for bad in (0, -1, 2.5, True):
        with pytest.raises(InputError, match="positive number of voxels"):
            plan_levels((8, 64, 64), (1, 1, 1), smallest=bad)


def test_downsample_handles_short_edge_windows():
    block = np.arange(3 * 5 * 7, dtype=np.float32).reshape(3, 5, 7)
    for method in ("mean", "max"):
        np.testing.assert_allclose(downsample(block, (2, 2, 2), method),
                                   reference(block, (2, 2, 2), method), rtol=1e-6)
    ints = np.array([[[1, 2]]], dtype=np.uint8)
    assert downsample(ints, (1, 1, 2), "mean").dtype == np.uint8  # rounded, same type
    with pytest.raises(InputError, match="'mean' or 'max'"):
        downsample(block, (2, 2, 2), "median")


# --- writing -------------------------------------------------------------------------------------

def test_image_levels_have_shapes_scales_and_means(tmp_path):
    image = np.random.default_rng(0).random((9, 70, 50)).astype(np.float32)
    path = write_zarr(tmp_path / "p.zarr", image, (1.0, 0.5, 0.5), kind="image", pyramid=True,
                      smallest=16)
    levels = _levels(path)
    assert [lv.shape for lv in levels] == [(9, 70, 50), (9, 35, 25), (5, 18, 13), (3, 9, 7)]
    assert _scales(path) == [[1.0, 0.5, 0.5], [1.0, 1.0, 1.0], [2.0, 2.0, 2.0], [4.0, 4.0, 4.0]]
    np.testing.assert_array_equal(levels[0], image)
    for k, factor in enumerate([(1, 2, 2), (2, 2, 2), (2, 2, 2)], start=1):  # each from the last
        np.testing.assert_allclose(levels[k], reference(levels[k - 1], factor, "mean"), rtol=1e-6)
        assert levels[k].dtype == np.float32
    attrs = json.loads((path / ".zattrs").read_text())["multiscales"][0]
    assert attrs["type"] == "mean" and attrs["name"] == "p"
    for k in range(4):  # every level is marked as holding all its chunks
        assert zarr.open_array(str(path / str(k)), mode="r").attrs["napari_vessel_chunks"]


def test_levels_equal_mean_of_level0_windows(tmp_path):
    image = np.random.default_rng(1).integers(0, 4000, (8, 64, 64)).astype(np.float32)
    path = save_volume(tmp_path / "even.zarr", image, (1, 1, 1), pyramid=True)  # fits: level 0
    assert describe_file(path)["details"]["levels"] == 1
    path = write_zarr(tmp_path / "even2.zarr", image, (1, 1, 1), kind="image", pyramid=True,
                      smallest=16)
    levels = _levels(path)
    assert [lv.shape for lv in levels] == [(8, 64, 64), (4, 32, 32), (2, 16, 16)]
    for k, total in ((1, 2), (2, 4)):  # windows nest: level k is the mean of level 0's
        np.testing.assert_allclose(levels[k], reference(image, (total,) * 3, "mean"), rtol=1e-5)


def test_labels_stay_binary_and_a_thin_vessel_survives(tmp_path):
    labels = np.zeros((8, 96, 80), dtype=bool)
    labels[3, 17, :] = True  # one voxel wide along x, at odd z and y
    labels[5, np.arange(96), np.arange(96) * 80 // 96] = True  # a thin diagonal
    path = save_volume(tmp_path / "l.zarr", labels, (1, 1, 1), kind="labels")
    assert describe_file(path)["details"]["levels"] == 1
    path = write_zarr(tmp_path / "l2.zarr", labels, (1, 1, 1), kind="labels", pyramid=True,
                      smallest=16)
    levels = _levels(path)
    assert len(levels) == 4
    total = 1
    for level in levels:
        assert set(np.unique(level)) <= {0, 1} and level.dtype == np.uint8
        np.testing.assert_array_equal(level, reference(labels, (total,) * 3, "max"))
        assert level[3 // total, 17 // total, :].all()  # the line, still whole
        total *= 2
    assert levels[1].sum() > labels[::2, ::2, ::2].sum()  # nearest-neighbour would lose it
    attrs = json.loads((path / ".zattrs").read_text())
    assert attrs["image-label"]["version"] == "0.4" and attrs["multiscales"][0]["type"] == "max"
    assert describe_file(path)["kind"] == "labels"
    [(data, meta, kind)] = read_stack(str(path))
    assert kind == "labels" and meta["multiscale"] is True and len(data) == 4


def test_integer_images_keep_their_type(tmp_path):
    image = np.random.default_rng(2).integers(0, 65535, (4, 40, 40), dtype=np.uint16)
    path = write_zarr(tmp_path / "u.zarr", image, (1, 1, 1), kind="image", pyramid=True,
                      smallest=20)
    level = _levels(path)[1]
    assert level.dtype == np.uint16
    np.testing.assert_array_equal(level, np.rint(reference(image, (2, 2, 2), "mean")))


def test_pyramid_is_written_inside_the_temporary_store(tmp_path, monkeypatch):
    image = np.ones((4, 64, 64), dtype=np.float32)
    calls = []

    def crash(block, factor, method):
        calls.append(factor)
        raise RuntimeError("killed")

    monkeypatch.setattr(io_pyramid, "downsample", crash)
    with pytest.raises(RuntimeError, match="killed"):
        write_zarr(tmp_path / "x.zarr", image, (1, 1, 1), kind="image", pyramid=True, smallest=16)
    assert calls and list(tmp_path.iterdir()) == []  # nothing published, nothing left over


def test_progress_cancel_and_a_second_pyramid(tmp_path):
    array = create_zarr(tmp_path / "c.zarr", (4, 64, 64), np.float32, (1, 1, 1), kind="image")
    array[...] = 1.0
    mark_complete(array)
    token = CancelToken()
    token.cancel()
    with pytest.raises(Cancelled):
        write_pyramid(tmp_path / "c.zarr", method="mean", smallest=16, cancel=token)
    assert describe_file(tmp_path / "c.zarr")["details"]["levels"] == 1  # none listed half-done
    seen = []
    shapes = write_pyramid(tmp_path / "c.zarr", method="mean", smallest=16,
                           progress=lambda f, m: seen.append(f))
    assert shapes == [(4, 64, 64), (2, 32, 32), (1, 16, 16)] and seen[-1] == 1.0
    with pytest.raises(InputError, match="already has 3 levels"):
        write_pyramid(tmp_path / "c.zarr", method="mean", smallest=16)


# --- reading -------------------------------------------------------------------------------------

@pytest.fixture
def pyramid(tmp_path):
    image = np.random.default_rng(3).random((8, 64, 48)).astype(np.float32)
    return write_zarr(tmp_path / "vessels.ome.zarr", image, (2.0, 0.5, 0.5), kind="image",
                      pyramid=True, smallest=16), image


def test_napari_reader_gives_a_multiscale_layer(pyramid):
    path, image = pyramid
    [(data, meta, kind)] = read_stack(str(path))
    assert kind == "image" and meta["multiscale"] is True and meta["name"] == "vessels"
    assert isinstance(data, list) and all(hasattr(level, "dask") for level in data)  # lazy
    assert [level.shape for level in data] == [(8, 64, 48), (8, 32, 24), (8, 16, 12)]
    assert meta["scale"] == (2.0, 0.5, 0.5)  # level 0's; napari scales the others by shape
    assert meta["metadata"]["level_scales_zyx"] == [(2.0, 0.5, 0.5), (2.0, 1.0, 1.0),
                                                    (2.0, 2.0, 2.0)]
    np.testing.assert_array_equal(np.asarray(data[0]), image)


def test_core_reads_level0_lazily_and_other_levels_on_request(pyramid):
    path, image = pyramid
    volume = load_volume(path)
    assert volume.is_lazy and volume.shape == image.shape
    assert volume.spacing_zyx == (2.0, 0.5, 0.5) and volume.metadata["levels"] == 3
    np.testing.assert_array_equal(volume.to_numpy(), image)
    coarse = load_volume(path, level=2)
    assert coarse.shape == (8, 16, 12) and coarse.spacing_zyx == (2.0, 2.0, 2.0)
    with pytest.raises(InputError, match=r"3 resolution levels \(0\.\.2\); level 5"):
        load_volume(path, level=5)
    save_volume(path.with_name("s.tif"), image, (1, 1, 1))
    with pytest.raises(InputError, match="only in OME-Zarr"):
        load_volume(path.with_name("s.tif"), level=1)
    with pytest.raises(InputError, match="OME-Zarr only"):
        save_volume(path.with_name("t.tif"), image, (1, 1, 1), pyramid=True)


def test_missing_or_damaged_level_names_store_and_level(pyramid):
    path, _ = pyramid
    (path / "1" / "0.0.0").unlink()  # a chunk of level 1
    with pytest.raises(InputError, match=r"vessels\.ome\.zarr \(level 1\).*chunk 1/0\.0\.0"):
        read_stack(str(path))
    (path / "1" / "0.0.0").write_bytes(b"\x02\x01garbage-not-blosc")
    [(data, _, _)] = read_stack(str(path))  # lazy: the chunk is checked when it is read
    np.asarray(data[0][:1])
    with pytest.raises(InputError, match=r"vessels\.ome\.zarr \(level 1\).*damaged"):
        np.asarray(data[1])
    shutil.rmtree(path / "2")
    for opener in (read_stack, describe_file, load_volume):
        with pytest.raises(InputError, match=r"vessels\.ome\.zarr: level 2 \(the array '2'\).*"
                                             r"missing"):
            opener(str(path))


def test_reader_multiscale_with_channels_and_frames(tmp_path):
    data = np.arange(2 * 2 * 4 * 8 * 8, dtype=np.float32).reshape(2, 2, 4, 8, 8)
    group = zarr.open_group(str(tmp_path / "ext.ome.zarr"), mode="w", zarr_format=3)
    group.create_array("s0", data=data)
    group.create_array("s1", data=data[..., ::2, ::2])
    axes = [{"name": "t", "type": "time"}, {"name": "c", "type": "channel"}] + [
        {"name": n, "type": "space", "unit": "micrometer"} for n in "zyx"]
    group.attrs["ome"] = {"version": "0.5", "multiscales": [{"axes": axes, "datasets": [
        {"path": "s0", "coordinateTransformations": [
            {"type": "scale", "scale": [1.0, 1.0, 3.0, 0.4, 0.4]}]},
        {"path": "s1", "coordinateTransformations": [
            {"type": "scale", "scale": [1.0, 1.0, 3.0, 0.8, 0.8]}]}]}]}
    layers = read_stack(str(tmp_path / "ext.ome.zarr"))
    assert len(layers) == 2  # one layer per channel
    data1, meta, _ = layers[1]
    assert [level.shape for level in data1] == [(2, 4, 8, 8), (2, 4, 4, 4)]
    assert meta["scale"] == (1.0, 3.0, 0.4, 0.4) and meta["multiscale"] is True
    np.testing.assert_array_equal(np.asarray(data1[1][1]), data[1, 1, :, ::2, ::2])
