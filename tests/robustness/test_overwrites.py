"""Nothing is replaced silently: existing outputs need --overwrite, the raw input never is."""

from __future__ import annotations

import numpy as np
import pytest
import tifffile

from napari_vessel.cli import main


@pytest.fixture()
def stack(tmp_path):
    path = tmp_path / "raw.tif"
    data = np.random.default_rng(0).integers(0, 255, (6, 32, 32)).astype(np.uint8)
    tifffile.imwrite(path, data)
    return path, data


def test_preprocess_never_replaces_its_input(stack, capsys):
    path, data = stack
    assert main(["preprocess", str(path), str(path), "--overwrite", "--quiet"]) == 2
    assert "is the input itself" in capsys.readouterr().err
    assert np.array_equal(tifffile.imread(path), data)  # the raw data is untouched


def test_preprocess_sidecar_is_published_with_the_stack(stack, tmp_path):
    path, _ = stack
    out = tmp_path / "pre.tif"
    assert main(["preprocess", str(path), str(out), "--quiet"]) == 0
    sidecar = out.with_name(out.name + ".pipeline.json")
    assert sidecar.exists()
    assert not [p for p in tmp_path.iterdir() if p.name.startswith(".")]  # no leftovers


def test_evaluate_csv_needs_overwrite_and_is_checked_before_the_work(stack, tmp_path, capsys):
    path, data = stack
    labels = tmp_path / "labels.tif"
    tifffile.imwrite(labels, (data > 128).astype(np.uint8))
    csv = tmp_path / "scores.csv"
    csv.write_text("precious")
    args = ["evaluate", "--pred", str(labels), "--ref", str(labels), "--csv", str(csv)]
    assert main(args) == 2
    assert "--overwrite" in capsys.readouterr().err and csv.read_text() == "precious"
    assert main([*args, "--overwrite"]) == 0
    assert csv.read_text().startswith("name,")


def test_benchmark_outputs_need_overwrite(tmp_path, capsys):
    table = tmp_path / "table.md"
    table.write_text("precious")
    assert main(["benchmark", "--data", str(tmp_path / "nowhere"), "--out", str(table),
                 "--quiet"]) == 2
    assert "--overwrite" in capsys.readouterr().err and table.read_text() == "precious"
