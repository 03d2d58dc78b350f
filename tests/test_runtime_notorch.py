"""A warm ``segment`` (a verified cached ONNX export) runs without importing PyTorch.

The command runs in fresh interpreters (subprocesses), as a user starts it: the first run builds
the export with PyTorch, the next ones find it by the weights' hash and never import torch; a
corrupted export is rebuilt (with PyTorch) and the run still succeeds; ``--runtime torch`` works.
"""

from __future__ import annotations

import importlib.util
import json
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from napari_vessel import devices
from napari_vessel.data.phantom import make_phantom
from napari_vessel.io.stacks import load_volume, save_volume
from napari_vessel.manifest import RunManifest, read_manifest
from napari_vessel.runtime import warm

pytestmark = pytest.mark.skipif(importlib.util.find_spec("onnxruntime") is None,
                                reason="onnxruntime is not installed (pip install onnxruntime)")

#: Runs the command line in this interpreter, then says whether torch was imported.
_RUN = """
import json, sys
from napari_vessel.cli import main
code = main(sys.argv[1:])
print(json.dumps({"code": code, "torch": "torch" in sys.modules,
                  "heavy": sorted(m for m in ("torch", "dask", "napari", "openvino")
                                  if m in sys.modules)}))
"""


def _segment(tmp_path: Path, out: str, *extra: str) -> tuple[dict, str, np.ndarray, RunManifest]:
    env = {**os.environ, "NAPARI_VESSEL_CACHE": str(tmp_path / "cache"),
           "NAPARI_VESSEL_MODELS": str(tmp_path / "models"), "OMP_NUM_THREADS": "1"}
    command = [sys.executable, "-c", _RUN, "segment", str(tmp_path / "stack.tif"),
               "-o", str(tmp_path / out), "--device", "cpu", "--quiet", *extra]
    done = subprocess.run(command, capture_output=True, text=True, env=env, timeout=600)
    assert done.returncode == 0, done.stderr
    result = json.loads(done.stdout.strip().splitlines()[-1])
    assert result["code"] == 0, done.stderr
    labels = np.asarray(load_volume(tmp_path / out / "stack_labels.tif").data)
    manifest = read_manifest(tmp_path / out / "stack_manifest.json")
    return result, done.stderr, labels, manifest


@pytest.fixture
def stack(tmp_path):
    phantom = make_phantom((8, 64, 64), seed=3)
    save_volume(tmp_path / "stack.tif", phantom.image, (2.0, 1.0, 1.0))
    return tmp_path


def test_a_warm_segment_imports_no_torch_and_a_corrupt_export_is_rebuilt(stack):
    tmp_path = stack
    first, _, labels, manifest = _segment(tmp_path, "cold")
    assert first["torch"] and manifest.runtime.name == "onnx"  # built now, with PyTorch
    assert "exported" in manifest.runtime.reason

    again, _, warm_labels, warm_manifest = _segment(tmp_path, "warm")
    assert again["heavy"] == [], again  # no torch (nor dask, napari, OpenVINO) in the process
    assert warm_manifest.runtime.name == "onnx"
    assert "run without PyTorch" in warm_manifest.runtime.reason
    assert np.array_equal(warm_labels, labels)
    assert warm_manifest.model == manifest.model
    assert warm_manifest.versions == manifest.versions
    assert warm_manifest.parameters == manifest.parameters
    prob_cold = np.asarray(load_volume(tmp_path / "cold" / "stack_prob.tif").data)
    prob_warm = np.asarray(load_volume(tmp_path / "warm" / "stack_prob.tif").data)
    assert np.array_equal(prob_cold, prob_warm)  # the same export, the same numbers

    exports = list((tmp_path / "cache" / "onnx").glob("*.onnx"))
    assert len(exports) == 1
    exports[0].write_bytes(b"not the export that was checked")  # corrupt or replaced
    fixed, err, fixed_labels, fixed_manifest = _segment(tmp_path, "fixed")
    assert fixed["torch"], "a corrupt export must be rebuilt with PyTorch, not run"
    assert "did not match its hash" in err  # the run says so
    assert "did not match its hash" in fixed_manifest.runtime.reason
    assert np.array_equal(fixed_labels, labels)

    rewarmed, _, rewarmed_labels, _ = _segment(tmp_path, "rewarmed")
    assert not rewarmed["torch"] and np.array_equal(rewarmed_labels, labels)

    torch_run, _, torch_labels, torch_manifest = _segment(tmp_path, "torch", "--runtime", "torch")
    assert torch_run["torch"] and torch_manifest.runtime.name == "torch"
    assert np.mean(torch_labels != labels) < 1e-3


