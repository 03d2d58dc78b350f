"""Run any registered model on a volume: device choice, checks, sliding window, and ``segment``.

:func:`predict` turns a volume into a float32 probability map with any network (sliding window,
see :mod:`napari_vessel.inference.sliding_window`) or classical method of the registry. :func:`segment` is
the one-call API behind the widget and ``napari-vessel segment``: the model's own preprocessing,
prediction, thresholding, and a run manifest that records everything needed to repeat the run.
"""

from __future__ import annotations

import json
import platform
import sys
import time
from dataclasses import replace
from typing import Any

import numpy as np

from napari_vessel.devices import CPU, cpu_count, pick_device, run_device
from napari_vessel.errors import InputError
from napari_vessel.inference.network import open_network
from napari_vessel.inference.options import WindowOptions, window_options
from napari_vessel.inference.sliding_window import importance_weights, plan_tiles, run_tiles
from napari_vessel.io.volume import (
    NOTHING_TO_SEGMENT,
    Volume,
    as_volume,
    check_spacing,
    check_volume_array,
    check_voxels,
    constant_error,
    is_lazy,
)
from napari_vessel.manifest import CpuInfo, InputInfo, ModelInfo, RunManifest, RunParameters, Timing, Versions
from napari_vessel.progress import CancelToken, Progress, check_between_layers, no_progress, scaled

__all__ = ["pick_device", "predict", "segment", "check_volume_array", "as_volume", "WindowOptions",
           "versions", "resolve_spec", "prepare_input", "run_manifest"]

DEFAULT_PATCH = (32, 128, 128)


def _takes_cancel(function: Any) -> bool:
    """Whether a classical ``predict`` accepts ``cancel=`` (a keyword or ``**kwargs``)."""
    import inspect

    try:
        parameters = inspect.signature(function).parameters.values()
    except (TypeError, ValueError):
        return False
    return any((p.name == "cancel" and p.kind is not p.POSITIONAL_ONLY) or p.kind is p.VAR_KEYWORD
               for p in parameters)


def _registry():
    from napari_vessel.models import registry

    return registry


def resolve_spec(model: Any):
    """The registered model called ``model`` (None or "": the default model), or ``model`` itself
    when it is a :class:`~napari_vessel.models.registry.ModelSpec`.

    In a process that has registered nothing yet, the spec an earlier run recorded for this name
    is used when nothing it depends on changed (:func:`napari_vessel.runtime.warm.resolve_name`):
    the model modules, which import PyTorch, are then not imported. Else the registry answers
    (and its answer is recorded for the next process).

    Raises
    ------
    InputError
        Unknown name (with the closest names).
    """
    from napari_vessel.runtime import warm

    registry = _registry()
    if isinstance(model, registry.ModelSpec):
        return model
    name = model or None
    if registry.untouched():
        spec = warm.resolve_name(name)
        if spec is not None:
            return spec
    spec = registry.get(name if name is not None else registry.default_model_name())
    try:
        warm.remember_name(name, spec)
    except Exception:  # noqa: BLE001 - a cache that cannot be written only costs the next start
        pass
    return spec


