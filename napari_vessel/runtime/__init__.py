"""How a network runs: PyTorch, or its ONNX export on ONNX Runtime or OpenVINO (CPU only).

PyTorch stays the runtime for training, CUDA and Apple MPS. On a CPU the exported graph runs
several times faster than PyTorch eager with the same probabilities (``benchmarks/
bench_inference.py``, ``docs/benchmarks-inference.md``), so ``runtime="auto"`` uses it there:
:data:`CPU_PREFERENCE` is the order measured best on a 2-core machine. A runtime that is not
installed, a network that cannot be exported, or an export that does not reproduce the network
falls back to PyTorch, and :class:`RuntimeInfo` says why (it goes into the run manifest).
A checked export is also indexed by the SHA-256 of the weights file, so that later processes run
it without importing PyTorch (:func:`cached_export`, :mod:`.warm`).
"""

from __future__ import annotations

import warnings
from dataclasses import dataclass
from typing import Any

import numpy as np

from napari_vessel.errors import Cancelled, InputError

__all__ = ["RUNTIMES", "CPU_PREFERENCE", "RuntimeInfo", "available", "runtime_forward",
           "cached_export", "cached_forward"]

#: What ``runtime=`` accepts.
RUNTIMES = ("auto", "torch", "onnx", "openvino")
#: Runtimes tried by ``"auto"`` on a CPU, fastest first, per architecture as measured with
#: ``benchmarks/bench_inference.py --runtimes torch onnx openvino`` (docs/benchmarks-inference.md);
#: an architecture not listed uses ``"default"``. OpenVINO is slower than PyTorch on UMIS's
#: morphological layers and no faster on VesselNN's, so those run on ONNX Runtime; both were
#: slower than PyTorch on DeepVess's small-patch 3D convolutions (an empty entry: PyTorch).
#: TV-Net runs its typical stack as one big batch, which OpenVINO cannot interrupt (its cancel
#: waits for the batch: 1.4 s measured) while ONNX Runtime stops within 0.1 s at 3 % less speed
#: (benchmarks/bench_cancel.py): TV-Net runs on ONNX Runtime. VC-Net (exported since session 9):
#: ONNX Runtime 1.48x, OpenVINO 1.43x PyTorch on a 25x512x512 stack.
CPU_PREFERENCE: dict[str, tuple[str, ...]] = {"default": ("openvino", "onnx"),
                                              "tvnet": ("onnx", "openvino"), "umis": ("onnx",),
                                              "vesselnn": ("onnx",), "deepvess": (),
                                              "vcnet": ("onnx", "openvino")}
#: Largest difference in probability between the export and the network that is accepted.
TOLERANCE = 1e-3
_MODULES = {"onnx": "onnxruntime", "openvino": "openvino"}


@dataclass(frozen=True)
class RuntimeInfo:
    """Which runtime ran a network, and why (written into the run manifest)."""

    name: str
    reason: str
    precision: str = "fp32"
    threads: int | None = None

    def to_dict(self) -> dict:
        """JSON-friendly form."""
        return {"name": self.name, "reason": self.reason, "precision": self.precision,
                "threads": self.threads}


def available(name: str) -> bool:
    """Whether the Python package of runtime ``name`` can be imported."""
    import importlib.util

    module = _MODULES.get(name)
    return module is None or importlib.util.find_spec(module) is not None


def _check(requested: Any) -> str:
    name = str(requested or "auto").lower()
    if name not in RUNTIMES:
        raise InputError(f"unknown runtime {requested!r}; choose one of {', '.join(RUNTIMES)}")
    return name


#: Seconds between two looks at the cancel token while a runtime computes a batch.
CANCEL_POLL = 0.05


def _session(name: str, path, threads: int):
    """``run(x, cancel=None)``: ``(B, 1, ...) float32 -> seg`` with runtime ``name`` for the ONNX
    file ``path``.

    With a ``cancel`` token, ONNX Runtime's run is told to terminate and stops within about
    :data:`CANCEL_POLL` seconds; OpenVINO's asynchronous request is cancelled too, but its CPU
    plugin finishes the batch first (1.4 s measured on TV-Net's single batch). Either way
    :class:`~napari_vessel.errors.Cancelled` is raised and no result is returned.
    """
    if name == "onnx":
        import onnxruntime as ort

        options = ort.SessionOptions()
        options.intra_op_num_threads = threads
        options.inter_op_num_threads = 1
        options.log_severity_level = 3
        # ONNX Runtime's memory pattern plans one block for a run's tensors: for one TV-Net
        # patch of 32x512x512 the process peaked at 1.57 GB with it and 0.90 GB without, at
        # the same speed and with the same output (docs/segmentation.md, out of core)
        options.enable_mem_pattern = False
        session = ort.InferenceSession(str(path), options, providers=["CPUExecutionProvider"])

        def run_ort(x, cancel=None):
            if cancel is None:
                return session.run(None, {"image": x})[0]
            run_options = ort.RunOptions()
            with _watch(cancel, lambda: setattr(run_options, "terminate", True)):
                try:
                    return session.run(None, {"image": x}, run_options)[0]
                except Exception:
                    cancel.check()  # terminated on purpose: the user's cancel, not an error
                    raise
        return run_ort
    import openvino as ov

    compiled = ov.Core().compile_model(str(path), "CPU", {"INFERENCE_NUM_THREADS": threads,
                                                          "INFERENCE_PRECISION_HINT": "f32"})
    request = compiled.create_infer_request()

    def run_ov(x, cancel=None):
        request.start_async({0: x})
        while not request.wait_for(int(CANCEL_POLL * 1000)):
            if cancel is not None and cancel.cancelled:
                request.cancel()
                cancel.check()
        return request.get_output_tensor(0).data.copy()
    return run_ov


