"""The ``info`` and ``data`` subcommands: output, exit codes and one-line errors."""

from __future__ import annotations

import json
import shutil

import numpy as np
import pytest
import tifffile
import zarr

from napari_vessel import cli
from napari_vessel.data.datasets import VESSELNN
from napari_vessel.io.stacks import save_volume

NAME = "burgess2014_noisySparseVessels"


@pytest.fixture
def hyperstack(tmp_path):
    path = tmp_path / "hyper.tif"
    tifffile.imwrite(path, np.zeros((2, 4, 3, 8, 9), np.uint8), imagej=True,
                     resolution=(2.0, 2.0), metadata={"axes": "TZCYX", "spacing": 3.0,
                                                      "unit": "um"})
    return path


def test_info_lists_what_the_file_holds(hyperstack, capsys):
    assert cli.main(["info", str(hyperstack)]) == 0
    out = capsys.readouterr().out
    assert "ImageJ hyperstack" in out and "2 × 4 × 3 × 8 × 9" in out
    assert "channels:    3" in out and "--channel 0..2" in out and "--frame 0..1" in out
    assert "3 × 0.5 × 0.5 µm" in out


def test_info_with_choice_and_json(hyperstack, capsys):
    assert cli.main(["info", str(hyperstack), "--channel", "2", "--frame", "1"]) == 0
    assert "4 × 8 × 9 (z × y × x)  for channel 2, frame 1" in capsys.readouterr().out
    assert cli.main(["info", str(hyperstack), "--json"]) == 0
    facts = json.loads(capsys.readouterr().out)
    assert facts["channels"] == 3 and facts["voxel_size_um"] == [3.0, 0.5, 0.5]


def test_info_unknown_voxel_size_and_2d(tmp_path, capsys):
    tifffile.imwrite(tmp_path / "plain.tif", np.zeros((5, 8, 8), np.uint8), metadata=None)
    assert cli.main(["info", str(tmp_path / "plain.tif")]) == 0
    assert "? × ? × ? µm" in capsys.readouterr().out
    tifffile.imwrite(tmp_path / "flat.tif", np.zeros((8, 8), np.uint8))
    assert cli.main(["info", str(tmp_path / "flat.tif")]) == 0
    assert "2D image" in capsys.readouterr().out


def _bad_inputs(tmp_path):
    (tmp_path / "empty.tif").write_bytes(b"")
    (tmp_path / "junk.tif").write_bytes(b"II*\x00garbage")
    (tmp_path / "photo.png").write_bytes(b"\x89PNG")
    whole = tmp_path / "whole.tif"
    save_volume(whole, np.arange(8 * 64 * 64, dtype=np.uint16).reshape(8, 64, 64), (1, 1, 1))
    (tmp_path / "cut.tif").write_bytes(whole.read_bytes()[: whole.stat().st_size // 2])
    tifffile.imwrite(tmp_path / "flat.tif", np.zeros((8, 8), np.uint8))
    tifffile.imwrite(tmp_path / "rgb.tif", np.zeros((4, 8, 8, 3), np.uint8), photometric="rgb")
    tifffile.imwrite(tmp_path / "h.tif", np.zeros((2, 4, 3, 8, 8), np.uint8), imagej=True,
                     metadata={"axes": "TZCYX"})
    zarr.open_group(str(tmp_path / "group.zarr"), mode="w")
    return {
        "missing": (["missing.tif"], "does not exist"),
        "extension": (["photo.png"], "unsupported file type"),
        "empty": (["empty.tif"], "empty"),
        "corrupt": (["junk.tif"], "corrupt or truncated"),
        "truncated": (["cut.tif"], "corrupt or truncated"),
        "2d": (["flat.tif", "--channel", "0"], "2D image"),
        "rgb": (["rgb.tif", "--frame", "0"], "RGB"),
        "5d": (["h.tif", "--frame", "0"], "--channel 0..2"),
        "channel": (["h.tif", "--channel", "7", "--frame", "0"], "channel 7 does not exist"),
        "zarr": (["group.zarr"], "without any array"),
    }


@pytest.mark.parametrize("case", ["missing", "extension", "empty", "corrupt", "truncated", "2d",
                                  "rgb", "5d", "channel", "zarr"])
def test_info_bad_input_is_one_line_without_traceback(tmp_path, capsys, case):
    args, message = _bad_inputs(tmp_path)[case]
    args = [str(tmp_path / args[0]), *args[1:]]
    assert cli.main(["info", *args]) == 2
    err = capsys.readouterr().err.strip()
    assert err.startswith("napari-vessel info: error:") and message in err
    assert "Traceback" not in err and len(err.splitlines()) == 1


def _mirror(vesselnn_dir, root, tamper=False):
    for item in (f for f in VESSELNN if f.name == NAME):
        target = root / item.local
        target.parent.mkdir(parents=True, exist_ok=True)
        shutil.copyfile(vesselnn_dir / item.local, target)
        if tamper and item.kind == "image":
            target.write_bytes(target.read_bytes()[:-10])
    return root


@pytest.mark.realdata
def test_data_copies_and_checks_a_local_copy(vesselnn_dir, tmp_path, capsys):
    source = _mirror(vesselnn_dir, tmp_path / "copy")
    dest = tmp_path / "dest"
    argv = ["data", "--dest", str(dest), "--source", source.as_uri(), "--only", NAME, "--quiet"]
    assert cli.main(argv) == 0
    out = capsys.readouterr().out
    assert f"1 image/label pairs in {dest}" in out and NAME in out
    assert (dest / "images" / f"{NAME}.tif").is_file()
    assert (dest / "labels" / f"{NAME}.tif").is_file()


@pytest.mark.realdata
def test_data_rejects_a_tampered_file(vesselnn_dir, tmp_path, capsys):
    source = _mirror(vesselnn_dir, tmp_path / "copy", tamper=True)
    argv = ["data", "--dest", str(tmp_path / "dest"), "--source", str(source), "--only", NAME,
            "--quiet"]
    assert cli.main(argv) == 2
    err = capsys.readouterr().err
    assert "SHA256" in err and "Traceback" not in err
    assert not (tmp_path / "dest" / "images" / f"{NAME}.tif").exists()


def test_data_bad_source(tmp_path, capsys):
    argv = ["data", "--dest", str(tmp_path / "d"), "--source", str(tmp_path / "nope"), "--quiet"]
    assert cli.main(argv) == 2
    assert "does not exist" in capsys.readouterr().err
