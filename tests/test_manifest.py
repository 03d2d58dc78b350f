"""The run manifest as typed data: JSON round trips, validation, and the files ``segment`` writes."""

from __future__ import annotations

import argparse
import copy
import json
from dataclasses import FrozenInstanceError, replace

import numpy as np
import pytest

from napari_vessel.commands import segment as segment_cmd
from napari_vessel.errors import InputError
from napari_vessel.inference.run import segment
from napari_vessel.io.stacks import save_volume
from napari_vessel.manifest import (
    BatchInfo,
    OutOfCoreInfo,
    PreviewInfo,
    RunManifest,
    RunParameters,
    Timing,
    read_manifest,
)
from napari_vessel.runtime import RuntimeInfo

#: A manifest as ``segment`` wrote it before it was typed (keys and nesting of the JSON file).
SAVED = {
    "model": {"name": "tvnet", "kind": "supervised", "architecture": "tvnet",
              "source": "builtin", "weights_sha256": "ab" * 32, "parent": None,
              "config": {"width": 2, "strides": [[1, 2, 2], [2, 2, 2]]}},
    "input": {"source": "/data/a.tif", "shape": [12, 80, 72], "dtype": "uint16",
              "spacing_zyx": [2.0, 1.0, 1.0], "spacing_known": True},
    "preprocessing": {"steps": [{"name": "minmax", "note": "stretch to [0, 1]"}]},
    "parameters": {"threshold": 0.45, "min_size": 64,
                   "postprocessing": {"method": "hysteresis", "low": 0.45, "high": 0.95,
                                      "min_size": 64, "fill_holes": True},
                   "overlap": 0.25, "blending": "gaussian", "tta": False,
                   "patch_size_zyx": [32, 128, 128], "batch_size": None, "preprocess": True},
    "device": "cpu",
    "runtime": {"name": "onnx", "reason": "ONNX export cached", "precision": "fp32",
                "threads": 2},
    "cpu": {"name": "Some CPU", "instructions": ["avx2", "avx512f"]},
    "versions": {"napari_vessel": "0.5.0", "python": "3.11.9", "torch": None, "numpy": "2.1.0",
                 "scipy": "1.14.0", "scikit_image": "0.24.0", "platform": "Linux"},
    "timing": {"preprocess_s": 0.012, "predict_s": 1.5, "postprocess_s": 0.2, "pyramid_s": 0.1},
    "created": "2026-12-07T17:00:00+0000",
    "out_of_core": {"block_shape_zyx": [8, 64, 64], "blocks": [2, 2, 2], "patches": 24,
                    "patch_predictions_per_patch": 1.0,
                    "postprocessing_steps": ["hysteresis", "min_size"],
                    "postprocessing_skipped": [],
                    "pyramid_levels_zyx": [[12, 80, 72], [12, 40, 36]],
                    "pyramid_methods": {"prob": "mean", "labels": "max"}},
    "outputs": {"prob": "/out/a_prob.zarr", "labels": "/out/a_labels.zarr",
                "manifest": "/out/a_manifest.json"},
    "batch": {"settings": {"model": "tvnet", "threshold": None, "channel": None, "frame": None,
                           "zarr": True},
              "worker": "tcp://127.0.0.1:1234", "threads": 2, "voxels": 69120,
              "out_of_core": True},
    "command": None,
    "scores_vs_ground_truth": {"dice": 0.8},
}


def _saved(**changes) -> dict:
    data = copy.deepcopy(SAVED)
    for path, value in changes.items():
        *parents, key = path.split("__")
        target = data
        for parent in parents:
            target = target[parent]
        if value is KeyError:
            del target[key]
        else:
            target[key] = value
    return data


