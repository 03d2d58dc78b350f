"""Bad input gets the message that names its real problem."""

from __future__ import annotations

import numpy as np
import pytest
import tifffile

from napari_vessel.cli import main
from napari_vessel.errors import InputError
from napari_vessel.inference.run import segment


@pytest.mark.parametrize("value, dtype, shown", [(7, np.uint8, "7"), (1e-298, np.float64, "1e-298"),
                                                 (0, np.uint8, "all zero")])
def test_a_constant_stack_is_named_by_its_raw_value(value, dtype, shown):
    with pytest.raises(InputError, match=shown):
        segment(np.full((4, 32, 32), value, dtype))


def test_segment_takes_the_frame_it_asks_for(tmp_path, capsys):
    series = np.random.default_rng(0).integers(0, 255, (3, 6, 32, 32)).astype(np.uint8)
    path = tmp_path / "series.tif"
    tifffile.imwrite(path, series, imagej=True, metadata={"axes": "TZYX"})
    assert main(["segment", str(path), "-o", str(tmp_path / "out"), "--quiet"]) == 2
    assert "--frame" in capsys.readouterr().err
    assert main(["segment", str(path), "-o", str(tmp_path / "out"), "--frame", "1",
                 "--quiet"]) == 0
    labels = tifffile.imread(tmp_path / "out" / "series_labels.tif")
    assert labels.shape == (6, 32, 32)


def test_a_tiff_header_that_declares_more_planes_than_the_file_holds_is_refused(tmp_path):
    """8 real planes, 100,000 declared: tifffile would zero-pad the rest (hours of segmenting
    nothing)."""
    from napari_vessel.io.stacks import load_volume

    path = tmp_path / "lie.ome.tif"
    tifffile.imwrite(path, np.ones((8, 16, 16), np.uint8), ome=True, metadata={"axes": "ZYX"})
    with tifffile.TiffFile(path) as tif:
        xml = tif.ome_metadata
    tifffile.tiffcomment(path, comment=xml.replace('SizeZ="8"', 'SizeZ="100000"').encode())
    with pytest.raises(InputError, match="missing"):
        load_volume(path)


def test_a_tiff_with_pages_of_different_sizes_is_refused_not_cut(tmp_path):
    from napari_vessel.io.stacks import load_volume

    path = tmp_path / "mixed.tif"
    with tifffile.TiffWriter(path) as writer:
        for i in range(4):
            writer.write(np.full((32, 32), i, np.uint8), metadata=None)
        writer.write(np.ones((16, 16), np.uint8), metadata=None)  # a page that would be lost
    with pytest.raises(InputError, match="different sizes"):
        load_volume(path)


@pytest.mark.parametrize("info", ['{"napari_vessel": [1, 2]}',
                                  '{"napari_vessel": {"kind": 5, "metadata": "text"}}',
                                  '{"napari_vessel": {"metadata": {"spacing_known": [1]}}}'])
def test_stored_metadata_of_the_wrong_type_is_ignored_not_a_crash(tmp_path, info):
    from napari_vessel.io.stacks import load_volume

    path = tmp_path / "odd.tif"
    tifffile.imwrite(path, np.ones((4, 16, 16), np.uint8), imagej=True,
                     metadata={"axes": "ZYX", "Info": info})
    volume = load_volume(path)
    assert volume.shape == (4, 16, 16) and isinstance(volume.metadata["stored"], dict)


def test_hostile_pipeline_json_gets_a_message():
    from napari_vessel.preprocess import Pipeline

    with pytest.raises(InputError, match="nested too deeply"):
        Pipeline.from_json("[" * 100_000 + "]" * 100_000)
    text = ('{"format": "napari-vessel-preprocess", "version": 1, '
            '"steps": [{"name": "median3d", "size": true}]}')
    with pytest.raises(InputError, match="must be a number"):
        Pipeline.from_json(text)


@pytest.mark.parametrize("meta", ["[1, 2]", '{"image_path": "%s", "shape": "big"}',
                                  '{"image_path": "%s", "saved_at": "yesterday"}'])
def test_a_malformed_recovery_file_is_skipped_with_a_warning(tmp_path, meta):
    import json

    from napari_vessel.refine.autosave import RECOVERY_SUFFIX, find_recovery, load_recovery

    image = tmp_path / "stack.tif"
    image.write_bytes(b"")
    text = meta % json.dumps(str(image.resolve()))[1:-1] if "%s" in meta else meta
    bad = tmp_path / f"stack-1{RECOVERY_SUFFIX}"
    np.savez(bad, labels=np.zeros((2, 4, 4), np.uint8), metadata=np.array(text))
    with pytest.warns(UserWarning, match="skipping unreadable recovery file"):
        assert find_recovery(image, folder=tmp_path) == []
    with pytest.raises(InputError, match="discard it"):
        load_recovery(bad)


def test_evaluate_refuses_a_probability_map_outside_zero_one(tmp_path, capsys):
    ref = tmp_path / "ref.tif"
    tifffile.imwrite(ref, np.zeros((6, 16, 16), np.uint8))
    image = tmp_path / "image.tif"
    tifffile.imwrite(image, np.full((6, 16, 16), 200, np.uint8))
    assert main(["evaluate", "--prob", str(image), "--ref", str(ref)]) == 2
    assert "outside [0, 1]" in capsys.readouterr().err


def test_out_of_memory_is_not_called_corruption(tmp_path, monkeypatch):
    from napari_vessel.io.stacks import load_volume

    path = tmp_path / "big.tif"
    tifffile.imwrite(path, np.ones((6, 16, 16), np.uint8))

    def no_memory(self, *args, **kwargs):
        raise MemoryError

    monkeypatch.setattr(tifffile.TiffPageSeries, "asarray", no_memory)
    with pytest.raises(InputError, match="not enough memory") as err:
        load_volume(path, lazy=False)
    assert "corrupt" not in str(err.value)
