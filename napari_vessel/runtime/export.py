"""ONNX export of a network, cached per network, weights and software version.

The export is keyed by a SHA-256 of everything that determines the graph: the architecture class,
its configuration, every weight tensor, the input layout and the torch and exporter versions. The
cache lives in ``$NAPARI_VESSEL_CACHE`` (else ``$XDG_CACHE_HOME/napari-vessel``, else
``~/.cache/napari-vessel``) under ``onnx/``: ``KEY.onnx`` and ``KEY.json``, the JSON holding the
SHA-256 of the ONNX file. A file whose hash does not match (corrupt, truncated, replaced) is
rebuilt; a folder that cannot be written gives an export in a temporary folder, and says so. So
fine-tuned and user-trained models get their export the first time they run, and a changed weight
gives a new key (the old export is never used for it).

Every export is checked once against the network itself on an input of another size than the
one traced (:func:`verify`): a graph that does not reproduce the network is not used.
"""

from __future__ import annotations

import contextlib
import hashlib
import io
import json
import os
import tempfile
from pathlib import Path
from typing import Any

import numpy as np

from napari_vessel.errors import InputError
from napari_vessel.io.common import atomic_replace
from napari_vessel.models.weights import file_sha256

__all__ = ["cache_dir", "export_key", "export_onnx", "example_shape", "EXPORT_VERSION"]

#: Bumped whenever the export procedure changes, so older cached files are not reused.
EXPORT_VERSION = 1
CACHE_ENV = "NAPARI_VESSEL_CACHE"


def cache_dir() -> Path:
    """The user cache folder of napari-vessel (not created here)."""
    env = os.environ.get(CACHE_ENV)
    if env:
        return Path(env).expanduser()
    xdg = os.environ.get("XDG_CACHE_HOME")
    return (Path(xdg).expanduser() if xdg else Path.home() / ".cache") / "napari-vessel"


def export_key(model: Any, dims: int) -> str:
    """SHA-256 of the architecture, its config, every weight and the software versions."""
    import torch

    digest = hashlib.sha256()
    config = getattr(model, "config", None)
    config_text = json.dumps(config.to_dict() if hasattr(config, "to_dict") else repr(config),
                             sort_keys=True, default=str)
    head = [type(model).__module__, type(model).__qualname__, config_text, str(dims),
            torch.__version__, str(EXPORT_VERSION)]
    digest.update("\n".join(head).encode())
    for name, tensor in model.state_dict().items():
        digest.update(name.encode())
        digest.update(str(tuple(tensor.shape)).encode() + str(tensor.dtype).encode())
        digest.update(tensor.detach().cpu().contiguous().numpy().tobytes())
    return digest.hexdigest()


