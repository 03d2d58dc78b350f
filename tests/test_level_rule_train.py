"""`napari-vessel train --level-rule`: the rule in the card, used by `segment`, never inherited."""

from __future__ import annotations

import argparse
import json

import numpy as np
import pytest
from pairs import bar_pair

from napari_vessel.errors import InputError
from napari_vessel.models import registry
from napari_vessel.training import train as train_module
from napari_vessel.training.train import TrainConfig

tifffile = pytest.importorskip("tifffile")


def _data(folder, n: int) -> None:
    for sub in ("images", "labels"):
        (folder / sub).mkdir(parents=True)
    for i in range(n):
        pair = bar_pair(i)
        tifffile.imwrite(folder / "images" / f"v{i}.tif", (pair.image * 200).astype(np.uint8))
        tifffile.imwrite(folder / "labels" / f"v{i}.tif", pair.labels.astype(np.uint8))


def _run(argv, monkeypatch) -> None:
    from napari_vessel.commands import train as command

    monkeypatch.setattr(train_module, "TrainConfig", lambda **kw: TrainConfig(
        **{**kw, "steps": 4, "batch_size": 2, "patch_size": (4, 16, 16), "lr": 1e-2}))
    parser = argparse.ArgumentParser()
    command.add_arguments(parser)
    assert command.run(parser.parse_args(argv)) == 0


def test_calibrate_with_a_level_rule_writes_it_and_segment_uses_it(tmp_path, monkeypatch):
    from napari_vessel.inference.run import segment

    _data(tmp_path / "data", 4)
    common = ["--data", str(tmp_path / "data"), "--widths", "2,4,4,4", "--quiet"]
    _run([*common, "--out", str(tmp_path / "pre"), "--name", "pre", "--steps", "4"], monkeypatch)
    pre = json.loads((tmp_path / "pre" / "pre.json").read_text())
    assert pre.get("postprocessing") is None  # the shipped card's rule is not inherited
    models = tmp_path / "models"
    _run([*common, "--init", str(tmp_path / "pre" / "pre.safetensors"), "--calibrate-only",
          "--level-rule", "--out", str(models), "--name", "ruled"], monkeypatch)
    card = json.loads((models / "ruled.json").read_text())
    post = card["postprocessing"]
    assert post["method"] == "threshold" and post["level"] == card["threshold"]
    assert set(post["level_rule"]) >= {"intercept", "slope", "fraction_range"}
    monkeypatch.setenv(registry.MODELS_ENV, str(models))
    spec = registry.get("ruled")
    assert spec.postprocessing["level_rule"] == post["level_rule"]
    image = bar_pair(0).image.astype(np.float32)
    prob, labels, manifest = segment(image, "ruled", device="cpu", runtime="torch")
    used = manifest.parameters.postprocessing
    fraction = float((prob > 0.5).mean())
    assert used["level_from"]["fraction"] == pytest.approx(fraction, abs=1e-6)
    from napari_vessel.postprocess.level import LevelRule

    level = LevelRule.from_dict(post["level_rule"]).level_for(fraction)
    assert manifest.parameters.threshold == pytest.approx(level, abs=1e-6)
    np.testing.assert_array_equal(labels, prob > manifest.parameters.threshold)
    # the user's threshold wins over the rule
    _, _, mine = segment(image, "ruled", threshold=0.9, device="cpu", runtime="torch")
    assert mine.parameters.threshold == 0.9 and "level_from" not in mine.parameters.postprocessing


def test_a_user_card_without_postprocessing_does_not_take_the_shipped_rule(tmp_path):
    base = {"method": "threshold", "level": 0.5, "level_rule": {
        "intercept": 1.0, "slope": -3.0, "fraction_range": [0.05, 0.3]}}
    assert registry.inherited_postprocessing(base) is None
    cascade = {"method": "hysteresis", "low": 0.45, "high": 0.95}
    assert registry.inherited_postprocessing(cascade) == cascade


def test_level_rule_needs_four_volumes_and_a_plain_threshold(tmp_path, monkeypatch):
    _data(tmp_path / "data", 3)
    with pytest.raises(InputError, match="at least 4"):
        _run(["--data", str(tmp_path / "data"), "--widths", "2,4,4,4", "--quiet", "--out",
              str(tmp_path / "o"), "--level-rule"], monkeypatch)
    _data(tmp_path / "four", 4)
    with pytest.raises(InputError, match="threshold-crop"):
        _run(["--data", str(tmp_path / "four"), "--widths", "2,4,4,4", "--quiet", "--out",
              str(tmp_path / "o"), "--level-rule", "--threshold-crop", "8"], monkeypatch)
    with pytest.raises(InputError, match="needs --data"):
        _run(["--synthetic", "1", "--widths", "2,4,4,4", "--quiet", "--out", str(tmp_path / "o"),
              "--level-rule"], monkeypatch)
