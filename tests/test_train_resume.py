"""A killed training run resumes from its last checkpoint and ends where an uninterrupted one does;
pretrained weights start a run (--init); synthetic pretraining runs without real volumes."""

from __future__ import annotations

import argparse
import json
from dataclasses import replace

import numpy as np
import pytest
import torch
from pairs import bar_pair as _bars

from napari_vessel.errors import Cancelled, InputError
from napari_vessel.models.tvnet import build_tvnet
from napari_vessel.progress import CancelToken
from napari_vessel.training import train as train_module
from napari_vessel.training.train import TrainConfig, train

TINY = {"widths": [2, 4, 4, 4], "norm": "batch"}


pytestmark = pytest.mark.usefixtures("one_thread")


def _two_volumes(folder, tifffile) -> None:
    """A data folder (images/, labels/) with two small bar volumes v0 and v1."""
    for sub in ("images", "labels"):
        (folder / sub).mkdir(parents=True)
    for i in range(2):
        pair = _bars(i)
        tifffile.imwrite(folder / "images" / f"v{i}.tif", (pair.image * 200).astype(np.uint8))
        tifffile.imwrite(folder / "labels" / f"v{i}.tif", pair.labels.astype(np.uint8))


def _cfg(**kw) -> TrainConfig:
    base = dict(steps=6, batch_size=2, patch_size=(4, 16, 16), lr=1e-2, checkpoint_every=2)
    return TrainConfig(**{**base, **kw})


def _fresh():
    torch.manual_seed(5)
    return build_tvnet(**TINY)


def _killed_at(step: int):
    """A progress callback that stops the run right after ``step`` steps, as a kill would."""
    token, seen = CancelToken(), []

    def progress(fraction, message):
        if message.startswith("step "):
            seen.append(message)
            if len(seen) == step:
                token.cancel()
    return progress, token


def test_resumed_run_equals_an_uninterrupted_one(tmp_path):
    whole = train(_fresh(), [_bars()], _cfg(), checkpoint=tmp_path / "a.safetensors")
    path = tmp_path / "b.safetensors"
    progress, token = _killed_at(5)  # last checkpoint at step 4; steps 5+ are lost
    with pytest.raises(Cancelled):
        train(_fresh(), [_bars()], _cfg(), checkpoint=path, progress=progress, cancel=token)
    assert json.loads(path.with_suffix(".json").read_text())["step"] == 4
    lines = []
    resumed = train(_fresh(), [_bars()], _cfg(), checkpoint=path, resume=True, log=lines.append)
    assert any("resumed" in line and "step 4" in line for line in lines)
    assert resumed.losses == whole.losses
    for (name, p), q in zip(whole.model.state_dict().items(), resumed.model.state_dict().values(),
                            strict=True):
        assert torch.equal(p, q), name


def test_resume_with_other_settings_or_another_network_is_refused(tmp_path):
    path = tmp_path / "c.safetensors"
    train(_fresh(), [_bars()], _cfg(steps=2), checkpoint=path)
    with pytest.raises(InputError, match="other settings"):
        train(_fresh(), [_bars()], _cfg(steps=4, lr=0.5), checkpoint=path, resume=True)
    with pytest.raises(InputError, match="another network"):
        train(build_tvnet(widths=[2, 4, 4, 8]), [_bars()], _cfg(steps=2), checkpoint=path,
              resume=True)
    path.with_suffix(".json").write_text("{not json")
    with pytest.raises(InputError, match="delete it"):
        train(_fresh(), [_bars()], _cfg(steps=2), checkpoint=path, resume=True)


def test_no_threshold_volumes_is_refused():
    with pytest.raises(InputError, match="threshold"):
        train(_fresh(), [], _cfg(), extra_pairs=[_bars()])


def test_unknown_device_is_refused_before_training():
    with pytest.raises(InputError):
        train(_fresh(), [_bars()], _cfg(), device="no-such-device")


def _parse(argv):
    from napari_vessel.commands import train as command

    parser = argparse.ArgumentParser()
    command.add_arguments(parser)
    return command, parser.parse_args(argv)


