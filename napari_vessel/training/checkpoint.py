"""Atomic, resumable training checkpoints (safetensors + JSON, never pickle).

A checkpoint is two files written atomically (:func:`~napari_vessel.io.common.atomic_replace`):
``NAME.safetensors`` (the model's state, and for a resumable checkpoint the optimiser's moments
and the torch random generator under ``optim.*`` and ``rng.torch``) and ``NAME.json`` (the step,
the losses so far, the numpy generator state and the run's settings). A run killed at any moment
leaves the previous complete checkpoint; :func:`load_state` puts a model, optimiser and both
generators back exactly where the run was, so a resumed run gives the same weights as an
uninterrupted one.
"""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import torch
from torch import nn

from napari_vessel.errors import InputError
from napari_vessel.io.common import atomic_replace

__all__ = ["save_checkpoint", "save_state", "load_state"]

_MODEL, _OPTIM, _RNG = "model.", "optim.", "rng.torch"


def _write(path: Path, tensors: dict[str, torch.Tensor], info: dict) -> None:
    """Write both files under temporary names, then rename them into place.

    Raises
    ------
    InputError
        When the folder cannot be written (disk full, read-only), also from inside the
        safetensors writer, whose I/O errors are no OSError; the previous complete checkpoint
        is left as it was and no temporary file remains.
    """
    from safetensors import SafetensorError
    from safetensors.torch import save_file

    meta = path.with_suffix(".json")
    text = json.dumps(info, indent=1)  # a value JSON cannot hold fails here, before any write
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
    except OSError as err:
        raise _unwritable(path, err) from err
    # Both are written before either is moved into place; the inner block (the weights) is moved
    # first, so a JSON describes the weights beside it or older ones. The moves need no space.
    with atomic_replace(meta) as tmp_meta, atomic_replace(path) as tmp:
        try:
            try:
                save_file(tensors, str(tmp))
            except SafetensorError as err:  # its writer's I/O errors (a full disk)
                raise OSError(str(err).removeprefix("Error while serializing: ")) from err
            tmp_meta.write_text(text)
        except OSError as err:
            raise _unwritable(path, err) from err


def _unwritable(path: Path, err: OSError) -> InputError:
    return InputError(
        f"could not write the training checkpoint {path}: {err.strerror or err}; free some "
        "disk space or choose a folder you can write to (the previous checkpoint, if any, "
        "was kept)")


def _state(model: nn.Module, prefix: str = "") -> dict[str, torch.Tensor]:
    return {prefix + k: v.detach().cpu().contiguous().clone() for k, v in model.state_dict().items()}


def save_checkpoint(model: nn.Module, path: str | Path, info: dict) -> None:
    """Write model weights (safetensors) and ``info`` (JSON) atomically.

    Raises
    ------
    InputError
        When the checkpoint cannot be written (disk full, read-only folder); the previous one
        is kept.
    """
    _write(Path(path), _state(model), info)


def save_state(path: str | Path, model: nn.Module, optimizer: torch.optim.Optimizer,
               rng: np.random.Generator, generator: torch.Generator, info: dict) -> None:
    """A resumable checkpoint: model, optimiser moments, both random generators and ``info``.

    ``info`` must hold ``step`` and may hold anything JSON-serialisable (losses, settings).

    Raises
    ------
    InputError
        When the checkpoint cannot be written (disk full, read-only folder); the previous one
        is kept.
    """
    tensors = _state(model, _MODEL)
    for index, entry in optimizer.state_dict()["state"].items():
        for key, value in entry.items():
            if torch.is_tensor(value):
                tensors[f"{_OPTIM}{index}.{key}"] = value.detach().cpu().reshape(-1).clone()
    tensors[_RNG] = generator.get_state().clone()
    _write(Path(path), tensors, {**info, "numpy_rng": rng.bit_generator.state, "resumable": True})


def load_state(path: str | Path, model: nn.Module, optimizer: torch.optim.Optimizer,
               rng: np.random.Generator, generator: torch.Generator) -> dict:
    """Restore a checkpoint written by :func:`save_state`; returns its ``info``.

    Raises
    ------
    InputError
        When the files are missing, unreadable, not resumable or made for another network.
    """
    from safetensors import SafetensorError
    from safetensors.torch import load_file

    path = Path(path)
    try:
        info = json.loads(path.with_suffix(".json").read_text(encoding="utf-8"))
        tensors = load_file(str(path))
    except (OSError, ValueError, SafetensorError) as err:
        raise InputError(f"cannot resume from {path}: {err}; delete it to start afresh") from err
    if not isinstance(info, dict) or not info.get("resumable") or _RNG not in tensors:
        raise InputError(f"{path} is not a resumable checkpoint (an older or weights-only file); "
                         "delete it to start afresh")
    weights = {k[len(_MODEL):]: v for k, v in tensors.items() if k.startswith(_MODEL)}
    try:
        model.load_state_dict(weights)
    except RuntimeError as err:
        raise InputError(f"{path} was written for another network ({str(err).splitlines()[0]}); "
                         "use the same model settings or delete it to start afresh") from err
    device = next(model.parameters()).device
    groups = optimizer.state_dict()["param_groups"]
    ids = [i for group in groups for i in group["params"]]
    params = [p for group in optimizer.param_groups for p in group["params"]]
    restored: dict[int, dict] = {}
    for index, param in zip(ids, params, strict=True):
        prefix = f"{_OPTIM}{index}."
        entry = {k[len(prefix):]: v for k, v in tensors.items() if k.startswith(prefix)}
        if entry:
            restored[index] = {k: v.reshape(()) if k == "step" else v.reshape(param.shape).to(device)
                               for k, v in entry.items()}
    optimizer.load_state_dict({"state": restored, "param_groups": groups})
    generator.set_state(tensors[_RNG])
    rng.bit_generator.state = info["numpy_rng"]
    return info
