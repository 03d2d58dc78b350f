"""``napari-vessel demo`` end to end on a small sample (headless)."""

from __future__ import annotations

import numpy as np
import tifffile

from napari_vessel.cli import main
from napari_vessel.manifest import read_manifest


def _demo(tmp_path, *extra):
    return main(["demo", "--out", str(tmp_path / "out"), "--shape", "12", "48", "48",
                 "--model", "frangi", "--no-view", "--quiet", *extra])


def test_demo_writes_results_manifest_and_png(tmp_path, capsys):
    assert _demo(tmp_path) == 0
    out = tmp_path / "out"
    image = tifffile.imread(out / "image.tif")
    labels = tifffile.imread(out / "labels.tif")
    prob = tifffile.imread(out / "probability.tif")
    assert image.shape == labels.shape == prob.shape == (12, 48, 48)
    assert set(np.unique(labels)) <= {0, 1}
    assert 0.0 <= prob.min() and prob.max() <= 1.0
    manifest = read_manifest(out / "manifest.json")
    assert manifest.model.name == "frangi"
    assert 0.0 <= manifest.extra["scores_vs_ground_truth"]["dice"] <= 1.0
    import imageio.v3 as iio

    png = iio.imread(out / "mip_overlay.png")
    assert png.ndim == 3 and png.shape[0] == 48 and png.shape[2] == 3
    assert "Dice" in capsys.readouterr().out


def test_demo_refuses_to_overwrite(tmp_path, capsys):
    assert _demo(tmp_path) == 0
    capsys.readouterr()
    assert _demo(tmp_path) == 2
    err = capsys.readouterr().err
    assert "--overwrite" in err and "Traceback" not in err
    assert _demo(tmp_path, "--overwrite") == 0


def test_demo_unknown_model_suggests_names(tmp_path, capsys):
    code = main(["demo", "--out", str(tmp_path / "o"), "--model", "franggi", "--no-view", "--quiet"])
    assert code == 2
    err = capsys.readouterr().err
    assert "frangi" in err
    assert not (tmp_path / "o" / "labels.tif").exists()
