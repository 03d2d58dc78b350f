"""A training checkpoint that cannot be written (full disk, also inside the safetensors writer)
is one clear error, and the previous complete checkpoint stays as it was."""

from __future__ import annotations

import errno
import os

import numpy as np
import pytest
import torch
from torch import nn

from napari_vessel.errors import InputError
from napari_vessel.training import checkpoint


def _state():
    torch.manual_seed(0)
    model = nn.Linear(4, 2)
    opt = torch.optim.Adam(model.parameters(), lr=0.01)
    model(torch.ones(1, 4)).sum().backward()
    opt.step()
    return model, opt, np.random.default_rng(0), torch.Generator().manual_seed(0)


def _files(folder):
    return {p.name: p.read_bytes() for p in folder.iterdir()}


def _safetensors_full():
    from safetensors import SafetensorError

    return SafetensorError("Error while serializing: I/O error: No space left on device "
                           "(os error 28)")


@pytest.mark.parametrize("error", ["safetensors", "oserror"])
def test_a_full_disk_keeps_the_previous_checkpoint(tmp_path, full_disk, error):
    import safetensors.torch

    model, opt, rng, gen = _state()
    path = tmp_path / "run" / "checkpoint.safetensors"
    checkpoint.save_state(path, model, opt, rng, gen, {"step": 250})
    before = _files(path.parent)
    full_disk(safetensors.torch, "save_file",
              _safetensors_full() if error == "safetensors" else
              OSError(errno.ENOSPC, os.strerror(errno.ENOSPC)))
    with torch.no_grad():
        model.weight.add_(1.0)
    with pytest.raises(InputError, match="could not write the training checkpoint.*No space "
                                         "left on device.*previous checkpoint") as err:
        checkpoint.save_state(path, model, opt, rng, gen, {"step": 500})
    assert "Error while serializing" not in str(err.value) and "\n" not in str(err.value)
    assert _files(path.parent) == before  # the old pair, byte-identical, no .tmp left
    restored = nn.Linear(4, 2)
    info = checkpoint.load_state(path, restored, torch.optim.Adam(restored.parameters()),
                                 np.random.default_rng(), torch.Generator())
    assert info["step"] == 250


def test_a_full_disk_at_the_json_keeps_the_previous_weights_only_checkpoint(tmp_path,
                                                                            monkeypatch):
    from pathlib import Path

    model, *_ = _state()
    path = tmp_path / "best.safetensors"
    checkpoint.save_checkpoint(model, path, {"step": 1})
    before = _files(tmp_path)
    real = Path.write_text

    def write_text(self, *args, **kwargs):
        if self.name.endswith(".partial.json"):  # the card's temporary file
            raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC))
        return real(self, *args, **kwargs)

    monkeypatch.setattr(Path, "write_text", write_text)
    with pytest.raises(InputError, match="No space left on device"):
        checkpoint.save_checkpoint(model, path, {"step": 2})
    assert _files(tmp_path) == before
