"""The exported CPU runtimes (ONNX Runtime, OpenVINO) against PyTorch, their cache and fallbacks."""

from __future__ import annotations

import json

import numpy as np
import pytest
import torch

from napari_vessel import runtime
from napari_vessel.errors import InputError
from napari_vessel.inference.run import predict, segment
from napari_vessel.models import registry
from napari_vessel.models.tvnet import build_tvnet
from napari_vessel.runtime.export import export_onnx

TINY = {"widths": [2, 4, 4, 4]}


pytestmark = pytest.mark.usefixtures("one_thread")


def _volume(shape=(8, 40, 40), seed=0) -> np.ndarray:
    return np.random.default_rng(seed).random(shape, dtype=np.float32)


def _tiny_tvnet():
    torch.manual_seed(0)
    return build_tvnet(**TINY).eval(), registry.get("tvnet")


@pytest.mark.parametrize("name", ["onnx", "openvino"])
def test_runtime_equals_pytorch_on_the_tvnet_with_flips(name, tmp_path):
    model, spec = _tiny_tvnet()
    data = _volume()
    ref = predict(model, data, spec=spec, runtime="torch", patch_size=(8, 32, 32), tta=True)
    info = []
    got = predict(model, data, spec=spec, runtime=name, run_info=info, patch_size=(8, 32, 32),
                  tta=True)
    assert info[0].name == name, info[0].reason
    assert np.abs(got - ref).max() < 1e-4


_ARCHITECTURES = ["umis", "vcnet", "dbac", "ddmac", "cascade-ensemble", "deepvess", "vesselnn"]


@pytest.mark.slow
@pytest.mark.parametrize("name", _ARCHITECTURES)
def test_every_exportable_architecture_matches_pytorch(name):
    model, spec = registry.load_model(name, "cpu", allow_untrained=True)
    data = _volume((8, 64, 64), seed=1)
    ref = predict(model, data, spec=spec, runtime="torch")
    info = []
    got = predict(model, data, spec=spec, runtime="onnx", run_info=info)
    assert info[0].name == "onnx", info[0].reason
    assert np.abs(got - ref).max() < 1e-4


class _SlidingWindows(torch.nn.Module):
    """A network the ONNX exporter refuses: ``unfold`` needs input sizes fixed at export."""

    def __init__(self) -> None:
        super().__init__()
        self.scale = torch.nn.Parameter(torch.ones(1))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return torch.sigmoid(self.scale * x.unfold(2, 1, 1).squeeze(-1))


def test_a_network_that_cannot_be_exported_falls_back_with_the_reason():
    from dataclasses import replace

    model = _SlidingWindows().eval()
    spec = replace(registry.get("tvnet"), name="sliding-windows", architecture="sliding-windows",
                   weights=None, card=None, preprocessing=None, input_multiple_zyx=(1, 1, 1))
    data = _volume((8, 32, 32))
    info = []
    with pytest.warns(RuntimeWarning, match="could not be exported"):
        got = predict(model, data, spec=spec, runtime="auto", run_info=info)
    assert info[0].name == "torch" and "could not be exported" in info[0].reason
    assert np.array_equal(got, predict(model, data, spec=spec, runtime="torch"))


def test_missing_runtime_falls_back_to_pytorch_and_says_why(monkeypatch):
    monkeypatch.setattr(runtime, "available", lambda name: False)
    model, spec = _tiny_tvnet()
    info = []
    with pytest.warns(RuntimeWarning, match="not installed"):
        got = predict(model, _volume(), spec=spec, runtime="openvino", run_info=info)
    assert info[0].name == "torch" and "openvino not installed" in info[0].reason
    assert np.array_equal(got, predict(model, _volume(), spec=spec, runtime="torch"))


def test_export_that_disagrees_is_not_used(monkeypatch):
    model, spec = _tiny_tvnet()
    monkeypatch.setattr(runtime, "_session",
                        lambda name, path, threads: lambda x, cancel=None: x * 0 + 3.0)
    info = []
    with pytest.warns(RuntimeWarning, match="differs from the network"):
        predict(model, _volume(), spec=spec, runtime="onnx", run_info=info)
    assert info[0].name == "torch"


def test_cache_is_reused_rebuilt_when_corrupt_and_keyed_by_the_weights(tmp_path):
    model, _ = _tiny_tvnet()
    path, note = export_onnx(model, dims=3, multiple=(4, 8, 8), cache=tmp_path)
    assert note == "exported" and path.parent == tmp_path / "onnx"
    assert export_onnx(model, dims=3, multiple=(4, 8, 8), cache=tmp_path) == (path, "cached")
    path.write_bytes(b"not an onnx file")  # corrupt or replaced: rebuilt, never trusted
    again, note = export_onnx(model, dims=3, multiple=(4, 8, 8), cache=tmp_path)
    assert again == path and "did not match" in note
    meta = json.loads(path.with_suffix(".json").read_text())
    import hashlib

    assert meta["sha256"] == hashlib.sha256(path.read_bytes()).hexdigest()
    with torch.no_grad():
        model.head.bias += 1.0  # fine-tuned weights: a new export, the old one is not used
    other, note = export_onnx(model, dims=3, multiple=(4, 8, 8), cache=tmp_path)
    assert other != path and note == "exported"