def predict(model_or_name: Any, volume_or_array: Any, *, spacing_zyx: Any = None,
            options: WindowOptions | None = None,
            patch_size: Any = None, overlap: float | None = None, blending: str | None = None,
            batch_size: int | None = None, device: Any = None, amp: bool | None = None,
            tta: bool | None = None, progress: Progress | None = None,
            cancel: CancelToken | None = None,
            out: Any = None, block_shape: Any = None, spec: Any = None,
            threads: int | None = None, runtime: str | None = None,
            run_info: list | None = None, spill_dir: Any = None) -> Any:
    """Probability map of vessels for a volume.

    Parameters
    ----------
    model_or_name : str, ModelSpec or torch.nn.Module
        A registered model (network or classical) or a network in eval mode. A module's output is
        taken as probabilities; a module may define ``input_multiple`` (z, y, x).
    volume_or_array : Volume or array-like, shape (Z, Y, X)
        NumPy, dask or Zarr; a lazy array is read block by block. Intensities as the model
        expects them (see :func:`segment` for the preprocessing).
    spacing_zyx : (float, float, float), optional
        Voxel size in µm (classical models use it); taken from a :class:`Volume` otherwise.
    options : WindowOptions, optional
        The sliding window's settings as one value (:class:`~napari_vessel.inference.options.
        WindowOptions`); the keywords below, when given, replace its settings.
    patch_size : (int, int, int), optional
        Patch size (z, y, x); default the model's. Rounded to the network's input multiple and
        shrunk along axes where the volume is smaller.
    overlap : float
        Fraction of a patch shared with its neighbours, in [0, 1).
    blending : {"gaussian", "constant"}
        Importance weights of the patch voxels (constant = the paper's averaging).
    batch_size : int, optional
        Patches per forward pass (default 4 on a CPU, 2 on a GPU). Halved on GPU out-of-memory.
    device : str or torch.device, optional
        ``"auto"``/None (CUDA, then MPS, then CPU), ``"cpu"``, ``"cuda"``, ``"mps"``.
    amp : bool, optional
        Mixed precision; default on for CUDA only.
    tta : bool
        Average over the four in-plane flips (test-time augmentation).
    progress : callable, optional
        ``progress(fraction, message)`` after every batch; fractions increase.
    cancel : CancelToken, optional
        Checked before every batch; raises :class:`~napari_vessel.errors.Cancelled`.
    out : array-like, optional
        NumPy or Zarr array (Z, Y, X) to write into (for volumes larger than memory).
    block_shape : (int, int, int), optional
        Output block size for lazy inputs (default four patches per axis); the result does not
        depend on it.
    spec : ModelSpec, optional
        Describes a network passed as a module (its ``dims``, ``output``, patch size and input
        multiple), e.g. a model being trained; ignored when ``model_or_name`` is a name or spec.
    threads : int, optional
        CPU threads for the network (default: every core this process may use).
    runtime : {"auto", "torch", "onnx", "openvino"}
        How the network runs (:mod:`napari_vessel.runtime`): ``"auto"`` uses the fastest
        exported runtime on a CPU for a registered network (a bare module without ``spec`` runs
        as given, with PyTorch) and PyTorch on a GPU; a fallback to PyTorch is warned about.
    run_info : list, optional
        Receives the :class:`~napari_vessel.runtime.RuntimeInfo` of the run (for manifests).
    spill_dir : str or Path, optional
        With ``out`` and ``block_shape``: blocks follow the patch grid and every patch is
        predicted once (:func:`~napari_vessel.inference.block_window.run_blocks`); the sums carried
        between blocks go to this folder.

    Returns
    -------
    ndarray of float32 (or ``out``), shape (Z, Y, X), values in [0, 1]

    Raises
    ------
    InputError
        Unknown model, 2D image, several channels, NaNs, a constant volume, bad options, GPU out
        of memory even with one patch.
    Cancelled
        When ``cancel`` was set; nothing is returned.
    """
    opts = window_options(options, patch_size=patch_size, overlap=overlap, blending=blending,
                          batch_size=batch_size, tta=tta, device=device, runtime=runtime,
                          threads=threads)
    progress = progress or no_progress
    if isinstance(volume_or_array, Volume):
        spacing = volume_or_array.spacing_zyx if spacing_zyx is None else spacing_zyx
        data = volume_or_array.data
    else:
        data, spacing = volume_or_array, spacing_zyx or (1.0, 1.0, 1.0)
    spacing = check_spacing(spacing, 3)
    data = check_volume_array(data)
    lazy = is_lazy(data)
    if not lazy:
        check_voxels(data)
    if out is not None and tuple(out.shape) != tuple(data.shape):
        raise InputError(f"out has shape {tuple(out.shape)}, the volume {tuple(data.shape)}")
    if cancel is not None:
        cancel.check()
    model = None
    if isinstance(model_or_name, str | _registry().ModelSpec):
        spec = resolve_spec(model_or_name)  # no PyTorch needed yet (see runtime.warm)
    else:
        model = model_or_name

    if spec is not None and not spec.is_network:  # classical: whole volume at once
        array = np.asarray(data, dtype=np.float32)
        if lazy:
            check_voxels(array)
        progress(0.0, f"{spec.name}: running")
        params = dict(spec.config)
        if cancel is not None and _takes_cancel(spec.predict):
            params["cancel"] = cancel  # checked between its steps (a filter pass, a slab)
        prob = np.asarray(spec.predict(array, spacing, **params), dtype=np.float32)
        if cancel is not None:
            cancel.check()
        progress(1.0, f"{spec.name}: done")
        if out is None:
            return prob
        out[...] = prob
        return out

    if spec is not None and spec.dims == 3 and spec.min_slices > 1:
        first = plan_tiles(data.shape, opts.patch_size or spec.patch_size_zyx, opts.overlap,
                           spec.input_multiple_zyx).patch[0]
        if first < spec.min_slices:  # before any export is built or loaded
            raise InputError(
                f"the stack has {data.shape[0]} slices, fewer than {spec.name}'s minimum of "
                f"{spec.min_slices} (its slab of sliding MIPs); use a stack of at least that "
                "many slices, or another model")
    n_threads = int(opts.threads or cpu_count())
    batch_size = opts.batch_size
    state: dict[str, int] = {}
    net = open_network(model, spec, device=opts.device, runtime=opts.runtime, tta=opts.tta,
                       threads=n_threads, amp=amp, state=state, cancel=cancel)
    dev, model, spec, forward = net.device, net.model, net.spec, net.forward
    patch = opts.patch_size or (spec.patch_size_zyx if spec else DEFAULT_PATCH)
    if net.dims == 2:
        patch = (1, *tuple(patch)[-2:])
    plan = plan_tiles(data.shape, patch, opts.overlap, net.multiple)
    weights = importance_weights(plan.patch, opts.blending)
    if batch_size is None:
        batch_size = 4 if dev.type == "cpu" else 2
    if block_shape is None and lazy:
        block_shape = tuple(4 * p for p in plan.patch)
    state["batch_size"] = int(batch_size)
    if run_info is not None:
        run_info.append(net.info)

    extremes = [np.inf, -np.inf]

    def check_region(region: np.ndarray) -> None:
        if lazy:
            check_voxels(region, constant=False)
            extremes[0] = min(extremes[0], float(region.min()))
            extremes[1] = max(extremes[1], float(region.max()))

    def tiles():
        if spill_dir is not None:
            from napari_vessel.inference.block_window import run_blocks

            return run_blocks(plan, data, forward, weights=weights, out=out,
                              block_shape=block_shape, scratch=spill_dir,
                              batch_size=state["batch_size"], check_region=check_region,
                              progress=progress, cancel=cancel)
        return run_tiles(plan, data, forward, weights=weights, batch_size=state["batch_size"],
                         out=out, block_shape=block_shape, check_region=check_region,
                         progress=progress, cancel=cancel)

    if model is None:  # ONNX Runtime or OpenVINO with their own threads: no PyTorch here
        result = tiles()
    else:
        import torch

        previous_threads = torch.get_num_threads()
        if dev.type == "cpu":
            torch.set_num_threads(n_threads)
        try:
            # PyTorch's forward pass of a whole stack takes seconds: each layer checks cancel
            with torch.inference_mode(), check_between_layers(model, cancel):
                result = tiles()
        finally:
            torch.set_num_threads(previous_threads)
    if cancel is not None:  # a cancel during the last batch still cancels: no result
        cancel.check()
    if lazy and extremes[0] == extremes[1]:
        raise constant_error(extremes[0])
    return result