class _watch:
    """Context manager: a thread that calls ``stop()`` once ``cancel`` is set."""

    def __init__(self, cancel, stop) -> None:
        import threading

        self._done = threading.Event()
        self._thread = threading.Thread(target=self._run, args=(cancel, stop), daemon=True)

    def _run(self, cancel, stop) -> None:
        while not self._done.wait(CANCEL_POLL):
            if cancel.cancelled:
                stop()
                return

    def __enter__(self):
        self._thread.start()
        return self

    def __exit__(self, *exc) -> None:
        self._done.set()
        self._thread.join()


def _sigmoid(x: np.ndarray) -> np.ndarray:
    return (0.5 * (1.0 + np.tanh(0.5 * x))).astype(np.float32)  # overflow-free logistic


def _numpy_forward(run, *, dims: int, logits: bool, tta: bool, cancel=None):
    flips = [()] + ([(-1,), (-2,), (-1, -2)] if tta else [])

    def forward(batch: np.ndarray) -> np.ndarray:
        x = np.ascontiguousarray(batch[:, None], dtype=np.float32)
        if dims == 2:
            x = np.ascontiguousarray(x[:, :, 0])
        total = None
        for axes in flips:
            xin = np.ascontiguousarray(np.flip(x, axes)) if axes else x
            y = np.asarray(run(xin, cancel), dtype=np.float32)
            if logits:
                y = _sigmoid(y)
            if axes:
                y = np.flip(y, axes)
            total = y if total is None else total + y
        y = total / len(flips)
        if dims == 2:
            y = y[:, :, None]
        return np.ascontiguousarray(y[:, 0])

    return forward


def _candidates(name: str, architecture: str | None) -> tuple[str, ...]:
    return (CPU_PREFERENCE.get(architecture or "", CPU_PREFERENCE["default"])
            if name == "auto" else (name,))


def cached_export(spec: Any, *, requested: Any, cache=None):
    """The verified cached export of a registered network for the CPU runtime ``requested``
    would use, found without PyTorch (:mod:`.warm`), or None.

    None (the caller then loads the network and uses :func:`runtime_forward`) when PyTorch is
    asked for or preferred for the architecture, no runtime is installed, or no export of these
    weights and this software was built and checked with the chosen runtime (at its installed
    version) yet, or its file is not intact.

    Returns
    -------
    dict or None
        ``runtime``, ``path`` (the ONNX file), ``diff`` (its largest difference from PyTorch when
        checked) and ``multiple`` (the network's input multiple).

    Raises
    ------
    InputError
        An unknown runtime name.
    """
    from napari_vessel.runtime import warm

    name = _check(requested)
    if name == "torch":
        return None
    chosen = next((c for c in _candidates(name, getattr(spec, "architecture", None))
                   if available(c)), None)
    if chosen is None:
        return None
    path, entry = warm.find_export(warm.index_fields(spec), cache)
    if path is None:
        return None
    checked = entry.get("verified", {}).get(chosen)
    multiple = entry.get("multiple")
    if (not isinstance(checked, dict) or checked.get("runtime") != warm.runtime_stamp(chosen)
            or not isinstance(checked.get("diff"), float) or not checked["diff"] <= TOLERANCE
            or not isinstance(multiple, list) or len(multiple) != 3):
        return None  # not checked with this runtime yet: the PyTorch path checks it
    return {"runtime": chosen, "path": path, "diff": checked["diff"],
            "multiple": tuple(int(m) for m in multiple)}


def cached_forward(found: dict, *, dims: int, logits: bool, tta: bool, threads: int,
                   cancel=None):
    """``(forward, info)`` running the export :func:`cached_export` found, without PyTorch; the
    probabilities are those of :func:`runtime_forward` with the same export. None when the
    runtime cannot load it (the caller then takes the PyTorch path)."""
    try:
        run = _session(found["runtime"], found["path"], threads)
    except Exception:  # noqa: BLE001 - the PyTorch path rebuilds the export or says what is wrong
        return None
    if cancel is not None:
        cancel.check()
    info = RuntimeInfo(found["runtime"], f"ONNX export cached; matched PyTorch within "
                       f"{found['diff']:.1g} when it was built (run without PyTorch)",
                       threads=threads)
    return _numpy_forward(run, dims=dims, logits=logits, tta=tta, cancel=cancel), info


