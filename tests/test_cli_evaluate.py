"""The ``evaluate`` command on small TIFF files."""

from __future__ import annotations

import argparse
import csv

import numpy as np
import pytest
import tifffile

from napari_vessel.commands import evaluate as cmd
from napari_vessel.errors import InputError
from napari_vessel.io import save_volume


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


def test_through_the_cli(stacks, capsys, monkeypatch):
    from napari_vessel import cli

    if "evaluate" not in cli.COMMANDS:
        monkeypatch.setattr(cli, "COMMANDS", (*cli.COMMANDS, "evaluate"))
    assert cli.main(["evaluate", "--pred", stacks["half"], "--ref", stacks["ref"]]) == 0
    assert "| half.tif" in capsys.readouterr().out
    assert cli.main(["evaluate", "--pred", stacks["half"], "--ref", stacks["ref"], stacks["ref"]]) == 2
    assert "error:" in capsys.readouterr().err
