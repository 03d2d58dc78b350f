"""``napari-vessel models`` and ``napari-vessel segment`` through their command modules."""

from __future__ import annotations

import argparse
import json

import numpy as np
import pytest

from napari_vessel.commands import models as models_cmd
from napari_vessel.commands import segment as segment_cmd
from napari_vessel.errors import InputError
from napari_vessel.io.stacks import load_volume, save_volume
from napari_vessel.manifest import read_manifest
from napari_vessel.models import registry
from napari_vessel.models.umis import build_umis
from napari_vessel.models.weights import save_weights

TINY = {"width": 2, "blocks": [1, 1], "strides": [[1, 2, 2], [2, 2, 2]],
        "stem_kernel": [3, 3, 3], "stem_stride": [1, 1, 1], "morph_iterations": 1}


def _args(module, argv: list[str]) -> argparse.Namespace:
    parser = argparse.ArgumentParser()
    module.add_arguments(parser)
    return parser.parse_args(argv)


@pytest.fixture
def stack(tmp_path):
    z, y, x = np.indices((8, 32, 32))
    tube = np.hypot((z - 4) * 2, y - 16) < 3.5
    data = (tube * 150 + 20 + np.random.default_rng(0).normal(0, 5, tube.shape)).astype(np.uint8)
    return save_volume(tmp_path / "stack.tif", data, (2.0, 1.0, 1.0))


@pytest.fixture
def user_model(tmp_path, monkeypatch):
    folder = tmp_path / "user-models"
    monkeypatch.setenv(registry.MODELS_ENV, str(folder))
    save_weights(build_umis(**TINY), folder / "my-umis",
                 {"architecture": "umis", "config": TINY, "kind": "unsupervised",
                  "scores": {"f1_mean": 0.812, "f1_burgess": 0.7}})
    return folder


def test_models_lists_one_line_each(capsys, user_model):
    assert models_cmd.run(_args(models_cmd, [])) == 0
    out = capsys.readouterr().out
    lines = {line.split()[1] if line.startswith("*") else line.split()[0]: line
             for line in out.splitlines()[1:] if line.strip() and "default model" not in line}
    assert {"umis", "umis-full", "frangi", "morph-acwe", "my-umis"} <= set(lines)
    assert "classical" in lines["frangi"] and "unsupervised" in lines["umis"]
    assert "420k" in lines["umis"] and "76.2M" in lines["umis-full"]
    assert "f1_mean 0.812" in lines["my-umis"] and "[user]" in lines["my-umis"]
    assert "default model:" in out


def test_models_json_and_kind_filter(capsys):
    models_cmd.run(_args(models_cmd, ["--json", "--kind", "classical"]))
    data = json.loads(capsys.readouterr().out)
    assert {m["name"] for m in data["models"]} >= {"frangi", "morph-acwe"}
    assert all(m["kind"] == "classical" for m in data["models"])


def test_segment_writes_three_files_and_never_overwrites(tmp_path, stack):
    out = tmp_path / "out"
    args = _args(segment_cmd, [str(stack), "-o", str(out), "--model", "frangi", "--quiet"])
    assert segment_cmd.run(args) == 0
    paths = segment_cmd.output_paths(stack, out)
    labels = load_volume(paths["labels"]).to_numpy()
    prob = load_volume(paths["prob"]).to_numpy()
    assert labels.shape == prob.shape == (8, 32, 32) and labels.dtype == np.uint8
    assert load_volume(paths["labels"]).spacing_zyx == (2.0, 1.0, 1.0)
    manifest = read_manifest(paths["manifest"])
    assert manifest.model.name == "frangi" and manifest.parameters.threshold == 0.5
    with pytest.raises(InputError, match="--overwrite"):
        segment_cmd.run(args)
    args = _args(segment_cmd, [str(stack), "-o", str(out), "--model", "frangi", "--quiet",
                               "--overwrite", "--threshold", "0.9"])
    assert segment_cmd.run(args) == 0
    assert read_manifest(paths["manifest"]).parameters.threshold == 0.9


def test_segment_with_a_user_network(tmp_path, stack, user_model):
    out = tmp_path / "out"
    args = _args(segment_cmd, [str(stack), "-o", str(out), "--model", "my-umis", "--device",
                               "cpu", "--tta", "--quiet"])
    assert segment_cmd.run(args) == 0
    manifest = read_manifest(segment_cmd.output_paths(stack, out)["manifest"])
    card = json.loads((user_model / "my-umis.json").read_text())
    assert manifest.model.weights_sha256 == card["sha256"]
    assert manifest.parameters.tta is True and manifest.device == "cpu"


def test_segment_bad_model_name_writes_nothing(tmp_path, stack):
    out = tmp_path / "out"
    with pytest.raises(InputError, match="did you mean 'frangi'"):
        segment_cmd.run(_args(segment_cmd, [str(stack), "-o", str(out), "--model", "frangj"]))
    assert not out.exists()


def test_segment_with_graph_writes_the_graph_beside_the_labels(tmp_path, stack):
    import networkx as nx

    out = tmp_path / "out"
    args = _args(segment_cmd, [str(stack), "-o", str(out), "--model", "frangi", "--quiet",
                               "--graph"])
    assert segment_cmd.run(args) == 0
    paths = segment_cmd.output_paths(stack, out)
    folder = out / paths["labels"].name.replace("_labels.tif", "_graph")
    assert sorted(p.name for p in folder.iterdir()) == ["graph.graphml", "nodes.csv",
                                                        "segments.csv", "summary.json"]
    summary = json.loads((folder / "summary.json").read_text())
    assert summary["manifest"]["segmentation_manifest"] == str(paths["manifest"])
    assert summary["manifest"]["voxel_size_um"] == [2.0, 1.0, 1.0]
    nx.read_graphml(folder / "graph.graphml")
    other = tmp_path / "other"
    (other / "stack_graph").mkdir(parents=True)
    (other / "stack_graph" / "mine.txt").write_text("keep")
    with pytest.raises(InputError, match="not empty"):  # refused before segmenting
        segment_cmd.run(_args(segment_cmd, [str(stack), "-o", str(other), "--model", "frangi",
                                            "--quiet", "--graph"]))
    assert sorted(p.name for p in other.rglob("*")) == ["mine.txt", "stack_graph"]
