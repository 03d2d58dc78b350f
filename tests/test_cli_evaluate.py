"""The ``evaluate`` command on small TIFF files."""

from __future__ import annotations

import argparse
import csv

import numpy as np
import pytest
import tifffile

from napari_vessel.commands import evaluate as cmd
from napari_vessel.errors import InputError
from napari_vessel.graph import GRAPH_COLUMNS
from napari_vessel.io.stacks import save_volume


def parse(argv: list[str]) -> argparse.Namespace:
    parser = argparse.ArgumentParser()
    cmd.add_arguments(parser)
    return parser.parse_args(argv)


@pytest.fixture
def stacks(tmp_path):
    ref = np.zeros((3, 6, 12), dtype=np.uint8)
    ref[1, 2:4, 1:11] = 1
    half = ref.copy()
    half[:, :, 6:] = 0
    prob = np.where(ref > 0, 0.8, 0.2).astype(np.float32)
    paths = {
        "ref": save_volume(tmp_path / "ref.tif", ref * 255, (2, 1, 1), kind="labels"),
        "same": save_volume(tmp_path / "same.tif", ref, (2, 1, 1), kind="labels"),
        "half": save_volume(tmp_path / "half.tif", half, (2, 1, 1), kind="labels"),
        "prob": save_volume(tmp_path / "prob.tif", prob, (2, 1, 1)),
    }
    tifffile.imwrite(tmp_path / "plain_ref.tif", ref, photometric="minisblack")  # no voxel size
    paths["plain_ref"] = tmp_path / "plain_ref.tif"
    return {k: str(v) for k, v in paths.items()}


def test_table_with_mean_row_and_csv(stacks, tmp_path, capsys):
    out = tmp_path / "scores.csv"
    args = parse(["--pred", stacks["same"], stacks["half"], "--ref", stacks["ref"], stacks["ref"],
                  "--prob", stacks["prob"], stacks["prob"], "--csv", str(out)])
    assert cmd.run(args) == 0
    lines = capsys.readouterr().out.splitlines()
    assert lines[0].startswith("| name") and "AP" in lines[0] and "HD95" in lines[0]
    assert lines[2].startswith("| same.tif") and "1.000" in lines[2]
    assert lines[3].startswith("| half.tif")
    assert lines[4].startswith("| mean")
    assert "HD95 in µm." in lines
    with open(out, newline="") as handle:
        rows = list(csv.DictReader(handle))
    assert [r["name"] for r in rows] == ["same.tif", "half.tif", "mean"]
    assert float(rows[0]["dice"]) == 1.0
    assert float(rows[1]["sensitivity"]) == pytest.approx(0.5)
    assert float(rows[1]["precision"]) == 1.0
    assert float(rows[2]["dice"]) == pytest.approx((1 + 2 * 0.5 / 1.5) / 2)


def test_probability_only_with_threshold(stacks, capsys):
    assert cmd.run(parse(["--prob", stacks["prob"], "--ref", stacks["ref"], "--threshold", "0.5"])) == 0
    out = capsys.readouterr().out
    assert "| prob.tif" in out and "mean" not in out
    row = out.splitlines()[2]
    assert row.count("1.000") >= 8  # prob > 0.5 is exactly the reference


def test_spacing_unknown_and_overridden(stacks, capsys):
    cmd.run(parse(["--pred", stacks["half"], "--ref", stacks["plain_ref"]]))
    assert "HD95 in voxels" in capsys.readouterr().out
    cmd.run(parse(["--pred", stacks["half"], "--ref", stacks["plain_ref"], "--spacing", "2", "1", "1"]))
    assert "HD95 in µm." in capsys.readouterr().out


def test_bad_input(stacks, tmp_path):
    with pytest.raises(InputError, match="after --ref"):
        cmd.run(parse(["--pred", stacks["same"], stacks["half"], "--ref", stacks["ref"]]))
    with pytest.raises(InputError, match="--pred .* or --prob"):
        cmd.run(parse(["--ref", stacks["ref"]]))
    with pytest.raises(InputError, match="probability map"):
        cmd.run(parse(["--pred", stacks["prob"], "--ref", stacks["ref"]]))
    other = save_volume(tmp_path / "other.tif", np.zeros((3, 6, 11), np.uint8), (2, 1, 1))
    with pytest.raises(InputError, match="differ in shape"):
        cmd.run(parse(["--pred", str(other), "--ref", stacks["ref"]]))
    with pytest.raises(InputError, match="folder .* does not exist"):
        cmd.run(parse(["--pred", stacks["same"], "--ref", stacks["ref"],
                       "--csv", str(tmp_path / "no" / "x.csv")]))
    with pytest.raises(InputError):
        cmd.run(parse(["--pred", str(tmp_path / "missing.tif"), "--ref", stacks["ref"]]))


def test_through_the_cli(stacks, capsys):
    from napari_vessel import cli

    assert cli.main(["evaluate", "--pred", stacks["half"], "--ref", stacks["ref"]]) == 0
    assert "| half.tif" in capsys.readouterr().out
    assert cli.main(["evaluate", "--pred", stacks["half"], "--ref", stacks["ref"], stacks["ref"]]) == 2
    assert "error:" in capsys.readouterr().err