def example_shape(multiple: tuple[int, int, int], dims: int) -> tuple[int, ...]:
    """The traced input shape: a few multiples of the network's input multiple, at least 8 x 32²
    (2D networks: one slice, (N, C, Y, X))."""
    mz, my, mx = (max(1, int(m)) for m in multiple)
    z = mz * max(1, -(-8 // mz))
    y, x = my * max(2, -(-32 // my)), mx * max(2, -(-32 // mx))
    return (1, 1, y, x) if dims == 2 else (1, 1, z, y, x)


class _SegOnly:
    """Wraps a network so its export has one output: the segmentation tensor."""

    def __new__(cls, model: Any):
        import torch

        from napari_vessel.devices import extract_seg

        class SegOnly(torch.nn.Module):
            def __init__(self) -> None:
                super().__init__()
                self.net = model

            def forward(self, x: torch.Tensor) -> torch.Tensor:
                return extract_seg(self.net(x))

        return SegOnly().eval()


def _export(model: Any, path: Path, shape: tuple[int, ...]) -> None:
    import warnings

    import torch

    spatial = {0: "n", **{i: f"s{i}" for i in range(2, len(shape))}}
    chatter = io.StringIO()  # the exporter prints whole graphs on failure; the error says enough
    with warnings.catch_warnings(), torch.inference_mode(False), torch.no_grad(), \
            contextlib.redirect_stdout(chatter), contextlib.redirect_stderr(chatter), \
            _silenced_fds():
        warnings.simplefilter("ignore")  # tracer and deprecation chatter; the export is verified
        torch.onnx.export(_SegOnly(model), (torch.zeros(shape),), str(path), input_names=["image"],
                          output_names=["seg"], dynamic_axes={"image": spatial, "seg": spatial},
                          opset_version=18, dynamo=False)


@contextlib.contextmanager
def _silenced_fds():
    """Send the process's own stdout and stderr (file descriptors 1 and 2, where PyTorch's C++
    side prints the graph of a failed export) to the null device for the duration."""
    import sys

    for stream in (sys.stdout, sys.stderr):
        with contextlib.suppress(Exception):
            stream.flush()
    try:
        saved = [os.dup(1), os.dup(2)]
    except OSError:  # no such descriptors (an embedded interpreter): nothing to silence
        yield
        return
    null = os.open(os.devnull, os.O_WRONLY)
    try:
        os.dup2(null, 1)
        os.dup2(null, 2)
        yield
    finally:
        os.dup2(saved[0], 1)
        os.dup2(saved[1], 2)
        for fd in (*saved, null):
            os.close(fd)


def export_onnx(model: Any, *, dims: int, multiple: tuple[int, int, int],
                cache: Path | None = None) -> tuple[Path, str]:
    """The cached ONNX file of ``model`` (exported now if missing or not intact).

    Parameters
    ----------
    model : torch.nn.Module
        The network on the CPU, in eval mode.
    dims : {2, 3}
        Whether it takes (N, 1, Y, X) slices or (N, 1, Z, Y, X) volumes.
    multiple : (int, int, int)
        The network's input multiple (the traced shape is a multiple of it).
    cache : Path, optional
        Cache folder (default :func:`cache_dir`).

    Returns
    -------
    path : Path
        The ONNX file.
    note : str
        "cached", "exported", or why the export went to a temporary folder.

    Raises
    ------
    InputError
        When the network cannot be exported (the caller falls back to PyTorch).
    """
    key = export_key(model, dims)
    folder = (cache or cache_dir()) / "onnx"
    path, meta = folder / f"{key[:32]}.onnx", folder / f"{key[:32]}.json"
    try:
        recorded = json.loads(meta.read_text(encoding="utf-8"))
        if (isinstance(recorded, dict) and recorded.get("key") == key
                and recorded.get("sha256") == file_sha256(path)):
            return path, "cached"
        note = "exported (the cached file did not match its hash)"
    except (OSError, ValueError):
        note = "exported"
    try:
        folder.mkdir(parents=True, exist_ok=True)
        with tempfile.TemporaryFile(dir=folder):  # can the cache be written? (removed at once)
            pass
    except OSError as err:
        folder = Path(tempfile.mkdtemp(prefix="napari-vessel-onnx-"))
        path, meta = folder / f"{key[:32]}.onnx", folder / f"{key[:32]}.json"
        note = f"exported to a temporary folder (the cache {cache or cache_dir()} is not " \
               f"writable: {err.strerror or err})"
    try:
        with atomic_replace(path) as tmp:
            _export(model, tmp, example_shape(multiple, dims))
        with atomic_replace(meta) as tmp:
            tmp.write_text(json.dumps({"key": key, "sha256": file_sha256(path),
                                       "dims": dims, "export_version": EXPORT_VERSION}))
    except OSError as err:
        raise InputError(f"could not write the ONNX export: {err}") from err
    except Exception as err:  # noqa: BLE001 - any exporter failure means: run with PyTorch
        raise InputError(f"the network could not be exported to ONNX "
                         f"({type(err).__name__}: {str(err).splitlines()[0][:200]})") from err
    return path, note


def random_input(multiple: tuple[int, int, int], dims: int, seed: int = 0) -> np.ndarray:
    """A check input of another size than the traced one (one more multiple on every axis)."""
    shape = example_shape(multiple, dims)
    bigger = [s + m for s, m in zip(shape[2:], (multiple if dims == 3 else multiple[1:]),
                                    strict=True)]
    return np.random.default_rng(seed).random((1, 1, *bigger), dtype=np.float32)