def test_changed_weights_or_software_miss_the_index(tmp_path):
    fields = {"builder": "napari_vessel.models.tvnet:build_tvnet", "architecture": "tvnet",
              "config": {}, "dims": 3, "weights_sha256": "0" * 64, "software": "x"}
    onnx = tmp_path / "onnx"
    onnx.mkdir()
    key = "a" * 64
    (onnx / f"{key[:32]}.onnx").write_bytes(b"graph")
    from napari_vessel.models.weights import file_sha256

    (onnx / f"{key[:32]}.json").write_text(json.dumps(
        {"key": key, "sha256": file_sha256(onnx / f"{key[:32]}.onnx")}))
    warm.record_export(fields, onnx / f"{key[:32]}.onnx", multiple=(4, 8, 8), runtime="onnx",
                       diff=1e-7, cache=tmp_path)
    path, entry = warm.find_export(fields, tmp_path)
    assert path == onnx / f"{key[:32]}.onnx"
    assert entry["verified"] == {"onnx": {"diff": 1e-7, "runtime": warm.runtime_stamp("onnx")}}
    assert "onnxruntime-" in warm.runtime_stamp("onnx")  # an update is checked again
    assert warm.find_export({**fields, "weights_sha256": "1" * 64}, tmp_path)[0] is None
    assert warm.find_export({**fields, "software": "y"}, tmp_path)[0] is None
    (onnx / f"{key[:32]}.onnx").write_bytes(b"other graph")
    assert warm.find_export(fields, tmp_path) == (None, "the cached ONNX export did not match "
                                                       "its hash")


def test_a_recorded_model_name_resolves_to_the_registry_spec(tmp_path, monkeypatch):
    from dataclasses import fields as dc_fields

    from napari_vessel.models import registry

    monkeypatch.setenv(registry.MODELS_ENV, str(tmp_path / "models"))
    spec = registry.get("tvnet")
    warm.remember_name("tvnet", spec, cache=tmp_path)
    again = warm.resolve_name("tvnet", cache=tmp_path)
    assert again is not None
    for field in dc_fields(spec):
        if field.name not in ("builder", "predict"):
            assert getattr(again, field.name) == getattr(spec, field.name), field.name
    assert again.builder.resolve() is spec.builder
    (tmp_path / "models").mkdir()
    (tmp_path / "models" / "new.json").write_text("{}")  # the user models changed: not used
    assert warm.resolve_name("tvnet", cache=tmp_path) is None


def test_a_recorded_name_whose_weights_are_gone_resolves_as_usual(tmp_path, monkeypatch):
    """A copy of the package elsewhere (same software stamp) recorded its weights path, then
    was deleted: the entry is not used, so the registry resolves the name again."""
    import json
    from dataclasses import replace

    from napari_vessel.models import registry

    monkeypatch.setenv(registry.MODELS_ENV, str(tmp_path / "models"))
    spec = registry.get("tvnet")
    warm.remember_name("tvnet", spec, cache=tmp_path)
    entry_path = next((tmp_path / "onnx" / "models").glob("*.json"))
    entry = json.loads(entry_path.read_text())
    assert entry["fields"]["package"] == str(warm._PACKAGE)  # another copy: another entry
    entry["spec"]["weights"] = str(tmp_path / "gone" / "tvnet.safetensors")
    entry_path.write_text(json.dumps(entry))
    assert warm.resolve_name("tvnet", cache=tmp_path) is None
    assert replace(spec).has_weights  # the registry's own answer is unaffected


def test_a_model_registered_by_hand_is_not_recorded(tmp_path):
    from dataclasses import replace

    from napari_vessel.models import registry

    mine = registry.register(replace(registry.get("tvnet"), name="tvnet-by-hand"))
    try:
        assert not registry.is_package_spec(mine)
        warm.remember_name("tvnet-by-hand", mine, cache=tmp_path)
        assert not (tmp_path / "onnx" / "models").exists()
    finally:
        registry.unregister("tvnet-by-hand")
    assert registry.is_package_spec(registry.get("tvnet"))


def test_predict_by_name_uses_the_indexed_export_with_the_same_probabilities():
    from napari_vessel.inference.run import predict

    data = np.random.default_rng(0).random((8, 64, 64), dtype=np.float32)
    first, second = [], []
    a = predict("tvnet", data, device="cpu", runtime="onnx", run_info=first, threads=1)
    b = predict("tvnet", data, device="cpu", runtime="onnx", run_info=second, threads=1)
    assert first[0].name == second[0].name == "onnx"
    assert "run without PyTorch" in second[0].reason
    assert np.array_equal(a, b)


def test_surely_cpu():
    assert devices.surely_cpu("cpu") and devices.surely_cpu("CPU")
    assert not devices.surely_cpu("cuda") and not devices.surely_cpu("mps")


def test_a_warm_run_reports_progress_and_cancels_between_batches():
    from napari_vessel.errors import Cancelled
    from napari_vessel.inference.run import predict
    from napari_vessel.progress import CancelToken

    data = np.random.default_rng(1).random((8, 64, 64), dtype=np.float32)
    args = dict(device="cpu", runtime="onnx", threads=1, patch_size=(8, 32, 32), batch_size=2)
    predict("tvnet", data, **args)  # builds or finds the export
    seen, info = [], []
    predict("tvnet", data, progress=lambda f, m="": seen.append(f), run_info=info, **args)
    assert "run without PyTorch" in info[0].reason
    assert len(seen) > 2 and seen == sorted(seen) and seen[-1] == 1.0
    token = CancelToken()

    def cancel_after_the_first_batch(fraction, message=""):
        if fraction > 0:
            token.cancel()

    with pytest.raises(Cancelled):
        predict("tvnet", data, progress=cancel_after_the_first_batch, cancel=token, **args)