@pytest.fixture(scope="module")
def phantom_stacks(tmp_path_factory):
    """A small phantom's labels, the same with half of the stack erased, and a plain TIFF."""
    from napari_vessel.data.phantom import make_phantom

    folder = tmp_path_factory.mktemp("graph")
    ph = make_phantom((24, 96, 96), seed=0, spacing_zyx=(2.0, 1.0, 1.0), noise=False)
    labels = ph.labels
    half = labels.copy()
    half[:, :, 48:] = 0
    prob = np.where(labels > 0, 0.9, 0.1).astype(np.float32)
    paths = {
        "ref": save_volume(folder / "ref.tif", labels, (2, 1, 1), kind="labels"),
        "same": save_volume(folder / "same.tif", labels, (2, 1, 1), kind="labels"),
        "half": save_volume(folder / "half.tif", half, (2, 1, 1), kind="labels"),
        "empty": save_volume(folder / "empty.tif", np.zeros_like(labels), (2, 1, 1),
                             kind="labels"),
        "prob": save_volume(folder / "prob.tif", prob, (2, 1, 1)),
    }
    tifffile.imwrite(folder / "plain_ref.tif", labels, photometric="minisblack")
    paths["plain_ref"] = folder / "plain_ref.tif"
    return {k: str(v) for k, v in paths.items()}


def _graph_csv(phantom_stacks, tmp_path, argv):
    out = tmp_path / "graph.csv"
    assert cmd.run(parse([*argv, "--graph", "--csv", str(out), "--overwrite"])) == 0
    with open(out, newline="") as handle:
        return list(csv.DictReader(handle))


def test_graph_columns_self_and_half(phantom_stacks, tmp_path, capsys):
    rows = _graph_csv(phantom_stacks, tmp_path,
                      ["--pred", phantom_stacks["same"], phantom_stacks["half"],
                       "--ref", phantom_stacks["ref"], phantom_stacks["ref"]])
    captured = capsys.readouterr()
    header = captured.out.splitlines()[0]
    for column in GRAPH_COLUMNS:
        assert column in header
        assert column in rows[0]
    assert "lc: length correlation" in captured.out and "in µm." in captured.out
    same, half, mean = rows
    assert [r["name"] for r in rows] == ["same.tif", "half.tif", "mean"]
    assert float(same["lc"]) == 1.0
    for column in GRAPH_COLUMNS[1:]:
        assert float(same[column]) == 0.0
    assert 0.0 < float(half["lc"]) < 0.9
    assert float(half["d_total_length_um"]) < 0
    assert int(half["d_n_segments"]) < 0 and int(half["d_n_junctions"]) < 0
    assert float(mean["lc"]) == pytest.approx((1.0 + float(half["lc"])) / 2)


def test_graph_empty_prediction_and_probability(phantom_stacks, tmp_path, capsys):
    rows = _graph_csv(phantom_stacks, tmp_path,
                      ["--pred", phantom_stacks["empty"], "--ref", phantom_stacks["ref"]])
    assert float(rows[0]["lc"]) == 0.0  # no centreline of the prediction inside the reference
    assert float(rows[0]["d_total_length_um"]) < 0
    assert rows[0]["d_mean_diameter_um"] in ("", "nan")  # no centreline: no diameter
    assert "no vessel" in capsys.readouterr().err
    rows = _graph_csv(phantom_stacks, tmp_path,
                      ["--pred", phantom_stacks["empty"], "--ref", phantom_stacks["empty"]])
    assert float(rows[0]["lc"]) == 1.0  # two empty masks: the rule of the metrics
    # a probability map alone is thresholded (prob > --threshold, default 0.5) for the graph too
    rows = _graph_csv(phantom_stacks, tmp_path,
                      ["--prob", phantom_stacks["prob"], "--ref", phantom_stacks["ref"]])
    assert float(rows[0]["lc"]) == 1.0 and float(rows[0]["d_n_segments"]) == 0
    rows = _graph_csv(phantom_stacks, tmp_path,
                      ["--prob", phantom_stacks["prob"], "--ref", phantom_stacks["ref"],
                       "--threshold", "0.95"])
    assert float(rows[0]["lc"]) == 0.0


def test_graph_bad_input_and_unknown_spacing(phantom_stacks, tmp_path, capsys):
    with pytest.raises(InputError, match="probability map"):
        cmd.run(parse(["--pred", phantom_stacks["prob"], "--ref", phantom_stacks["ref"],
                       "--graph"]))
    other = save_volume(tmp_path / "other.tif", np.zeros((24, 96, 95), np.uint8), (2, 1, 1))
    with pytest.raises(InputError, match="differ in shape"):
        cmd.run(parse(["--pred", str(other), "--ref", phantom_stacks["ref"], "--graph"]))
    capsys.readouterr()
    rows = _graph_csv(phantom_stacks, tmp_path,
                      ["--pred", phantom_stacks["half"], "--ref", phantom_stacks["plain_ref"]])
    captured = capsys.readouterr()
    warnings = [line for line in captured.err.splitlines() if "voxel size" in line]
    assert len(warnings) == 1 and "1 × 1 × 1 µm" in warnings[0]
    assert "1 µm voxels where the voxel size is unknown" in captured.out
    at_1um = float(rows[0]["d_total_length_um"])
    rows = _graph_csv(phantom_stacks, tmp_path,
                      ["--pred", phantom_stacks["half"], "--ref", phantom_stacks["plain_ref"],
                       "--spacing", "2", "1", "1"])
    assert "voxel size" not in capsys.readouterr().err
    assert float(rows[0]["d_total_length_um"]) != pytest.approx(at_1um, rel=0.01)