def test_the_json_form_is_the_saved_one_and_round_trips():
    manifest = RunManifest.from_dict(SAVED)
    assert manifest.to_dict() == SAVED
    assert list(manifest.to_dict()) == list(SAVED)  # same keys, same order
    assert RunManifest.from_dict(manifest.to_dict()) == manifest
    assert RunManifest.from_dict(json.loads(json.dumps(manifest.to_dict()))) == manifest
    # typed attributes where the package reads
    assert manifest.model.name == "tvnet" and manifest.parameters.threshold == 0.45
    assert manifest.input.spacing_zyx == (2.0, 1.0, 1.0) and manifest.input.shape == (12, 80, 72)
    assert manifest.runtime == RuntimeInfo("onnx", "ONNX export cached", threads=2)
    assert manifest.timing.total_s == pytest.approx(1.812)
    assert manifest.out_of_core.blocks == (2, 2, 2)
    assert manifest.batch.settings["zarr"] is True and manifest.batch.seconds is None
    assert manifest.extra == {"command": None, "scores_vs_ground_truth": {"dice": 0.8}}
    with pytest.raises(FrozenInstanceError):
        manifest.device = "cuda"  # type: ignore[misc]


def test_optional_parts_are_left_out_and_can_be_added():
    core = _saved(out_of_core=KeyError, outputs=KeyError, batch=KeyError, command=KeyError,
                  scores_vs_ground_truth=KeyError, timing__pyramid_s=KeyError, runtime=None,
                  cpu=None)
    manifest = RunManifest.from_dict(core)
    assert manifest.to_dict() == core and manifest.out_of_core is None
    assert manifest.timing.pyramid_s is None and "pyramid_s" not in manifest.to_dict()["timing"]
    preview = PreviewInfo(z=7, read_zyx=((3, 12), (6, 34), (1, 29)),
                          shown_zyx=((7, 8), (10, 30), (5, 25)))
    more = manifest.updated({"preview": preview.to_dict(), "command": ["napari-vessel"],
                             "batch": BatchInfo(settings={"model": "tvnet"}, worker="w",
                                                threads=1, voxels=8, seconds=0.5)})
    assert more.preview == preview and more.extra == {"command": ["napari-vessel"]}
    assert more.to_dict()["preview"] == {"z": 7, "read_zyx": [[3, 12], [6, 34], [1, 29]],
                                         "shown_zyx": [[7, 8], [10, 30], [5, 25]]}
    assert more.to_dict()["batch"] == {"settings": {"model": "tvnet"}, "worker": "w",
                                       "threads": 1, "seconds": 0.5, "voxels": 8}
    assert RunManifest.from_dict(more.to_dict()) == more
    assert manifest.preview is None  # the original is unchanged
    relabelled = replace(manifest, parameters=replace(manifest.parameters, threshold=0.7))
    assert relabelled.to_dict()["parameters"]["threshold"] == 0.7


@pytest.mark.parametrize(("data", "message"), [
    (_saved(model=KeyError), "missing field.*model"),
    (_saved(parameters__threshold=1.5), "parameters.threshold"),
    (_saved(parameters__min_size=-1), "parameters.min_size"),
    (_saved(parameters__tta="yes"), "parameters.tta"),
    (_saved(parameters__patch_size_zyx=[0, 128, 128]), "parameters.patch_size_zyx"),
    (_saved(parameters__batch_size=True), "parameters.batch_size"),
    (_saved(input__shape=[80, 72]), "input.shape"),
    (_saved(input__spacing_zyx=[0.0, 1.0, 1.0]), "input.spacing_zyx"),
    (_saved(model__name=""), "model.name"),
    (_saved(model__config=[1, 2]), "model.config"),
    (_saved(timing__predict_s=KeyError), "timing: missing field.*predict_s"),
    (_saved(timing__predict_s=-1.0), "timing.predict_s"),
    (_saved(timing__gpu_s=1.0), "unknown field.*gpu_s"),
    (_saved(runtime={"name": "onnx"}), "runtime"),
    (_saved(versions__numpy=2), "versions.numpy"),
    (_saved(out_of_core__blocks=[2, 2]), "out_of_core.blocks"),
    (_saved(batch__threads=0), "batch.threads"),
    (_saved(batch__vessel_fraction=2.0), "batch.vessel_fraction"),
    (_saved(outputs={"labels": 3}), "outputs"),
    (_saved(device=None), "device"),
    ([SAVED], "JSON object"),
])
def test_a_bad_or_missing_field_is_named(data, message):
    with pytest.raises(InputError, match=message):
        RunManifest.from_dict(data)


