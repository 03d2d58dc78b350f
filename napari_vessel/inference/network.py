"""A network ready to run on batches of patches: the one road from a model to a forward function.

:func:`open_network` turns a registered network (or a bare PyTorch module) into a
:class:`Network`: a ``forward(batch) -> probabilities`` function, the input multiple the patches
are rounded to, and the :class:`~napari_vessel.runtime.RuntimeInfo` saying what runs it. On a
CPU a registered network's verified cached export runs without importing PyTorch
(:mod:`napari_vessel.runtime.warm`); otherwise the network is loaded (once per process,
:func:`resolve_model`) and handed to the fastest runtime (:func:`~napari_vessel.runtime.
runtime_forward`) or to PyTorch itself, with the GPU out-of-memory retry.
:func:`~napari_vessel.inference.run.predict` and the block tasks of a cluster
(:mod:`napari_vessel.inference.block_tasks`) both take this road.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import numpy as np

from napari_vessel.devices import make_forward, pick_device, run_device, with_oom_retry
from napari_vessel.runtime import RuntimeInfo, cached_export, cached_forward, runtime_forward

__all__ = ["Network", "open_network", "resolve_model", "load_count", "KEEP_LOADED"]

#: Networks loaded for inference, kept for the next call in this process (most recent last).
_LOADED: dict[tuple, tuple] = {}
#: How many networks :func:`resolve_model` kept at most (a second model does not evict the first).
KEEP_LOADED = 2
_LOAD_COUNT = [0]


def _load_key(spec: Any, device: Any) -> tuple:
    """A loaded network is reused only for the same weights file (path, size, mtime) and device."""
    stat = spec.weights.stat() if spec.weights is not None and spec.weights.exists() else None
    stamp = (str(spec.weights), stat.st_mtime_ns, stat.st_size) if stat else None
    return spec.name, repr(sorted(spec.config.items())), str(pick_device(device)), stamp


def load_count() -> int:
    """Networks loaded from disk by inference in this process so far (for batch workers)."""
    return _LOAD_COUNT[0]


def resolve_model(model_or_name: Any, device: Any) -> tuple[Any, Any]:
    """(model or None, spec or None) for a name, a spec or an nn.Module.

    Inference never changes a network, so a loaded one is kept (:data:`KEEP_LOADED`) and reused
    while its weights file is unchanged: a batch worker loads each model once. Fine-tuning loads
    its own copy through :func:`~napari_vessel.models.registry.load_model`.
    """
    from napari_vessel.models import registry

    if isinstance(model_or_name, str | registry.ModelSpec):
        spec = registry.get(model_or_name)
        if not spec.is_network:
            return None, spec
        key = _load_key(spec, device)
        if key not in _LOADED:
            _LOADED[key] = registry.load_model(spec, device)
            _LOAD_COUNT[0] += 1
            while len(_LOADED) > KEEP_LOADED:
                _LOADED.pop(next(iter(_LOADED)))
        else:
            _LOADED[key] = _LOADED.pop(key)  # most recently used last
        return _LOADED[key]
    return model_or_name, None


@dataclass(frozen=True)
class Network:
    """A network ready to run: ``forward(batch)`` maps ``(B, Z, Y, X)`` float32 patches to
    probabilities of the same shape.

    Attributes
    ----------
    forward : callable
    multiple : (int, int, int)
        Patch sizes are rounded to multiples of this (the network's down-sampling).
    dims : {2, 3}
        A 2D network runs slice by slice (its multiple is 1 along z).
    info : RuntimeInfo
        What runs it, and why (for the run manifest).
    device : torch.device or the CPU stand-in of :func:`~napari_vessel.devices.run_device`
    model : torch.nn.Module or None
        The module when PyTorch itself runs it (cancel hooks, threads), else None.
    spec : ModelSpec or None
    """

    forward: Callable[[np.ndarray], np.ndarray]
    multiple: tuple[int, int, int]
    dims: int
    info: RuntimeInfo
    device: Any
    model: Any
    spec: Any


def open_network(model: Any, spec: Any, *, device: Any = None, runtime: str = "auto",
                 tta: bool = False, threads: int, amp: bool | None = None,
                 state: dict | None = None, cancel: Any = None) -> Network:
    """Load ``model`` (a module, or None for the registered ``spec``) as a :class:`Network`.

    Parameters
    ----------
    model : torch.nn.Module or None
        A network in eval mode (``spec`` then only describes it), or None to load ``spec``'s.
    spec : ModelSpec or None
        The registered network (None: a bare module, run as given with PyTorch).
    device, runtime, tta, threads, amp, cancel
        As in :func:`~napari_vessel.inference.run.predict` (``amp`` default: on for CUDA).
    state : dict, optional
        ``{"batch_size": n}``, read when a batch runs: the GPU out-of-memory retry lowers it.

    Returns
    -------
    Network
    """
    dev = run_device(device)
    logits = spec is not None and spec.output == "logits"
    index = None
    if model is None and dev.type == "cpu" and str(runtime).lower() != "torch":
        from napari_vessel.runtime.warm import index_fields

        index = index_fields(spec)
        found = cached_export(spec, requested=runtime)
        warm = None if found is None else cached_forward(found, dims=spec.dims, logits=logits,
                                                         tta=tta, threads=threads, cancel=cancel)
        if warm is not None:  # the verified export, without PyTorch
            return Network(warm[0], tuple(int(m) for m in found["multiple"]), spec.dims, warm[1],
                           dev, None, spec)
    dev = pick_device(dev)
    if model is None:
        model, spec = resolve_model(spec, dev)
    model = model.to(dev).eval()
    # the network's own down-sampling wins over its spec's (a user card may change it)
    multiple = (getattr(model, "input_multiple", None) or getattr(model, "total_stride", None)
                or (spec.input_multiple_zyx if spec else (1, 1, 1)))
    dims = spec.dims if spec else 3
    if dims == 2:
        multiple = (1, *tuple(multiple)[-2:])
    multiple = tuple(int(m) for m in multiple)
    if spec is None and runtime == "auto":
        runtime = "torch"  # a bare module (no registry spec): as given, no export
    fast, info = runtime_forward(model, requested=runtime, device=dev, dims=dims, logits=logits,
                                 tta=tta, multiple=multiple, threads=threads, cancel=cancel,
                                 architecture=getattr(spec, "architecture", None), index=index)
    if fast is not None:
        return Network(fast, multiple, dims, info, dev, None, spec)
    amp = dev.type == "cuda" if amp is None else amp
    forward = with_oom_retry(make_forward(model, dev, dims=dims, logits=logits, amp=amp, tta=tta),
                             dev, state if state is not None else {"batch_size": 1 << 30})
    return Network(forward, multiple, dims, info, dev, model, spec)