def _pipeline(pre: Any):
    from napari_vessel.preprocess import Pipeline

    return Pipeline.from_json(pre if isinstance(pre, str) else json.dumps(pre))


def _as_json_obj(value: Any) -> Any:
    return json.loads(value) if isinstance(value, str) else value


def _minmax(data: Any) -> Any:
    """Stretch intensities to [0, 1] (paper 000, section 5.1); works lazily on dask arrays."""
    lo, hi = data.min(), data.max()
    if hasattr(lo, "compute"):
        lo, hi = lo.compute(), hi.compute()
    lo, hi = float(lo), float(hi)
    if hi == lo:
        raise constant_error(lo)
    return (data.astype(np.float32) - np.float32(lo)) / np.float32(hi - lo)


def cpu_features() -> dict:
    """The CPU's name and the vector instruction sets the runtimes can use (Linux; else empty)."""
    flags: set[str] = set()
    name = platform.processor() or ""
    try:
        with open("/proc/cpuinfo", encoding="utf-8") as fh:
            for line in fh:
                key, _, value = line.partition(":")
                if key.strip() == "flags" and not flags:
                    flags = set(value.split())
                elif key.strip() == "model name" and not name:
                    name = value.strip()
    except OSError:
        pass
    wanted = ("avx2", "avx512f", "avx512_bf16", "amx_bf16", "amx_int8", "avx512_vnni")
    return {"name": name, "instructions": [f for f in wanted if f in flags]}


def _version(module: str, distribution: str) -> str | None:
    """A package's version without importing it (a segment does not need every package)."""
    if module in sys.modules:
        return getattr(sys.modules[module], "__version__", None)
    from importlib import metadata

    try:
        return metadata.version(distribution)
    except metadata.PackageNotFoundError:
        return None


