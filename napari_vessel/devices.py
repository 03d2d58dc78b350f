"""Torch devices, and running a network on batches of patches (flips, AMP, out-of-memory retry).

Used by :mod:`napari_vessel.inference.run`; nothing here knows about volumes or tiling.
"""

from __future__ import annotations

import importlib.util
import os
import re
import sys
from pathlib import Path
from typing import Any

import numpy as np

from napari_vessel.errors import InputError

__all__ = ["cpu_count", "pick_device", "run_device", "CPU", "make_forward", "with_oom_retry",
           "is_oom", "surely_cpu", "torch_version", "torch_version_file"]


def cpu_count() -> int:
    """CPU cores this process may use."""
    try:
        return max(1, len(os.sched_getaffinity(0)))
    except AttributeError:  # pragma: no cover - macOS, Windows
        return max(1, os.cpu_count() or 1)


class _Cpu:
    """The CPU as :func:`run_device` gives it while PyTorch is not loaded (``type`` and ``str`` as
    a ``torch.device``); :func:`pick_device` takes it."""

    type = "cpu"

    def __str__(self) -> str:
        return "cpu"

    def __repr__(self) -> str:
        return "device(type='cpu')"


#: The CPU without PyTorch (see :func:`run_device`).
CPU = _Cpu()


def run_device(preference: Any = None):
    """:func:`pick_device`, without importing PyTorch when the answer is surely the CPU.

    A segmentation on the CPU can run without PyTorch (a cached ONNX export,
    :mod:`napari_vessel.runtime.warm`); importing it would cost seconds. Returns :data:`CPU`
    (``type`` "cpu", printed as a torch device) when PyTorch is not loaded and the device is
    surely the CPU, else ``pick_device(preference)``.
    """
    if "torch" not in sys.modules and surely_cpu(preference):
        return CPU
    return pick_device(preference)


def pick_device(preference: Any = None):
    """The torch device to run on.

    Parameters
    ----------
    preference : str or torch.device, optional
        ``None`` or ``"auto"``: CUDA if available, then Apple MPS, then the CPU. ``"cpu"``,
        ``"cuda"``, ``"cuda:1"`` or ``"mps"`` ask for that device.

    Raises
    ------
    InputError
        When the requested device is not available in this torch installation.
    """
    import torch

    if isinstance(preference, torch.device):
        preference = str(preference)
    name = "auto" if preference is None else str(preference).strip().lower()
    mps_ok = bool(getattr(torch.backends, "mps", None) and torch.backends.mps.is_available())
    if name == "auto":
        if torch.cuda.is_available():
            return torch.device("cuda")
        return torch.device("mps") if mps_ok else torch.device("cpu")
    if name == "cpu":
        return torch.device("cpu")
    if name.startswith("cuda"):
        if not torch.cuda.is_available():
            raise InputError(f"device {preference!r} was asked for but this torch ({torch.__version__}) "
                             "sees no CUDA GPU; use --device cpu (or auto)")
        return torch.device(name)
    if name == "mps":
        if not mps_ok:
            raise InputError("device 'mps' was asked for but Apple MPS is not available here; use "
                             "--device cpu (or auto)")
        return torch.device("mps")
    raise InputError(f"unknown device {preference!r}; choose auto, cpu, cuda or mps")


def extract_seg(output: Any):
    """The segmentation tensor from a model's output (tensor, named tuple or dict)."""
    if hasattr(output, "seg"):
        return output.seg
    if isinstance(output, dict):
        return output["seg"]
    if isinstance(output, tuple | list):
        return output[0]
    return output


def is_oom(err: BaseException) -> bool:
    import torch

    if isinstance(err, torch.OutOfMemoryError):
        return True
    return isinstance(err, RuntimeError) and "out of memory" in str(err).lower()


def make_forward(model: Any, device: Any, *, dims: int, logits: bool, amp: bool, tta: bool):
    """``batch (B, z, y, x) ndarray -> probabilities ndarray`` for one network."""
    import torch

    flips = [()] + ([(-1,), (-2,), (-1, -2)] if tta else [])
    if amp:
        amp_dtype = torch.bfloat16 if device.type == "cpu" else torch.float16

    def run(batch: np.ndarray) -> np.ndarray:
        x = torch.from_numpy(batch).unsqueeze(1).to(device)
        if dims == 2:
            x = x[:, :, 0]
        total = None
        for axes in flips:
            xin = torch.flip(x, axes) if axes else x
            if amp:
                with torch.autocast(device_type=device.type, dtype=amp_dtype):
                    y = extract_seg(model(xin))
            else:
                y = extract_seg(model(xin))
            y = y.float()
            if logits:
                y = torch.sigmoid(y)
            if axes:
                y = torch.flip(y, axes)
            total = y if total is None else total + y
        y = total / len(flips)
        if dims == 2:
            y = y.unsqueeze(2)
        return y[:, 0].cpu().numpy()

    return run


def with_oom_retry(forward, device: Any, state: dict):
    """Split a batch in halves when the GPU runs out of memory; give up at one patch."""
    import torch

    def run(batch: np.ndarray) -> np.ndarray:
        size = state["batch_size"]
        if len(batch) > size:  # a smaller batch already proved necessary
            return np.concatenate([run(batch[i:i + size]) for i in range(0, len(batch), size)])
        try:
            return forward(batch)
        except (RuntimeError, torch.OutOfMemoryError) as err:
            if not is_oom(err):
                raise
            if device.type == "cuda":
                torch.cuda.empty_cache()
            if len(batch) == 1:
                raise InputError(
                    f"the {device.type} device ran out of memory even with one patch at a time; "
                    "lower the patch size (e.g. --patch-size 16 96 96) or use --device cpu"
                ) from err
            state["batch_size"] = max(1, len(batch) // 2)
            return run(batch)

    return run


def torch_version_file() -> Path | None:
    try:
        found = importlib.util.find_spec("torch")  # locates the package, does not import it
    except (ImportError, ValueError):
        return None
    if found is None or not found.submodule_search_locations:
        return None
    return Path(list(found.submodule_search_locations)[0]) / "version.py"


def torch_version() -> str | None:
    """The installed torch's version (``torch.__version__``) read from its version file, or None
    when torch is not installed; PyTorch is not imported."""
    if "torch" in sys.modules:
        return str(sys.modules["torch"].__version__)
    path = torch_version_file()
    try:
        text = path.read_text(encoding="utf-8") if path else ""
    except OSError:
        return None
    found = re.search(r"""^__version__\s*=\s*['"]([^'"]+)['"]""", text, re.MULTILINE)
    return found.group(1) if found else None


def surely_cpu(preference: Any) -> bool:
    """True when PyTorch would run on the CPU for device ``preference`` (``"cpu"``; ``"auto"``/None
    with a CPU-only torch, or on Linux without an NVIDIA, AMD or WSL GPU device); False when only
    PyTorch can tell (it is then asked)."""
    name = "auto" if preference is None else str(preference).strip().lower()
    if name == "cpu":
        return True
    if name != "auto" or sys.platform == "darwin":  # Apple MPS: ask PyTorch
        return False
    version = torch_version()
    if version is None or version.endswith("+cpu"):
        return True
    if sys.platform.startswith("linux"):
        nodes = ("/dev/nvidiactl", "/dev/nvidia0", "/proc/driver/nvidia", "/dev/dxg", "/dev/kfd")
        return not any(os.path.exists(node) for node in nodes)
    return False