def test_synthetic_pretraining_then_init_from_it(tmp_path, monkeypatch):
    tifffile = pytest.importorskip("tifffile")
    import napari_vessel.data.synthetic as synthetic

    small = synthetic.SyntheticConfig(shape_zyx=(8, 48, 48), radius_um=(1.0, 6.0))
    monkeypatch.setattr(synthetic, "SyntheticConfig", lambda **kw: replace(small, **kw))
    monkeypatch.setattr(train_module, "TrainConfig",
                        lambda **kw: _cfg(**{k: v for k, v in kw.items() if k != "steps"}))
    command, args = _parse(["--synthetic", "2", "--out", str(tmp_path / "out"), "--steps", "2",
                            "--widths", "2,4,4,4", "--quiet", "--name", "pre"])
    assert command.run(args) == 0
    card = json.loads((tmp_path / "out" / "pre.json").read_text())
    assert card["training"]["synthetic"]["volumes"] == 2
    assert card["trained_on"] == ["2 synthetic volumes (seed 0)"]
    assert set(card["training"]["train_f1"]) == {f"synthetic0-{i}" for i in range(2, 10)}

    for sub in ("images", "labels"):
        (tmp_path / "data" / sub).mkdir(parents=True)
    pair = _bars(1)
    tifffile.imwrite(tmp_path / "data" / "images" / "v.tif", (pair.image * 200).astype(np.uint8))
    tifffile.imwrite(tmp_path / "data" / "labels" / "v.tif", pair.labels.astype(np.uint8))
    weights = tmp_path / "out" / "pre.safetensors"
    command, args = _parse(["--data", str(tmp_path / "data"), "--init", str(weights),
                            "--out", str(tmp_path / "out"), "--steps", "2", "--widths", "2,4,4,4",
                            "--quiet", "--name", "tuned"])
    assert command.run(args) == 0
    card = json.loads((tmp_path / "out" / "tuned.json").read_text())
    import hashlib

    assert card["training"]["init"]["sha256"] == hashlib.sha256(weights.read_bytes()).hexdigest()
    assert "pretrained" in card["description"]

    command, args = _parse(["--data", str(tmp_path / "data"), "--init", str(weights),
                            "--out", str(tmp_path / "out"), "--widths", "2,4,4,8", "--quiet"])
    with pytest.raises(InputError, match="another network"):
        command.run(args)
    command, args = _parse(["--data", str(tmp_path / "data"), "--init", str(tmp_path / "none"),
                            "--out", str(tmp_path / "out"), "--quiet"])
    with pytest.raises(InputError, match="no such file"):
        command.run(args)


def test_train_command_needs_data_or_synthetic(tmp_path):
    command, args = _parse(["--out", str(tmp_path), "--quiet"])
    with pytest.raises(InputError, match="--data"):
        command.run(args)
    command, args = _parse(["--synthetic", "2", "--loo", "--out", str(tmp_path), "--quiet"])
    with pytest.raises(InputError, match="labelled"):
        command.run(args)


@pytest.mark.parametrize("name", ["../../x", "/tmp/x", "a/b", ".hidden", "x.safetensors", ""])
def test_train_refuses_a_name_that_leaves_the_output_folder(tmp_path, name):
    command, args = _parse(["--synthetic", "1", "--out", str(tmp_path / "out"), "--name", name,
                            "--quiet"])
    with pytest.raises(InputError, match="cannot name a model"):
        command.run(args)
    assert not (tmp_path / "out").exists() or not any((tmp_path / "out").iterdir())


def test_train_never_replaces_a_model_silently_and_checks_the_folder_first(tmp_path):
    out = tmp_path / "out"
    out.mkdir()
    (out / "mine.safetensors").write_bytes(b"precious")
    command, args = _parse(["--synthetic", "1", "--out", str(out), "--name", "mine", "--quiet"])
    with pytest.raises(InputError, match="--overwrite"):
        command.run(args)
    assert (out / "mine.safetensors").read_bytes() == b"precious"
    blocker = tmp_path / "file"
    blocker.write_text("not a folder")
    command, args = _parse(["--synthetic", "1", "--out", str(blocker / "sub"), "--quiet"])
    with pytest.raises(InputError, match="cannot write to --out"):
        command.run(args)


def test_calibrate_only_keeps_the_weights_and_chooses_the_threshold_on_data(tmp_path, monkeypatch):
    tifffile = pytest.importorskip("tifffile")
    from safetensors.torch import load_file

    _two_volumes(tmp_path / "data", tifffile)
    monkeypatch.setattr(train_module, "TrainConfig",
                        lambda **kw: _cfg(**{k: v for k, v in kw.items() if k != "steps"}))
    command, args = _parse(["--data", str(tmp_path / "data"), "--out", str(tmp_path / "pre"),
                            "--steps", "2", "--widths", "2,4,4,4", "--quiet", "--name", "pre"])
    assert command.run(args) == 0
    weights = tmp_path / "pre" / "pre.safetensors"
    command, args = _parse(["--data", str(tmp_path / "data"), "--init", str(weights),
                            "--calibrate-only", "--widths", "2,4,4,4", "--out",
                            str(tmp_path / "out"), "--name", "cal", "--leave-out", "v1",
                            "--quiet"])
    assert command.run(args) == 0
    card = json.loads((tmp_path / "out" / "cal.json").read_text())
    assert card["training"]["calibration_only"] and card["training"]["steps"] == 0
    assert card["calibrated_on"] == ["v0"] and "v1" in card["scores"]
    assert card["trained_on"] == ["v0", "v1"]  # what made the pretrained weights
    assert card["training"]["pretraining"]["command"].startswith("napari-vessel train")
    before, after = load_file(str(weights)), load_file(str(tmp_path / "out" / "cal.safetensors"))
    assert all(torch.equal(before[k], after[k]) for k in before)  # not trained: same weights
    command, args = _parse(["--data", str(tmp_path / "data"), "--calibrate-only",
                            "--out", str(tmp_path / "x"), "--quiet"])
    with pytest.raises(InputError, match="--init"):
        command.run(args)