def runtime_forward(model: Any, *, requested: Any, device: Any, dims: int, logits: bool,
                    tta: bool, multiple: tuple[int, int, int], threads: int, cache=None,
                    cancel=None, architecture: str | None = None, index: dict | None = None):
    """A ``batch (B, z, y, x) -> probabilities`` function on an exported runtime, or None.

    Parameters
    ----------
    model : torch.nn.Module
        The network, in eval mode.
    requested : {"auto", "torch", "onnx", "openvino"}
        The runtime asked for; ``"auto"`` tries :data:`CPU_PREFERENCE` on a CPU.
    device : torch.device
        Where PyTorch would run it; other runtimes are used on the CPU only.
    dims, logits, tta, multiple, threads
        How the network is called (2D or 3D, sigmoid or not, flips, input multiple, CPU threads).
    cache : Path, optional
        Export cache folder (default :func:`~napari_vessel.runtime.export.cache_dir`).
    cancel : CancelToken, optional
        Interrupts a batch while it computes (see :func:`_session`).
    architecture : str, optional
        The registry architecture, for its measured preference in :data:`CPU_PREFERENCE`.
    index : dict, optional
        :func:`.warm.index_fields` of the registered network ``model`` was loaded from: a
        checked export is then indexed for :func:`cached_forward` (runs without PyTorch).

    Returns
    -------
    forward : callable or None
        None means: run it with PyTorch.
    info : RuntimeInfo
        The runtime used and the reason (fallbacks are also warned about).

    Raises
    ------
    InputError
        An unknown runtime name, or ONNX/OpenVINO asked for on a GPU.
    """
    from napari_vessel.runtime.export import export_onnx, random_input

    name = _check(requested)
    if name == "torch":
        return None, RuntimeInfo("torch", "asked for", threads=threads)
    if device.type != "cpu":
        if name != "auto":
            raise InputError(f"the {name} runtime runs on the CPU; use --runtime torch (or auto) "
                             f"on {device.type}")
        return None, RuntimeInfo("torch", f"PyTorch on {device.type}")
    candidates = _candidates(name, architecture)
    if not candidates:
        return None, RuntimeInfo("torch", f"PyTorch measured fastest for {architecture} on a CPU",
                                 threads=threads)
    missing = [c for c in candidates if not available(c)]
    chosen = next((c for c in candidates if available(c)), None)
    if chosen is None:
        return _fallback(f"{' and '.join(_MODULES[c] for c in missing)} not installed "
                         "(pip install onnxruntime openvino)", name, threads)
    import torch

    model = model.cpu().eval()
    try:
        path, note = export_onnx(model, dims=dims, multiple=multiple, cache=cache)
        if cancel is not None:  # setting up takes a second or two: look between its steps
            cancel.check()
        run = _session(chosen, path, threads)
        if cancel is not None:
            cancel.check()
        probe = random_input(multiple, dims)
        with torch.inference_mode():
            expected = np.asarray(_torch_seg(model, probe), dtype=np.float32)
        got = np.asarray(run(probe), dtype=np.float32)
    except Cancelled:
        raise
    except InputError as err:
        return _fallback(str(err), name, threads)
    except Exception as err:  # noqa: BLE001 - a runtime failure means: run with PyTorch
        return _fallback(f"{chosen} could not run the export ({type(err).__name__}: "
                         f"{str(err).splitlines()[0][:200] if str(err) else ''})", name, threads)
    if logits:
        expected, got = _sigmoid(expected), _sigmoid(got)
    diff = float(np.max(np.abs(expected - got))) if got.shape == expected.shape else np.inf
    if not diff <= TOLERANCE:
        return _fallback(f"the {chosen} export differs from the network by {diff:.2g} in "
                         "probability", name, threads)
    info = RuntimeInfo(chosen, f"ONNX export {note}; matches PyTorch within {diff:.1g}",
                       threads=threads)
    if index is not None:
        from napari_vessel.runtime.warm import record_export

        try:
            record_export(index, path, multiple=multiple, runtime=chosen, diff=diff, cache=cache)
        except Exception:  # noqa: BLE001 - not indexed: the next run checks it with PyTorch again
            pass
    return _numpy_forward(run, dims=dims, logits=logits, tta=tta, cancel=cancel), info


def _torch_seg(model, probe: np.ndarray):
    import torch

    from napari_vessel.devices import extract_seg

    return extract_seg(model(torch.from_numpy(probe))).float().numpy()


def _fallback(reason: str, requested: str, threads: int):
    text = f"running with PyTorch: {reason}"
    warnings.warn(text, RuntimeWarning, stacklevel=3)
    return None, RuntimeInfo("torch", text, threads=threads)
