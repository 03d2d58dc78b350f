"""``napari-vessel preprocess``: files in, file and pipeline JSON out."""

from __future__ import annotations

import argparse

import numpy as np
import pytest

from napari_vessel.commands import preprocess as command
from napari_vessel.errors import InputError
from napari_vessel.io.stacks import load_volume, save_volume
from napari_vessel.preprocess import DEFAULT_2PM, Pipeline


def _run(*argv: str) -> int:
    parser = argparse.ArgumentParser()
    command.add_arguments(parser)
    return command.run(parser.parse_args([*argv, "--quiet"]))


@pytest.fixture()
def stack_file(tmp_path):
    rng = np.random.default_rng(0)
    image = rng.poisson(30.0, (6, 32, 30)).astype(np.uint16)
    image[:, 10:14] += 500
    path = save_volume(tmp_path / "in.tif", image, (2.0, 0.5, 0.5))
    return path, image


def test_default_preset_writes_result_and_pipeline(stack_file, tmp_path):
    path, image = stack_file
    out = tmp_path / "out.tif"
    assert _run(str(path), str(out)) == 0
    result = load_volume(out)
    np.testing.assert_array_equal(result.data, DEFAULT_2PM.apply(image))
    assert result.spacing_zyx == pytest.approx((2.0, 0.5, 0.5))
    assert Pipeline.load(tmp_path / "out.tif.pipeline.json") == DEFAULT_2PM


def test_steps_set_and_pipeline_reuse(stack_file, tmp_path):
    path, image = stack_file
    first = tmp_path / "a.tif"
    _run(str(path), str(first), "--steps", "median_subtract,clahe,normalize",
         "--set", "clahe.clip_limit=0.02", "--set", "clahe.kernel_size=8")
    saved = Pipeline.load(tmp_path / "a.tif.pipeline.json")
    assert saved.names == ("median_subtract", "clahe", "normalize")
    assert saved.steps[1].clip_limit == 0.02 and saved.steps[1].kernel_size == 8
    second = tmp_path / "b.tif"
    _run(str(path), str(second), "--pipeline", str(tmp_path / "a.tif.pipeline.json"))
    np.testing.assert_array_equal(load_volume(second).data, load_volume(first).data)


def test_refuses_to_overwrite(stack_file, tmp_path):
    path, _ = stack_file
    out = tmp_path / "out.tif"
    _run(str(path), str(out))
    with pytest.raises(InputError, match="--overwrite"):
        _run(str(path), str(out))
    assert _run(str(path), str(out), "--overwrite", "--preset", "confocal") == 0


def test_bad_arguments(stack_file, tmp_path):
    path, _ = stack_file
    with pytest.raises(InputError, match="did you mean 'median3d'"):
        _run(str(path), str(tmp_path / "x.tif"), "--steps", "median_subtract,median3")
    with pytest.raises(InputError, match="STEP.PARAM=VALUE"):
        _run(str(path), str(tmp_path / "x.tif"), "--set", "clip_limit")
    with pytest.raises(InputError, match="does not exist"):
        _run(str(path), str(tmp_path / "x.tif"), "--pipeline", str(tmp_path / "none.json"))
    assert not (tmp_path / "x.tif").exists()


def test_scaling_factor_from_the_command_line(stack_file, tmp_path):
    path, image = stack_file
    out = tmp_path / "scaled.tif"
    _run(str(path), str(out), "--steps", "histogram_scale", "--set", "histogram_scale.factor=16")
    np.testing.assert_array_equal(load_volume(out).data, image.astype(np.float32) * 16)


def test_through_the_cli_dispatcher(stack_file, tmp_path, capsys):
    from napari_vessel import cli

    path, _ = stack_file
    out = tmp_path / "c.tif"
    assert cli.main(["preprocess", str(path), str(out), "--quiet"]) == 0
    assert cli.main(["preprocess", str(path), str(out), "--quiet"]) == 2
    assert "--overwrite" in capsys.readouterr().err