def test_calibrate_only_on_several_inits_averages_them(tmp_path, monkeypatch):
    tifffile = pytest.importorskip("tifffile")
    from safetensors.torch import load_file

    _two_volumes(tmp_path / "data", tifffile)
    monkeypatch.setattr(train_module, "TrainConfig",
                        lambda **kw: _cfg(**{k: v for k, v in kw.items() if k != "steps"}))
    runs = []
    for seed in (0, 1):
        command, args = _parse(["--data", str(tmp_path / "data"), "--out", str(tmp_path / "pre"),
                                "--steps", "2", "--widths", "2,4,4,4", "--quiet", "--name",
                                f"run{seed}", "--seed", str(seed)])
        assert command.run(args) == 0
        runs.append(tmp_path / "pre" / f"run{seed}.safetensors")
    command, args = _parse(["--data", str(tmp_path / "data"), "--init", *map(str, runs),
                            "--calibrate-only", "--widths", "2,4,4,4", "--out",
                            str(tmp_path / "out"), "--name", "soup", "--quiet"])
    assert command.run(args) == 0
    a, b = (load_file(str(r)) for r in runs)
    soup = load_file(str(tmp_path / "out" / "soup.safetensors"))
    for key, value in soup.items():
        if value.is_floating_point():
            assert torch.allclose(value, (a[key] + b[key]) / 2, atol=1e-6), key
        else:
            assert torch.equal(value, a[key])
    card = json.loads((tmp_path / "out" / "soup.json").read_text())
    averaged = card["training"]["init"]["averaged"]
    assert [x["weights"] for x in averaged] == ["run0.safetensors", "run1.safetensors"]
    assert len(card["training"]["pretraining"]) == 2 and "average of 2 runs" in card["description"]
    assert 0 <= card["threshold"] <= 1

    # a file given twice counts twice, and the card says so
    command, args = _parse(["--data", str(tmp_path / "data"), "--init", *map(str, runs),
                            str(runs[0]), "--calibrate-only", "--widths", "2,4,4,4", "--out",
                            str(tmp_path / "out"), "--name", "soup2", "--quiet"])
    assert command.run(args) == 0
    soup = load_file(str(tmp_path / "out" / "soup2.safetensors"))
    for key, value in soup.items():
        if value.is_floating_point():
            assert torch.allclose(value, (2 * a[key] + b[key]) / 3, atol=1e-6), key
    card = json.loads((tmp_path / "out" / "soup2.json").read_text())
    assert "weighted average of 2 runs, weights 2:1" in card["description"]


def test_synthetic_volumes_shared_among_two_generators(tmp_path, monkeypatch):
    monkeypatch.setattr(train_module, "TrainConfig",
                        lambda **kw: _cfg(**{k: v for k, v in kw.items() if k != "steps"}))
    command, args = _parse(["--synthetic", "3", "--generator", "1", "2", "--out",
                            str(tmp_path / "out"), "--steps", "1", "--widths", "2,4,4,4",
                            "--quiet", "--name", "mix"])
    assert command.run(args) == 0
    card = json.loads((tmp_path / "out" / "mix.json").read_text())
    generators = card["training"]["synthetic"]["generator"]
    assert [(g["generator"], g["volumes"]) for g in generators] == [(1, 2), (2, 1)]


def test_visible_labels_option_reaches_the_generator_and_the_card(tmp_path, monkeypatch):
    monkeypatch.setattr(train_module, "TrainConfig",
                        lambda **kw: _cfg(**{k: v for k, v in kw.items() if k != "steps"}))
    command, args = _parse(["--synthetic", "1", "--generator", "2", "--labels", "visible",
                            "--out", str(tmp_path / "out"), "--steps", "1", "--widths", "2,4,4,4",
                            "--quiet", "--name", "vis"])
    assert command.run(args) == 0
    card = json.loads((tmp_path / "out" / "vis.json").read_text())
    assert card["training"]["synthetic"]["generator"]["labels"] == "visible"
    with pytest.raises(SystemExit):
        _parse(["--synthetic", "1", "--labels", "blurred", "--out", str(tmp_path / "x")])
