"""The npe2 reader and writers, called directly (no Qt viewer needed)."""

from __future__ import annotations

import numpy as np
import pytest
import tifffile
import zarr

from napari_vessel._napari.reader import get_reader, read_stack
from napari_vessel._napari.writer import write_image, write_labels
from napari_vessel.errors import InputError
from napari_vessel.io.stacks import load_volume, save_volume

SPACING = (3.0, 0.5, 0.25)


@pytest.fixture
def image():
    return np.random.default_rng(1).integers(0, 1000, (5, 12, 14), dtype=np.uint16)


def test_get_reader_accepts_stacks_only(tmp_path, image):
    save_volume(tmp_path / "s.tif", image, SPACING)
    save_volume(tmp_path / "s.zarr", image, SPACING)
    tifffile.imwrite(tmp_path / "flat.tif", image[0])
    (tmp_path / "photo.png").write_bytes(b"\x89PNG")
    (tmp_path / "junk.tif").write_bytes(b"junk")
    assert get_reader(str(tmp_path / "s.tif")) is read_stack
    assert get_reader([str(tmp_path / "s.zarr")]) is read_stack
    assert get_reader(str(tmp_path / "junk.tif")) is read_stack  # reading explains the problem
    assert get_reader(str(tmp_path / "flat.tif")) is None  # 2D: left to napari's own reader
    assert get_reader(str(tmp_path / "photo.png")) is None
    assert get_reader([str(tmp_path / "s.tif")] * 2) is None


def test_image_layer_has_voxel_size_as_scale(tmp_path, image):
    save_volume(tmp_path / "vessels.ome.tif", image, SPACING)
    [(data, meta, kind)] = read_stack(str(tmp_path / "vessels.ome.tif"))
    np.testing.assert_array_equal(data, image)
    assert kind == "image" and meta["name"] == "vessels"
    assert meta["scale"] == pytest.approx(SPACING)
    assert meta["metadata"]["source"].endswith("vessels.ome.tif")
    assert meta["metadata"]["spacing_known"] is True


def test_unknown_voxel_size_is_flagged(tmp_path, image):
    tifffile.imwrite(tmp_path / "raw.tif", image, metadata=None)
    [(_, meta, _)] = read_stack(str(tmp_path / "raw.tif"))
    assert meta["scale"] == (1.0, 1.0, 1.0) and meta["metadata"]["spacing_known"] is False


def test_labels_are_recognised(tmp_path, image):
    mask = (image > 500).astype(np.uint8) * 255
    save_volume(tmp_path / "saved.zarr", image > 500, SPACING, kind="labels")
    tifffile.imwrite(tmp_path / "stack_labels.tif", image, metadata=None)
    tifffile.imwrite(tmp_path / "mask.tif", mask, metadata=None)
    for name in ("saved.zarr", "stack_labels.tif", "mask.tif"):
        [(_, _, kind)] = read_stack(str(tmp_path / name))
        assert kind == "labels", name
    [(data, _, _)] = read_stack(str(tmp_path / "saved.zarr"))
    assert hasattr(data, "dask")  # Zarr stays lazy


def test_channels_become_layers_and_frames_an_axis(tmp_path):
    data = np.arange(2 * 4 * 3 * 6 * 7, dtype=np.uint16).reshape(2, 4, 3, 6, 7)
    tifffile.imwrite(tmp_path / "h.tif", data, imagej=True, resolution=(2.0, 2.0),
                     metadata={"axes": "TZCYX", "spacing": 3.0, "unit": "um"})
    layers = read_stack(str(tmp_path / "h.tif"))
    assert [m["name"] for _, m, _ in layers] == ["h [ch0]", "h [ch1]", "h [ch2]"]
    for channel, (layer, meta, kind) in enumerate(layers):
        assert kind == "image" and meta["scale"] == pytest.approx((1.0, 3.0, 0.5, 0.5))
        np.testing.assert_array_equal(np.asarray(layer), data[:, :, channel])


@pytest.mark.parametrize("content", [b"", b"junk", None])
def test_broken_files_raise_input_error(tmp_path, content):
    path = tmp_path / ("bad.tif" if content is not None else "group.zarr")
    if content is None:
        zarr.open_group(str(path), mode="w")
    else:
        path.write_bytes(content)
    with pytest.raises(InputError):
        read_stack(str(path))


