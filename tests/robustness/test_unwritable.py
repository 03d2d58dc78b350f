"""A full disk or an unwritable folder costs no model and no minutes of work: the model writer
turns every write error into one clear message, and finetune checks its folders before training."""

from __future__ import annotations

import numpy as np
import pytest
import tifffile

from napari_vessel.cli import main
from napari_vessel.errors import InputError


def test_a_full_disk_inside_the_safetensors_writer_is_one_clear_error(tmp_path, full_disk):
    """safetensors reports its I/O errors as SafetensorError, not OSError."""
    import safetensors.torch
    import torch
    from safetensors import SafetensorError

    from napari_vessel.models.weights import save_weights

    full_disk(safetensors.torch, "save_file", SafetensorError(
        "Error while serializing: I/O error: No space left on device (os error 28)"))
    with pytest.raises(InputError, match="could not save the model.*No space left") as err:
        save_weights({"w": torch.zeros(4)}, tmp_path / "m", {"architecture": "tvnet"})
    assert "Error while serializing" not in str(err.value)
    assert list(tmp_path.iterdir()) == []  # no orphan weights, no temporary file


@pytest.mark.parametrize("where", ["--models-dir", "--segment"])
def test_finetune_refuses_an_unwritable_folder_before_training(tmp_path, monkeypatch, capsys,
                                                               where):
    import napari_vessel.training.finetune as training

    monkeypatch.setenv("NAPARI_VESSEL_MODELS", str(tmp_path / "models"))
    monkeypatch.setattr(training, "finetune", lambda *a, **k: pytest.fail("training started"))
    image = tmp_path / "stack.tif"
    tifffile.imwrite(image, (np.random.default_rng(0).random((8, 32, 32)) * 200).astype(np.uint8))
    blocker = tmp_path / "file"
    blocker.write_text("not a folder")
    target = blocker if where == "--segment" else blocker / "sub"
    assert main(["finetune", str(image), "--model", "tvnet", "-o", "mine", where, str(target),
                 "--quiet"]) == 2
    err = capsys.readouterr().err
    assert "not a writable folder" in err and where in err and "Traceback" not in err
    assert not (tmp_path / "models").exists()