def test_the_parts_check_their_own_values():
    with pytest.raises(InputError, match="parameters.overlap"):
        RunParameters(threshold=0.5, min_size=0, postprocessing={}, overlap=1.5,
                      blending="gaussian", tta=False, patch_size_zyx=(1, 8, 8), batch_size=None,
                      preprocess=True)
    with pytest.raises(InputError, match="preview.read_zyx"):
        PreviewInfo(z=0, read_zyx=((4, 2), (0, 8), (0, 8)), shown_zyx=((0, 1), (0, 8), (0, 8)))
    with pytest.raises(InputError, match="out_of_core.patches"):
        OutOfCoreInfo(block_shape_zyx=(8, 8, 8), blocks=(1, 1, 1), patches=-1,
                      patch_predictions_per_patch=1.0, postprocessing_steps=(),
                      postprocessing_skipped=(), pyramid_levels_zyx=(), pyramid_methods={})
    assert Timing(preprocess_s=1, predict_s=2, postprocess_s=3).to_dict() == {
        "preprocess_s": 1.0, "predict_s": 2.0, "postprocess_s": 3.0}
    manifest = RunManifest.from_dict(SAVED)
    with pytest.raises(InputError, match="outputs are typed fields"):
        replace(manifest, extra={"outputs": {}})


def test_segment_returns_a_typed_manifest_that_round_trips():
    data = np.random.default_rng(0).random((8, 24, 24)).astype(np.float32)
    _, _, manifest = segment(data, "frangi", spacing_zyx=(2, 1, 1), threshold=0.4)
    assert isinstance(manifest, RunManifest)
    assert manifest.model.name == "frangi" and manifest.model.kind == "classical"
    assert manifest.parameters.threshold == 0.4 and manifest.input.spacing_zyx == (2.0, 1.0, 1.0)
    assert RunManifest.from_dict(manifest.to_dict()) == manifest
    assert RunManifest.from_dict(json.loads(json.dumps(manifest.to_dict()))) == manifest


def test_a_manifest_written_by_the_segment_command_reads_back(tmp_path):
    z, y, x = np.indices((8, 32, 32))
    tube = np.hypot((z - 4) * 2, y - 16) < 3.5
    stack = save_volume(tmp_path / "stack.tif", (tube * 150 + 20).astype(np.uint8),
                        (2.0, 1.0, 1.0))
    parser = argparse.ArgumentParser()
    segment_cmd.add_arguments(parser)
    out = tmp_path / "out"
    assert segment_cmd.run(parser.parse_args([str(stack), "-o", str(out), "--model", "frangi",
                                              "--quiet"])) == 0
    path = segment_cmd.output_paths(stack, out)["manifest"]
    text = path.read_text(encoding="utf-8")
    manifest = read_manifest(path)
    assert manifest.model.name == "frangi" and manifest.input.source == str(stack)
    assert manifest.outputs["manifest"] == str(path) and "command" in manifest.extra
    assert manifest.to_dict() == json.loads(text)
    assert json.dumps(manifest.to_dict(), indent=2, default=str) + "\n" == text  # same bytes


def test_read_manifest_names_the_file(tmp_path):
    with pytest.raises(InputError, match="cannot read the run manifest"):
        read_manifest(tmp_path / "missing.json")
    broken = tmp_path / "broken.json"
    broken.write_text("{not json", encoding="utf-8")
    with pytest.raises(InputError, match="broken.json"):
        read_manifest(broken)
    other = tmp_path / "other.json"
    other.write_text(json.dumps({"name": "a model card"}), encoding="utf-8")
    with pytest.raises(InputError, match="other.json.*missing field"):
        read_manifest(other)