def versions() -> dict:
    """Versions of the software that made a result (read without importing the packages)."""
    from napari_vessel import __version__
    from napari_vessel.devices import torch_version

    return {"napari_vessel": __version__, "python": platform.python_version(),
            "torch": torch_version(), "numpy": np.__version__,
            "scipy": _version("scipy", "scipy"),
            "scikit_image": _version("skimage", "scikit-image"), "platform": platform.platform()}


def segment(volume: Any, model_name: str | None = None, *, threshold: float | None = None,
            preprocess: bool = True, min_size: int = 0, spacing_zyx: Any = None,
            options: WindowOptions | None = None, postprocessing: Any = None,
            overlap: float | None = None, patch_size: Any = None, blending: str | None = None,
            batch_size: int | None = None, device: Any = None, tta: bool | None = None,
            progress: Progress | None = None, cancel: CancelToken | None = None,
            runtime: str | None = None, threads: int | None = None
            ) -> tuple[np.ndarray, np.ndarray, RunManifest]:
    """Segment vessels in a volume with a registered model.

    Applies the model's expected preprocessing (its card's pipeline; else a min-max stretch to
    [0, 1] for networks), :func:`predict`, then the model's post-processing (a threshold, or
    hysteresis and clean-up) to the probability map.

    Parameters
    ----------
    volume : Volume or array-like, shape (Z, Y, X)
    model_name : str or ModelSpec, optional
        A registered model; default :func:`~napari_vessel.models.registry.default_model_name`
        (see :func:`resolve_spec`).
    threshold : float, optional
        Probability above which a voxel is vessel (a plain threshold). Default: the model's
        post-processing (see :meth:`~napari_vessel.postprocess.labels.Postprocessing.for_model`):
        paper 003's hysteresis and clean-up for the cascades, else the ``threshold`` of the
        model card (chosen on the training data), else 0.5. The map is returned, so it can be
        re-thresholded.
    preprocess : bool
        Apply the model's preprocessing first (turn off for already preprocessed input).
    min_size : int
        Remove connected vessel pieces smaller than this many voxels (0: the post-processing's
        own value, none for a plain threshold).
    options : WindowOptions, optional
        The sliding window's settings (see :func:`predict`); the keywords below, when given,
        replace its settings.
    postprocessing : Postprocessing, optional
        The post-processing to use instead of the one ``threshold`` and ``min_size`` choose
        (which must then be left unset).
    spacing_zyx, overlap, patch_size, blending, batch_size, device, tta, progress, cancel, runtime
        As in :func:`predict`.
    threads : int, optional
        CPU threads for the network, as in :func:`predict` (default: every core this process may
        use).

    Returns
    -------
    prob : ndarray of float32, shape (Z, Y, X)
    labels : ndarray of uint8, shape (Z, Y, X)
        1 for vessel, 0 for background.
    manifest : RunManifest
        Model, weights hash, preprocessing, parameters, device, versions and timings
        (:class:`~napari_vessel.manifest.RunManifest`; ``manifest.to_dict()`` is its JSON form).
    """

    opts = window_options(options, patch_size=patch_size, overlap=overlap, blending=blending,
                          batch_size=batch_size, tta=tta, device=device, runtime=runtime,
                          threads=threads)
    volume = as_volume(volume, spacing_zyx)
    data = check_volume_array(volume.data)
    spec = resolve_spec(model_name)
    recipe = _recipe(spec, threshold, min_size, postprocessing)
    timing: dict[str, float] = {}
    started = time.perf_counter()
    data, pre_json = prepare_input(data, spec, volume.spacing_zyx, preprocess=preprocess,
                                   progress=scaled(progress, 0.0, 0.1, "preprocessing"),
                                   cancel=cancel)
    timing["preprocess_s"] = time.perf_counter() - started
    dev = run_device(opts.device) if spec.is_network else CPU
    started = time.perf_counter()
    run_info: list = []
    prob = predict(spec, Volume(data, volume.spacing_zyx), options=replace(opts, device=dev),
                   progress=scaled(progress, 0.1, 0.95), cancel=cancel, run_info=run_info)
    timing["predict_s"] = time.perf_counter() - started
    started = time.perf_counter()
    recipe = recipe.resolve(prob)  # a card's level rule reads this map's vessel fraction
    labels = np.asarray(recipe.apply(prob), dtype=np.uint8)
    timing["postprocess_s"] = time.perf_counter() - started
    if progress is not None:
        progress(1.0, "done")
    manifest = run_manifest(spec, volume, pre_json, recipe, dev, run_info, timing,
                            {**opts.manifest_parameters(spec), "preprocess": bool(preprocess)})
    return prob, labels, manifest


