"""Tests of UMIS training from scratch without labels (paper 000's compound loss)."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from napari_vessel.data.phantom import make_phantom
from napari_vessel.errors import Cancelled, InputError
from napari_vessel.models.tvnet import build_tvnet
from napari_vessel.models.umis import build_umis
from napari_vessel.progress import CancelToken
from napari_vessel.training.data import normalise
from napari_vessel.training.train_unsupervised import (
    UnsupervisedConfig,
    predict_probability,
    train_unsupervised,
)

TINY = {"width": 2, "blocks": [1, 1, 1, 1], "strides": [[1, 2, 2], [1, 2, 2], [2, 2, 2], [2, 2, 2]],
        "stem_kernel": [3, 3, 3], "stem_stride": [1, 1, 1], "morph_iterations": 1}
PATCH = (4, 32, 32)


@pytest.fixture(autouse=True)
def _one_thread():
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)


@pytest.fixture(scope="module")
def volume() -> np.ndarray:
    return normalise(make_phantom((8, 48, 48), kind="2pm", seed=3).image)


def _model(seed: int = 0):
    torch.manual_seed(seed)
    return build_umis(**TINY)


def test_training_changes_the_weights_and_reports_every_term(volume, tmp_path):
    model = _model()
    before = {k: v.clone() for k, v in model.state_dict().items()}
    seen = []
    cfg = UnsupervisedConfig(steps=4, batch_size=1, patch_size=PATCH, checkpoint_every=2)
    result = train_unsupervised(model, [volume], cfg, checkpoint=str(tmp_path / "ck.safetensors"),
                                progress=lambda f, m: seen.append(f))
    assert result.steps == 4 and len(result.losses) == 4
    assert all(np.isfinite(result.losses))
    assert set(result.terms) >= {"ac", "rank", "tight", "rec", "mv", "me", "total"}
    assert seen[-1] == pytest.approx(1.0) and seen == sorted(seen)
    changed = [k for k, v in model.state_dict().items() if not torch.equal(v, before[k])]
    assert changed, "no weight moved"
    assert (tmp_path / "ck.safetensors").exists() and (tmp_path / "ck.json").exists()
    assert not list(tmp_path.glob("*.tmp"))
    assert not model.training


def test_seeded_runs_are_identical(volume):
    cfg = UnsupervisedConfig(steps=3, batch_size=1, patch_size=PATCH, checkpoint_every=0)
    a = train_unsupervised(_model(), [volume], cfg).losses
    b = train_unsupervised(_model(), [volume], cfg).losses
    assert a == b


def test_a_small_volume_is_padded_to_the_patch():
    small = np.random.default_rng(0).random((3, 20, 20)).astype(np.float32)
    cfg = UnsupervisedConfig(steps=1, batch_size=1, patch_size=PATCH, checkpoint_every=0)
    assert train_unsupervised(_model(), [small], cfg).steps == 1


def test_prediction_is_a_probability_of_the_volume_shape(volume):
    prob = predict_probability(_model(), volume, threads=1)
    assert prob.shape == volume.shape and prob.dtype == np.float32
    assert 0.0 <= prob.min() and prob.max() <= 1.0


def test_bad_input_is_refused_with_a_reason(volume):
    cfg = UnsupervisedConfig(steps=1, batch_size=1, patch_size=PATCH)
    with pytest.raises(InputError, match="UMIS"):
        train_unsupervised(build_tvnet(widths=[2, 4, 4, 4]), [volume], cfg)
    with pytest.raises(InputError, match="multiple"):
        train_unsupervised(_model(), [volume], UnsupervisedConfig(steps=1, patch_size=(4, 30, 32)))
    with pytest.raises(InputError, match="NaN"):
        train_unsupervised(_model(), [np.full((8, 32, 32), np.nan, np.float32)], cfg)
    with pytest.raises(InputError, match="3D"):
        train_unsupervised(_model(), [volume[0]], cfg)
    with pytest.raises(InputError, match="at least one"):
        train_unsupervised(_model(), [], cfg)
    with pytest.raises(InputError, match="at least 1"):
        train_unsupervised(_model(), [volume], UnsupervisedConfig(steps=0, patch_size=PATCH))


def test_cancel_stops_before_the_next_step(volume):
    token = CancelToken()
    token.cancel()
    with pytest.raises(Cancelled):
        train_unsupervised(_model(), [volume], UnsupervisedConfig(steps=5, patch_size=PATCH),
                           cancel=token)


def _folder(tmp_path):
    import tifffile

    for i in range(2):
        ph = make_phantom((8, 48, 48), kind="2pm", seed=10 + i)
        for sub, data in (("images", ph.image), ("labels", (ph.labels > 0).astype(np.uint8))):
            (tmp_path / sub).mkdir(parents=True, exist_ok=True)
            tifffile.imwrite(tmp_path / sub / f"vol{i}.tif", data)
    return tmp_path


def test_train_command_trains_umis_without_labels_and_writes_a_loadable_card(tmp_path, capsys):
    import json

    from napari_vessel.cli import main
    from napari_vessel.inference.run import predict
    from napari_vessel.models import registry
    from napari_vessel.models.weights import load_weights

    data = _folder(tmp_path / "data")
    out = tmp_path / "out"
    code = main(["train", "--model", "umis", "--data", str(data), "--steps", "2", "--threads", "1",
                 "--leave-out", "vol1", "--out", str(out), "--name", "umis-mine", "--quiet"])
    assert code == 0, capsys.readouterr().err
    card = json.loads((out / "umis-mine.json").read_text())
    assert card["kind"] == "unsupervised" and card["threshold"] == 0.5
    assert card["trained_on"] == ["vol0"] and "vol1" in card["scores"]
    assert card["preprocessing"]["steps"][0]["name"] == "median_subtract"
    assert "train --model umis" in card["training"]["command"]
    assert not list(out.glob("*checkpoint*"))
    state, _ = load_weights(out / "umis-mine.safetensors")
    spec = registry.get("umis")
    model = spec.builder(**card["config"])
    model.load_state_dict(state)
    prob = predict(model.eval(), np.random.default_rng(0).random((4, 32, 32), np.float32),
                   spec=spec, device="cpu", threads=1)
    assert prob.shape == (4, 32, 32)


def test_train_command_refuses_supervised_options_for_umis(tmp_path, capsys):
    from napari_vessel.cli import main

    data = _folder(tmp_path / "data")
    for extra, message in ((["--cldice", "0.1"], "supervised options"),
                           (["--loo"], "umis_loo.py"), (["--leave-out", "nope"], "not in")):
        assert main(["train", "--model", "umis", "--data", str(data), "--steps", "1",
                     *extra]) == 2
        assert message in capsys.readouterr().err