def test_unwritable_cache_exports_to_a_temporary_folder(tmp_path):
    blocker = tmp_path / "file"
    blocker.write_text("a file where the cache folder should be")
    model, spec = _tiny_tvnet()
    path, note = export_onnx(model, dims=3, multiple=(4, 8, 8), cache=blocker)
    assert path.exists() and "temporary folder" in note and "not writable" in note


def test_bad_runtime_requests_are_refused():
    model, spec = _tiny_tvnet()
    with pytest.raises(InputError, match="unknown runtime"):
        predict(model, _volume(), spec=spec, runtime="tensorrt")
    with pytest.raises(InputError, match="runs on the CPU"):
        runtime.runtime_forward(model, requested="onnx", device=torch.device("cuda"), dims=3,
                                logits=True, tta=False, multiple=(4, 8, 8), threads=1)
    fast, info = runtime.runtime_forward(model, requested="auto", device=torch.device("cuda"),
                                         dims=3, logits=True, tta=False, multiple=(4, 8, 8),
                                         threads=1)
    assert fast is None and info.name == "torch"


def test_segment_manifest_names_the_runtime_and_the_cpu():
    data = (_volume((8, 48, 48)) * 200).astype(np.uint8)
    _, labels_auto, manifest = segment(data, "tvnet", device="cpu")
    assert manifest.runtime.name in ("openvino", "onnx")
    assert manifest.cpu is not None and isinstance(manifest.cpu.instructions, tuple)
    _, labels_torch, manifest = segment(data, "tvnet", device="cpu", runtime="torch")
    assert manifest.runtime.name == "torch"
    assert np.array_equal(labels_auto, labels_torch)


class _CancelInsideTheBatch:
    """A cancel token that the user 'presses' the first time the runtime looks at it while a
    batch computes (deterministic: no timing involved)."""

    def __init__(self):
        from napari_vessel.progress import CancelToken

        self.token = CancelToken()
        self.looked = 0

    @property
    def cancelled(self) -> bool:
        self.looked += 1
        self.token.cancel()
        return True

    def check(self) -> None:
        self.token.check()


@pytest.mark.parametrize("name", ["openvino", "onnx"])
def test_cancel_interrupts_the_network_pass_itself(name, monkeypatch):
    from napari_vessel.errors import Cancelled

    monkeypatch.setattr(runtime, "CANCEL_POLL", 0.001)
    model, spec = registry.load_model("tvnet", "cpu")  # one patch covers the whole volume
    data = _volume((8, 256, 256))
    fast, info = runtime.runtime_forward(model, requested=name, device=torch.device("cpu"),
                                         dims=3, logits=True, tta=False, multiple=(4, 16, 16),
                                         threads=1)
    assert info.name == name
    token = _CancelInsideTheBatch()
    with pytest.raises(Cancelled):
        predict(model, data, spec=spec, runtime=name, cancel=token, patch_size=(8, 256, 256))
    assert token.looked >= 1  # it was the runtime's look during the batch that stopped it


def test_auto_follows_the_measured_preference_of_the_architecture():
    model, _ = _tiny_tvnet()
    args = dict(requested="auto", device=torch.device("cpu"), dims=3, logits=True, tta=False,
                multiple=(4, 8, 8), threads=1)
    assert runtime.runtime_forward(model, architecture="umis", **args)[1].name == "onnx"
    assert runtime.runtime_forward(model, architecture="tvnet", **args)[1].name == "onnx"
    assert runtime.runtime_forward(model, architecture="dbac", **args)[1].name == "openvino"


def test_an_architecture_measured_fastest_on_pytorch_stays_there():
    model, _ = _tiny_tvnet()
    fast, info = runtime.runtime_forward(model, requested="auto", device=torch.device("cpu"),
                                         dims=3, logits=True, tta=False, multiple=(4, 8, 8),
                                         threads=1, architecture="deepvess")
    assert fast is None and info.name == "torch" and "measured fastest" in info.reason


def test_a_user_model_with_another_layout_runs_exported(tmp_path, monkeypatch):
    """A five-level TV-Net (down-sampling 2 x 16 x 16) saved as a user model: the sliding window
    and the export follow the network's own multiple, not the built-in tvnet's (4 x 8 x 8)."""
    from napari_vessel.models.registry import MODELS_ENV
    from napari_vessel.models.tvnet import config_for_widths
    from napari_vessel.models.weights import save_weights

    monkeypatch.setenv(MODELS_ENV, str(tmp_path))
    config = config_for_widths([2, 4, 4, 4, 4]).to_dict()
    config.pop("extra", None)
    torch.manual_seed(0)
    save_weights(build_tvnet(**config).eval(), tmp_path / "five",
                 {"architecture": "tvnet", "config": config, "kind": "supervised"})
    spec = registry.get("five")
    assert spec.input_multiple_zyx == (2, 16, 16)
    data = _volume((6, 40, 40))
    info = []
    got = predict("five", data, runtime="openvino", run_info=info)
    assert info[0].name == "openvino", info[0].reason
    assert np.abs(got - predict("five", data, runtime="torch")).max() < 1e-4
