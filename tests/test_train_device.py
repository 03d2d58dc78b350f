"""Training runs on the device it is given: the model, every batch and the threshold's predictions
are there, checkpoints and the returned model are on the CPU (checked on the CPU here; a GPU run
takes the same path). Also the one JSON form of the training settings (``TrainConfig.to_dict``)."""

from __future__ import annotations

import argparse
from dataclasses import asdict

import numpy as np
import pytest
import torch
from pairs import bar_pair as _bars

from napari_vessel.errors import InputError
from napari_vessel.models.tvnet import build_tvnet
from napari_vessel.models.umis import build_umis
from napari_vessel.training import train as train_module
from napari_vessel.training.data import normalise
from napari_vessel.training.train import TrainConfig, model_device, predict_volume, train
from napari_vessel.training.train_unsupervised import UnsupervisedConfig, train_unsupervised

TV_TINY = {"widths": [2, 4, 4, 4], "norm": "batch"}
UMIS_TINY = {"width": 2, "blocks": [1, 1, 1, 1],
             "strides": [[1, 2, 2], [1, 2, 2], [2, 2, 2], [2, 2, 2]],
             "stem_kernel": [3, 3, 3], "stem_stride": [1, 1, 1], "morph_iterations": 1}

pytestmark = pytest.mark.usefixtures("one_thread")


def _recording(model: torch.nn.Module) -> list[tuple[str, set[str]]]:
    """Make ``model`` record, at every forward, the device of its input and of its parameters."""
    seen: list[tuple[str, set[str]]] = []

    def hook(module, inputs):
        seen.append((inputs[0].device.type, {p.device.type for p in module.parameters()}))

    model.register_forward_pre_hook(hook)
    return seen


def _tvnet():
    torch.manual_seed(0)
    return build_tvnet(**TV_TINY)


def _umis():
    torch.manual_seed(0)
    return build_umis(**UMIS_TINY)


def test_supervised_training_runs_on_the_given_device():
    model = _tvnet()
    seen = _recording(model)
    cfg = TrainConfig(steps=2, batch_size=1, patch_size=(4, 16, 16), checkpoint_every=0)
    result = train(model, [_bars()], cfg, device="cpu")
    assert len(seen) >= 3  # two training steps, then the threshold's predictions
    assert all(x == "cpu" and params == {"cpu"} for x, params in seen)
    assert model_device(result.model).type == "cpu"


def test_unsupervised_training_runs_on_the_given_device(tmp_path):
    model = _umis()
    seen = _recording(model)
    cfg = UnsupervisedConfig(steps=2, batch_size=1, patch_size=(4, 32, 32), checkpoint_every=1)
    volume = normalise(np.random.default_rng(1).random((8, 48, 48)))
    result = train_unsupervised(model, [volume], cfg, device="cpu",
                                checkpoint=str(tmp_path / "ck.safetensors"))
    assert len(seen) == 2 and all(x == "cpu" and p == {"cpu"} for x, p in seen)
    assert model_device(result.model).type == "cpu" and not result.model.training
    assert (tmp_path / "ck.safetensors").exists()


@pytest.mark.parametrize("run", [
    lambda device: train(_tvnet(), [_bars()], TrainConfig(steps=1, batch_size=1,
                                                          patch_size=(4, 16, 16)), device=device),
    lambda device: train_unsupervised(_umis(), [np.zeros((8, 48, 48), np.float32)],
                                      UnsupervisedConfig(steps=1, batch_size=1,
                                                         patch_size=(4, 32, 32)), device=device),
], ids=["train", "train_unsupervised"])
def test_unknown_device_is_an_input_error(run):
    with pytest.raises(InputError, match="unknown device"):
        run("no-such-device")


def test_predict_volume_runs_on_the_models_device(monkeypatch):
    import napari_vessel.inference.run as engine

    asked = {}

    def fake_predict(model, image, **kw):
        asked.update(kw)
        return np.zeros(image.shape, np.float32)

    monkeypatch.setattr(engine, "predict", fake_predict)
    model = _tvnet().to("meta")  # a device without a GPU: only where the model is matters
    predict_volume(model, np.zeros((4, 16, 16), np.float32))
    assert asked["device"] == torch.device("meta")
    assert model_device(torch.nn.ReLU()).type == "cpu"  # no parameters: the CPU


def test_umis_command_refuses_an_unknown_device_before_any_work(tmp_path):
    from napari_vessel.commands import train as command

    parser = argparse.ArgumentParser()
    command.add_arguments(parser)
    args = parser.parse_args(["--model", "umis", "--data", str(tmp_path / "missing"),
                              "--out", str(tmp_path / "out"), "--device", "no-such-device"])
    with pytest.raises(InputError, match="unknown device"):
        command.run(args)


def test_umis_command_line_names_a_device_other_than_the_default():
    from napari_vessel.commands.train_umis import _command

    base = dict(model="umis", data="d", steps=3, seed=0, leave_out=[], out="o", minutes=None,
                batch_size=None, lr=None, threads=0, scores=None, name=None, patch_size=None)
    assert "--device" not in _command(argparse.Namespace(**base, device="cpu"))
    assert _command(argparse.Namespace(**base, device="cuda")).endswith("--device cuda --out o")


def test_train_config_json_is_the_one_of_checkpoints_and_cards():
    cfg = TrainConfig(patch_size=(4, 16, 16), extra={"loss": {"balanced": True}})
    full = cfg.to_dict()
    assert full["patch_size"] == [4, 16, 16] and full["extra"] == {"loss": {"balanced": True}}
    assert full == {**asdict(cfg), "patch_size": [4, 16, 16]}
    card = cfg.to_dict(with_extra=False)
    assert "extra" not in card and list(card) == [k for k in asdict(cfg) if k != "extra"]
    assert not hasattr(train_module, "_jsonable")


def test_tvnet_cards_take_the_registered_inference_patch():
    from napari_vessel.models import registry
    from napari_vessel.models.tvnet import INFERENCE_PATCH_ZYX

    assert INFERENCE_PATCH_ZYX == (32, 512, 512)
    assert registry.get("tvnet").patch_size_zyx == INFERENCE_PATCH_ZYX