def _recipe(spec: Any, threshold: float | None, min_size: int, postprocessing: Any):
    """The post-processing of a run: ``postprocessing`` as given, else the model's own."""
    from napari_vessel.postprocess.labels import Postprocessing

    if postprocessing is None:
        return Postprocessing.for_model(spec, threshold, min_size)
    if not isinstance(postprocessing, Postprocessing):
        raise InputError(f"postprocessing must be a Postprocessing, not "
                         f"{type(postprocessing).__name__}")
    if threshold is not None or min_size:
        raise InputError("give either postprocessing or threshold/min_size, not both; "
                         "e.g. postprocessing.rethreshold(0.4)")
    return postprocessing


def prepare_input(data: Any, spec: Any, spacing_zyx: Any, *, preprocess: bool = True,
                  progress: Progress | None = None, cancel: CancelToken | None = None,
                  what: str = "image", purpose: str = NOTHING_TO_SEGMENT) -> tuple[Any, Any]:
    """The model's expected preprocessing of ``data`` (lazy for a dask array), as :func:`segment`
    applies it: the card's pipeline, else a min-max stretch to [0, 1] for networks.

    An in-memory ``data`` is checked first (:func:`~napari_vessel.io.volume.check_voxels`, with
    ``what`` and ``purpose`` in its messages).

    Returns
    -------
    data : ndarray or dask array, shape (Z, Y, X)
    preprocessing : dict or None
        What was done, for the run manifest.
    """
    pre_json: Any = None
    if not is_lazy(data):  # judged on the raw values: preprocessing would make any stack 0
        check_voxels(data, what, purpose=purpose)
    if preprocess and spec.preprocessing:
        pipeline = _pipeline(spec.preprocessing)
        data = pipeline.apply(data, spacing_zyx=spacing_zyx, progress=progress, cancel=cancel)
        pre_json = _as_json_obj(pipeline.to_json())
    elif preprocess and spec.is_network:
        data = _minmax(data)
        pre_json = {"steps": [{"name": "minmax", "note": "stretch to [0, 1] (no card pipeline)"}]}
    return data, pre_json


def run_manifest(spec: Any, volume: Volume, pre_json: Any, recipe: Any, dev: Any,
                 run_info: list, timing: dict, parameters: dict) -> RunManifest:
    """The run manifest of a segmentation (model, input, preprocessing, parameters, versions).

    Parameters
    ----------
    spec : ModelSpec
        The model.
    volume : Volume
        The input as given (before preprocessing).
    pre_json : dict or None
        The preprocessing done (:func:`prepare_input`).
    recipe : Postprocessing
        The post-processing (:meth:`~napari_vessel.postprocess.labels.Postprocessing.for_model`).
    dev : torch.device or Device
        Where the model ran.
    run_info : list
        Empty, or the :class:`~napari_vessel.runtime.RuntimeInfo` :func:`predict` reported.
    timing : dict of str to float
        Seconds by stage (``preprocess_s``, ``predict_s``, ``postprocess_s``, ``pyramid_s``).
    parameters : dict
        The sliding window's settings and ``preprocess`` (see
        :class:`~napari_vessel.manifest.RunParameters`).

    Returns
    -------
    RunManifest
    """
    card = spec.card
    return RunManifest(
        model=ModelInfo(name=spec.name, kind=spec.kind, architecture=spec.architecture,
                        source=spec.source, weights_sha256=card.sha256 if card else None,
                        parent=card.parent if card else None,
                        config=dict(spec.config) if spec.is_network else None),
        input=InputInfo(source=None if volume.source is None else str(volume.source),
                        shape=tuple(volume.shape), dtype=str(volume.dtype),
                        spacing_zyx=tuple(volume.spacing_zyx),
                        spacing_known=bool(volume.spacing_known)),
        preprocessing=pre_json,
        parameters=RunParameters(threshold=recipe.threshold, min_size=recipe.min_size,
                                 postprocessing=recipe.to_dict(), **parameters),
        device=str(dev),
        runtime=run_info[0] if run_info else None,
        cpu=CpuInfo(**cpu_features()) if dev.type == "cpu" else None,
        versions=Versions(**versions()),
        timing=Timing(**{k: round(v, 3) for k, v in timing.items()}),
        created=time.strftime("%Y-%m-%dT%H:%M:%S%z"),
    )