def test_napari_reports_the_message_and_keeps_layers(tmp_path, image):
    """Through napari's own open(): the error carries our message and no layer is added."""
    napari_components = pytest.importorskip("napari.components")
    import npe2

    npe2.PluginManager.instance().discover(include_npe1=False)
    viewer = napari_components.ViewerModel()
    viewer.add_image(image, name="existing")
    (tmp_path / "junk.tif").write_bytes(b"junk")
    with pytest.raises(ValueError, match="corrupt or truncated"):
        viewer.open(str(tmp_path / "junk.tif"), plugin="napari-vessel")
    assert [layer.name for layer in viewer.layers] == ["existing"]
    save_volume(tmp_path / "ok.tif", image, SPACING, kind="labels")
    viewer.open(str(tmp_path / "ok.tif"), plugin="napari-vessel")
    assert viewer.layers["ok"].scale == pytest.approx(SPACING)
    assert type(viewer.layers["ok"]).__name__ == "Labels"


@pytest.mark.parametrize("name", ["out.tif", "out.zarr"])
def test_writers_round_trip_with_scale(tmp_path, image, name):
    labels = (image > 400).astype(np.int32)
    meta = {"name": "vessels", "scale": SPACING, "metadata": {"source": "a.tif"}}
    [written] = write_labels(str(tmp_path / name), labels, meta)
    volume = load_volume(written)
    np.testing.assert_array_equal(volume.to_numpy(), labels)
    assert volume.spacing_zyx == pytest.approx(SPACING)
    assert volume.metadata["kind"] == "labels"
    assert volume.metadata["stored"]["source"] == "a.tif"
    probability = image / 1000.0
    [again] = write_image(str(tmp_path / name), probability, meta)  # the dialog asked already
    assert load_volume(again).to_numpy() == pytest.approx(probability, abs=1e-6)


def test_writer_rejects_layers_that_are_not_3d(tmp_path, image):
    with pytest.raises(InputError, match="only 3D"):
        write_image(str(tmp_path / "x.tif"), image[None], {"scale": (1, 1, 1, 1), "name": "t"})
    with pytest.raises(InputError, match="voxel size"):
        write_labels(str(tmp_path / "x.tif"), image, {"scale": (0, 1, 1)})


def test_a_dim_8bit_stack_opens_with_percentile_contrast(tmp_path):
    """99th percentile near 30: contrast 0-255 showed it nearly black."""
    import tifffile

    from napari_vessel._napari.reader import read_stack

    data = np.random.default_rng(0).integers(0, 30, (6, 64, 64)).astype(np.uint8)
    data[2, 10:12, :] = 120  # a few bright voxels
    tifffile.imwrite(tmp_path / "dim.tif", data)
    (layer_data, attributes, kind), = read_stack(str(tmp_path / "dim.tif"))
    lo, hi = attributes["contrast_limits"]
    assert kind == "image" and lo <= 1 and 25 <= hi <= 120


def test_ome_zarr_pyramid_makes_multiscale_napari_layers(tmp_path, image):
    """The reader's tuples build real napari layers (no viewer, no Qt): one multiscale layer per
    store, level 0 first, downsampling factors from the level shapes."""
    from napari.layers import Layer

    from napari_vessel.io.zarr import write_zarr

    big = np.tile(image, (1, 6, 6))  # (5, 72, 84)
    write_zarr(tmp_path / "p.zarr", big, SPACING, kind="image", pyramid=True, smallest=24)
    write_zarr(tmp_path / "l.zarr", big > 500, SPACING, kind="labels", pyramid=True, smallest=24)
    for name, kind in (("p.zarr", "image"), ("l.zarr", "labels")):
        [(data, meta, layer_type)] = read_stack(str(tmp_path / name))
        assert layer_type == kind and isinstance(data, list)
        layer = Layer.create(data, meta, layer_type)
        assert layer.multiscale and layer.scale.tolist() == list(SPACING)
        assert [tuple(s) for s in layer.level_shapes] == [(5, 72, 84), (5, 36, 42), (5, 18, 21)]
        assert layer.downsample_factors[-1].tolist() == [1.0, 4.0, 4.0]
